"""runs kept two indexes twice: the foreign keys' own (workflow_id, agent_id) beside idx_runs_workflow_created
and idx_runs_agent_id. Each is written on every run's insert and status change; the named ones stay."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("agents", "0004_llmprovider_kind"),
        ("workflows", "0011_node_cache"),
    ]

    operations = [
        migrations.AlterField(
            model_name="run",
            name="agent",
            field=models.ForeignKey(
                blank=True,
                db_index=False,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="runs",
                to="agents.agent",
            ),
        ),
        migrations.AlterField(
            model_name="run",
            name="workflow",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="runs",
                to="workflows.workflow",
            ),
        ),
    ]
