from urllib.parse import urlsplit

from django.core.validators import URLValidator
from rest_framework import serializers

from config.api.serializers import StrictModelSerializer, StrictSerializer
from workflows.models import RunStatus
from workflows.selectors import workflows_for_user

from .models import Delivery, DeliveryChannel, DeliveryStatus, FailurePolicy

MAX_EMAILS = 20
_http_url = URLValidator(schemes=["http", "https"], message="Enter an http or https URL.")


def url_masked(url: str) -> str:
    """A webhook URL as those who may not edit the policy see it: its path and query often carry a token."""
    if not url:
        return url
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}/…"


class FailurePolicySerializer(StrictModelSerializer):
    """A workflow's failure policy as the API shows it: the webhook secret never, only whether one is set."""

    webhook_secret_set = serializers.SerializerMethodField()
    updated_at = serializers.DateTimeField(read_only=True, allow_null=True, help_text="Null: no policy set yet.")

    class Meta:
        model = FailurePolicy
        fields = [
            "workflow",
            "enabled",
            "error_workflow",
            "on_failed",
            "on_succeeded",
            "on_cancelled",
            "webhook_url",
            "webhook_secret_set",
            "emails",
            "updated_at",
        ]
        read_only_fields = fields

    def get_webhook_secret_set(self, policy: FailurePolicy) -> bool:
        return bool(policy.webhook_secret)

    def to_representation(self, policy):
        data = super().to_representation(policy)
        if not self.context.get("can_edit"):
            data["webhook_url"] = url_masked(data["webhook_url"])
        return data


class FailurePolicySetSerializer(StrictSerializer):
    """The whole policy: a field left out takes its default (``webhook_secret`` left out keeps the stored one)."""

    enabled = serializers.BooleanField(default=True)
    error_workflow = serializers.UUIDField(
        allow_null=True,
        default=None,
        help_text="A workflow to start (its draft) when a run fails: its start node declares the input "
        "`failure` (type object), which holds the failed run's details.",
    )
    on_failed = serializers.BooleanField(default=True)
    on_succeeded = serializers.BooleanField(default=False)
    on_cancelled = serializers.BooleanField(default=False)
    webhook_url = serializers.CharField(max_length=2048, allow_blank=True, default="", validators=[_http_url])
    webhook_secret = serializers.CharField(
        min_length=16,
        max_length=256,
        required=False,
        write_only=True,
        trim_whitespace=False,
        help_text="Signs each webhook body: `X-Weft-Signature: sha256=<hex HMAC-SHA256 of the body>`. Write-only.",
    )
    emails = serializers.ListField(
        child=serializers.EmailField(max_length=254), max_length=MAX_EMAILS, default=list, allow_empty=True
    )

    def validate_error_workflow(self, value):
        if value is None:
            return None
        workflow = workflows_for_user(user=self.context["request"].user).filter(pk=value).first()
        if workflow is None:
            raise serializers.ValidationError("No such workflow.")
        return workflow

    def validate_emails(self, value: list[str]) -> list[str]:
        return list(dict.fromkeys(address.strip().lower() for address in value))


class DeliverySerializer(StrictModelSerializer):
    """One notification of a run's end; a webhook's URL is masked for those who may not edit the policy."""

    class Meta:
        model = Delivery
        fields = [
            "id",
            "run",
            "event",
            "channel",
            "target",
            "status",
            "attempts",
            "response_status",
            "last_error",
            "next_attempt_at",
            "created_at",
            "delivered_at",
        ]
        read_only_fields = fields

    def to_representation(self, delivery):
        data = super().to_representation(delivery)
        if delivery.channel == DeliveryChannel.WEBHOOK and not self.context.get("can_edit"):
            data["target"] = url_masked(data["target"])
        return data


class DeliveryFilterSerializer(StrictSerializer):
    run = serializers.UUIDField(required=False)
    status = serializers.ChoiceField(choices=DeliveryStatus.choices, required=False)
    event = serializers.ChoiceField(choices=RunStatus.choices, required=False)
    page = serializers.IntegerField(required=False, min_value=1)
    page_size = serializers.IntegerField(required=False, min_value=1)
