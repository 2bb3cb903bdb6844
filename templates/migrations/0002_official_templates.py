"""Ship the official templates (templates/official/*.json)."""

from django.db import migrations

from templates.official import official_templates_load, official_templates_unload


def load(apps, schema_editor):
    official_templates_load(template_model=apps.get_model("workflow_templates", "WorkflowTemplate"))


def unload(apps, schema_editor):
    official_templates_unload(template_model=apps.get_model("workflow_templates", "WorkflowTemplate"))


class Migration(migrations.Migration):
    dependencies = [
        ("workflow_templates", "0001_initial"),
    ]

    operations = [
        migrations.RunPython(load, unload),
    ]
