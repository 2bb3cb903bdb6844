from rest_framework import serializers

from config.api.serializers import StrictSerializer

from .models import MAX_RATE_LIMIT_PER_MINUTE, MAX_WAIT_TIMEOUT_S, ResponseContentType, Trigger
from .services import MAX_SECRET_LENGTH, MAX_TEMPLATE_LENGTH


class TriggerSerializer(serializers.ModelSerializer):
    """A trigger as the API shows it: never its token (only its first characters) nor its secret."""

    workflow = serializers.UUIDField(source="workflow_id", read_only=True)
    has_secret = serializers.BooleanField(read_only=True, help_text="Whether deliveries must be signed.")
    # Text rather than an enum: other schemas' "kind" enums would collide with it.
    kind = serializers.CharField(read_only=True, help_text='The trigger\'s kind: "webhook".')

    class Meta:
        model = Trigger
        fields = [
            "id",
            "workflow",
            "kind",
            "name",
            "enabled",
            "token_prefix",
            "has_secret",
            "version",
            "input_mapping",
            "wait",
            "wait_timeout_s",
            "response_template",
            "response_content_type",
            "rate_limit_per_minute",
            "created_at",
            "updated_at",
            "rotated_at",
        ]
        read_only_fields = fields


class TriggerWithTokenSerializer(TriggerSerializer):
    """A trigger just created or rotated: its token and URL, shown this once."""

    token = serializers.CharField(read_only=True, help_text="Shown once: only its hash is kept.")
    url = serializers.URLField(read_only=True, help_text="POST here to start a run; no Weft account needed.")

    class Meta(TriggerSerializer.Meta):
        fields = [*TriggerSerializer.Meta.fields, "token", "url"]
        read_only_fields = fields


class TriggerWriteSerializer(StrictSerializer):
    name = serializers.CharField(max_length=100, allow_blank=True, required=False)
    enabled = serializers.BooleanField(required=False)
    secret = serializers.CharField(
        write_only=True,
        required=False,
        allow_blank=True,
        allow_null=True,
        trim_whitespace=False,
        max_length=MAX_SECRET_LENGTH,
        style={"input_type": "password"},
        help_text="Write-only HMAC secret (16 to 256 characters): deliveries must then be signed. "
        "Empty or null: unsigned.",
    )
    version = serializers.CharField(
        max_length=128,
        required=False,
        help_text='"draft" (default), "latest" (the latest version released to the API), or a semver range: "^1.2".',
    )
    input_mapping = serializers.DictField(
        child=serializers.CharField(max_length=200),
        required=False,
        help_text='Start input -> source: {"city": "body.city", "source": "query.src", "sig": "headers.x-thing"}. '
        "Empty: the JSON body is the inputs.",
    )
    wait = serializers.BooleanField(
        required=False, help_text="Answer 200 with the finished run's outputs (202 past the timeout); else 202 at once."
    )
    wait_timeout_s = serializers.IntegerField(
        min_value=1,
        max_value=MAX_WAIT_TIMEOUT_S,
        required=False,
        help_text="Seconds a waiting call holds (at most the server's wait bound, 30 s by default); then 202.",
    )
    response_template = serializers.CharField(
        max_length=MAX_TEMPLATE_LENGTH,
        allow_blank=True,
        required=False,
        trim_whitespace=False,
        help_text="Sandboxed Jinja over `outputs` and `run` ({id, status}): the body of a waited answer of a "
        "run that succeeded.",
    )
    response_content_type = serializers.ChoiceField(choices=ResponseContentType.choices, required=False)
    rate_limit_per_minute = serializers.IntegerField(min_value=1, max_value=MAX_RATE_LIMIT_PER_MINUTE, required=False)
