"""Tokens made before tokens expired (no expiry) end like new ones: a TTL from now."""

from django.db import migrations
from django.utils import timezone


def tokens_expire(apps, schema_editor):
    from knox.settings import knox_settings

    if knox_settings.TOKEN_TTL is None:
        return
    AuthToken = apps.get_model("knox", "AuthToken")
    AuthToken.objects.filter(expiry__isnull=True).update(expiry=timezone.now() + knox_settings.TOKEN_TTL)


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0002_quotas"),
        ("knox", "0009_extend_authtoken_field"),
    ]

    operations = [migrations.RunPython(tokens_expire, migrations.RunPython.noop)]
