"""Schedules fire from their own rows: ``effective_from`` and ``next_fire_at`` replace each schedule's beat entry.

Beat now runs one entry for all schedules (``workflows.schedules_fire_due``); the per-schedule
``PeriodicTask`` rows are deleted. What each entry held is kept: its ``start_time`` becomes the
schedule's ``effective_from``, and ``next_fire_at`` is the first tick after now (a tick missed
while migrating is not replayed, as after any downtime). The link to the entry goes in 0004: on
PostgreSQL a table whose rows were just updated cannot be altered in the same transaction.
"""

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import django.utils.timezone
from croniter import croniter
from django.db import migrations, models

BEAT_TASK = "workflows.schedule_fire"


def schedules_keep_their_effect(apps, schema_editor):
    ScheduledWorkflow = apps.get_model("workflows", "ScheduledWorkflow")
    now = datetime.now(UTC)
    for schedule in ScheduledWorkflow.objects.select_related("periodic_task"):
        task = schedule.periodic_task
        schedule.effective_from = (task.start_time if task is not None else None) or schedule.created_at
        local = max(now, schedule.effective_from).astimezone(ZoneInfo(schedule.timezone))
        # day_or=False: the day-of-month and day-of-week semantics of workflows.schedules.selectors.cron_iter.
        tick = croniter(schedule.cron_expression, local, day_or=False).get_next(datetime)
        schedule.next_fire_at = tick.astimezone(UTC)
        schedule.save(update_fields=["effective_from", "next_fire_at"])


def beat_entries_delete(apps, schema_editor):
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(task=BEAT_TASK).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("django_celery_beat", "0019_alter_periodictasks_options"),
        ("workflows", "0002_run_uid"),
    ]

    operations = [
        migrations.AddField(
            model_name="scheduledworkflow",
            name="effective_from",
            field=models.DateTimeField(default=django.utils.timezone.now),
        ),
        migrations.AddField(
            model_name="scheduledworkflow",
            name="next_fire_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.RunPython(schedules_keep_their_effect, migrations.RunPython.noop),
        migrations.RunPython(beat_entries_delete, migrations.RunPython.noop),
    ]
