"""What a workflow does when one of its runs ends: its failure policy, the notifications sent, the
error workflow runs started."""

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q
from django_cryptography.fields import encrypt

from workflows.models import Run, RunStatus, Workflow


class FailurePolicy(models.Model):
    """One workflow's error workflow and notifications. ``enabled`` off (an operator, in the admin)
    stops both at once; the settings stay."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    workflow = models.OneToOneField(Workflow, on_delete=models.CASCADE, related_name="failure_policy")
    enabled = models.BooleanField(default=True)
    # Started (its draft) for each failed run; a run it starts that fails starts nothing more.
    error_workflow = models.ForeignKey(
        Workflow, on_delete=models.SET_NULL, null=True, blank=True, related_name="handles_failures_of"
    )
    on_failed = models.BooleanField(default=True)
    on_succeeded = models.BooleanField(default=False)
    on_cancelled = models.BooleanField(default=False)
    webhook_url = models.CharField(max_length=2048, blank=True, default="")
    # Signs each webhook body (HMAC-SHA256); encrypted at rest, never sent back.
    webhook_secret = encrypt(models.CharField(max_length=256, blank=True, default=""))
    emails = models.JSONField(default=list, blank=True)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "alert_policies"
        verbose_name_plural = "failure policies"

    def __str__(self) -> str:
        return f"failure policy of {self.workflow_id}"

    @property
    def notified_statuses(self) -> frozenset[str]:
        """The run statuses that send the notifications."""
        flags = (
            (RunStatus.FAILED, self.on_failed),
            (RunStatus.SUCCEEDED, self.on_succeeded),
            (RunStatus.CANCELLED, self.on_cancelled),
        )
        return frozenset(str(status) for status, on in flags if on)

    @property
    def acted_on_statuses(self) -> frozenset[str]:
        """The run statuses this policy does something for (notifications, the error workflow)."""
        if not self.enabled:
            return frozenset()
        statuses = set(self.notified_statuses) if (self.webhook_url or self.emails) else set()
        if self.error_workflow_id:
            statuses.add(str(RunStatus.FAILED))
        return frozenset(statuses)


class DeliveryChannel(models.TextChoices):
    WEBHOOK = "webhook", "Webhook"
    EMAIL = "email", "Email"


class DeliveryStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    SENDING = "sending", "Sending"
    DELIVERED = "delivered", "Delivered"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


class Delivery(models.Model):
    """One notification of one run's end to one target. The row is inserted before anything is sent
    (unique per run, channel and target) and claimed by a conditional update: it is sent once."""

    Channel = DeliveryChannel
    Status = DeliveryStatus

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    policy = models.ForeignKey(FailurePolicy, on_delete=models.CASCADE, related_name="deliveries")
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="alert_deliveries")
    event = models.CharField(max_length=20, choices=RunStatus.choices)
    channel = models.CharField(max_length=16, choices=DeliveryChannel.choices)
    target = models.CharField(max_length=2048)
    status = models.CharField(max_length=16, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField()
    # While ``sending``: when the claim lapses (its worker gone) and the sweep may send it again.
    claimed_until = models.DateTimeField(null=True, blank=True)
    response_status = models.PositiveIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "alert_deliveries"
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["policy", "-created_at"], name="idx_alert_deliveries_policy"),
            models.Index(
                fields=["next_attempt_at"],
                name="idx_alert_deliveries_due",
                condition=Q(status__in=[DeliveryStatus.PENDING, DeliveryStatus.SENDING]),
            ),
        ]
        constraints = [
            models.UniqueConstraint(fields=["run", "channel", "target"], name="alert_deliveries_once"),
            models.CheckConstraint(condition=Q(status__in=DeliveryStatus.values), name="alert_deliveries_status_valid"),
            models.CheckConstraint(
                condition=Q(channel__in=DeliveryChannel.values), name="alert_deliveries_channel_valid"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.channel} {self.target} for run {self.run_id} ({self.status})"


class ErrorWorkflowRun(models.Model):
    """A failed run's error workflow, started once (``failed_run`` is unique): the run it started, or
    why none started."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    failed_run = models.OneToOneField(Run, on_delete=models.CASCADE, related_name="error_workflow_start")
    error_workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="error_workflow_starts")
    error_run = models.OneToOneField(
        Run, on_delete=models.SET_NULL, null=True, blank=True, related_name="started_for_failure"
    )
    not_started_reason = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "alert_error_workflow_runs"
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"error workflow for run {self.failed_run_id}"
