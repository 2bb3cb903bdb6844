"""Providers get a ``kind`` (the wire protocol they speak); existing rows are OpenAI-compatible."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("agents", "0003_tool_secret_headers"),
    ]

    operations = [
        migrations.AddField(
            model_name="llmprovider",
            name="kind",
            field=models.CharField(
                choices=[
                    ("openai", "OpenAI-compatible (/chat/completions)"),
                    ("anthropic", "Anthropic (Messages API)"),
                    ("gemini", "Google Gemini API"),
                ],
                default="openai",
                max_length=20,
            ),
        ),
        migrations.AddConstraint(
            model_name="llmprovider",
            constraint=models.CheckConstraint(
                condition=models.Q(("kind__in", ["openai", "anthropic", "gemini"])), name="llm_providers_kind_valid"
            ),
        ),
    ]
