"""Triggers that start runs of a workflow from outside Weft: webhooks, called at an unguessable URL.

A webhook's token is shown once (at creation and at each rotation); only its SHA-256 is stored,
so a copy of the database does not let anyone call the hooks. The optional HMAC secret is
encrypted at rest and never shown again.
"""

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q
from django_cryptography.fields import encrypt

from workflows.models import Run, Workflow

#: The most a delivery may wait for its run, whatever the trigger asks (seconds).
MAX_WAIT_TIMEOUT_S = 300
MAX_RATE_LIMIT_PER_MINUTE = 100_000


class TriggerKind(models.TextChoices):
    WEBHOOK = "webhook", "Webhook"


class ResponseContentType(models.TextChoices):
    """What a response template renders. Never HTML: the answer is served from Weft's own origin."""

    TEXT = "text/plain", "Text"
    JSON = "application/json", "JSON"


class Trigger(models.Model):
    """A way in to a workflow's runs: a webhook URL (``/api/v1/hooks/<token>/``) and how it runs the workflow."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="triggers")
    kind = models.CharField(max_length=16, choices=TriggerKind.choices, default=TriggerKind.WEBHOOK)
    name = models.CharField(max_length=100, blank=True, default="")
    enabled = models.BooleanField(default=True)
    # SHA-256 (hex) of the token in the URL; the token itself is never stored.
    token_hash = models.CharField(max_length=64, unique=True)
    # The token's first characters, so that people can tell which token a URL holds.
    token_prefix = models.CharField(max_length=16)
    # Signs deliveries as the app API's HMAC scheme does; empty: deliveries are not signed.
    secret = encrypt(models.CharField(max_length=256, blank=True, default=""))
    # "draft", "latest" (the latest version released on the API channel), or a semver range.
    version = models.CharField(max_length=128, default="draft")
    # Start input name -> where its value comes from: "body", "body.a.b", "query.<name>", "headers.<name>".
    input_mapping = models.JSONField(default=dict, blank=True)
    wait = models.BooleanField(default=False)
    wait_timeout_s = models.PositiveIntegerField(default=30)
    response_template = models.TextField(blank=True, default="")
    response_content_type = models.CharField(
        max_length=32, choices=ResponseContentType.choices, default=ResponseContentType.TEXT
    )
    rate_limit_per_minute = models.PositiveIntegerField(default=60)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    rotated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "workflow_triggers"
        ordering = ["created_at", "id"]
        indexes = [models.Index(fields=["workflow", "created_at"], name="idx_triggers_workflow")]
        constraints = [
            models.CheckConstraint(condition=Q(kind__in=TriggerKind.values), name="triggers_kind_valid"),
            models.CheckConstraint(
                condition=Q(response_content_type__in=ResponseContentType.values),
                name="triggers_content_type_valid",
            ),
            models.CheckConstraint(
                condition=Q(wait_timeout_s__gte=1, wait_timeout_s__lte=MAX_WAIT_TIMEOUT_S),
                name="triggers_wait_timeout_range",
            ),
            models.CheckConstraint(
                condition=Q(rate_limit_per_minute__gte=1, rate_limit_per_minute__lte=MAX_RATE_LIMIT_PER_MINUTE),
                name="triggers_rate_limit_range",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.name or self.token_prefix}"

    @property
    def has_secret(self) -> bool:
        return bool(self.secret)


class HookDelivery(models.Model):
    """One call of a webhook that started a run: what links runs to their trigger, and what answers a
    replay (the same ``Idempotency-Key`` within 24 h) without a second run."""

    id = models.BigAutoField(primary_key=True)
    trigger = models.ForeignKey(Trigger, on_delete=models.CASCADE, related_name="deliveries")
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="+")
    idempotency_key = models.CharField(max_length=255, blank=True, default="")
    # The final answer once the caller waited for the run to finish (a replay answers it again).
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    response_content_type = models.CharField(max_length=64, blank=True, default="")
    response_body = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "hook_deliveries"
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "hook deliveries"
        indexes = [models.Index(fields=["trigger", "-created_at"], name="idx_hook_deliveries_trigger")]
        constraints = [
            models.UniqueConstraint(
                fields=["trigger", "idempotency_key"],
                condition=~Q(idempotency_key=""),
                name="hook_deliveries_idempotency_unique",
            ),
        ]

    def __str__(self) -> str:
        return f"delivery {self.pk} of {self.trigger_id}"


class HookNonce(models.Model):
    """Nonces of signed deliveries already seen, when there is no Redis (embedded mode)."""

    trigger = models.ForeignKey(Trigger, on_delete=models.CASCADE, related_name="+")
    nonce = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "hook_nonces"
        constraints = [models.UniqueConstraint(fields=["trigger", "nonce"], name="hook_nonces_unique")]

    def __str__(self) -> str:
        return f"nonce of {self.trigger_id}"
