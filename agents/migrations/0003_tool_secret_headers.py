"""Tool headers move out of ``config`` into ``secret_headers``, encrypted and write-only.

All of them, not only ``Authorization`` and its kin: a header's name does not tell whether it
carries a credential (``api-key``, ``X-Auth-Token``, ``Private-Token``...), and ``config`` is
what other users may be shown. The owner still sees the names.
"""

import django_cryptography.fields
from django.db import migrations, models


def headers_to_secret(apps, schema_editor):
    Tool = apps.get_model("agents", "Tool")
    for tool in Tool.objects.all().iterator():
        config = dict(tool.config or {})
        headers = config.pop("headers", None)
        if headers is None:
            continue
        tool.secret_headers = {str(name): str(value) for name, value in (headers or {}).items()}
        tool.config = config
        tool.save(update_fields=["secret_headers", "config"])


def headers_back_to_config(apps, schema_editor):
    Tool = apps.get_model("agents", "Tool")
    for tool in Tool.objects.all().iterator():
        if tool.secret_headers:
            tool.config = {**(tool.config or {}), "headers": tool.secret_headers}
            tool.save(update_fields=["config"])


class Migration(migrations.Migration):
    dependencies = [
        ("agents", "0002_initial"),
    ]

    operations = [
        migrations.AddField(
            model_name="tool",
            name="secret_headers",
            field=django_cryptography.fields.encrypt(models.JSONField(blank=True, default=dict)),
        ),
        migrations.RunPython(headers_to_secret, headers_back_to_config),
    ]
