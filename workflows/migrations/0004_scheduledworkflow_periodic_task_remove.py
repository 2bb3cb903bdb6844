"""The per-schedule beat entries are gone (0003): drop the link, and index what the firing turn reads."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("workflows", "0003_schedules_fire_from_the_database")]

    operations = [
        migrations.RemoveField(model_name="scheduledworkflow", name="periodic_task"),
        migrations.AddIndex(
            model_name="scheduledworkflow",
            index=models.Index(fields=["status", "next_fire_at"], name="idx_scheduled_status_next_fire"),
        ),
    ]
