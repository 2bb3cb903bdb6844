from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("workflows", "0010_run_events_partitioned"),
    ]

    operations = [
        migrations.AddField(
            model_name="node",
            name="cache",
            field=models.JSONField(blank=True, null=True),
        ),
    ]
