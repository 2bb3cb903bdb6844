"""The model of a published version takes the name the API gives it; its table stays ``flow``.

Audit rows name their target by the model's label: those written as ``workflows.flow`` are
renamed too, so that a version's audit trail reads as one.
"""

from django.conf import settings
from django.db import migrations

OLD_LABEL = "workflows.flow"
NEW_LABEL = "workflows.workflowversion"


def audit_targets_rename(apps, schema_editor, *, old=OLD_LABEL, new=NEW_LABEL):
    apps.get_model("history", "AuditLog").objects.filter(target_type=old).update(target_type=new)


def audit_targets_rename_back(apps, schema_editor):
    audit_targets_rename(apps, schema_editor, old=NEW_LABEL, new=OLD_LABEL)


class Migration(migrations.Migration):
    dependencies = [
        ("history", "0004_usage_metrics_run_unique"),
        ("licensing", "0002_initial"),
        ("workflows", "0004_scheduledworkflow_periodic_task_remove"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.RenameModel(old_name="Flow", new_name="WorkflowVersion"),
        migrations.RunPython(audit_targets_rename, audit_targets_rename_back),
    ]
