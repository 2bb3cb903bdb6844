from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("workflows", "0008_workflow_retries_enabled"),
    ]

    operations = [
        migrations.AddField(
            model_name="run",
            name="stored_outputs",
            field=models.BooleanField(default=False),
        ),
    ]
