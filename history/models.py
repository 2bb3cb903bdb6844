"""What happened: chat memory of llm nodes, the audit trail, and usage (seeds 000, 001)."""

from django.conf import settings
from django.db import models


class WorkflowNodeHistory(models.Model):
    """One question/answer round of an llm node with memory, per (flow, chat, node, uid)."""

    flow = models.ForeignKey(
        "workflows.WorkflowVersion",
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="node_history",
        db_column="flow_id",
    )
    app = models.ForeignKey("licensing.App", on_delete=models.CASCADE, null=True, blank=True, related_name="+")
    node_id = models.CharField(max_length=255)
    uid = models.CharField(max_length=255, blank=True, default="")
    chat_id = models.CharField(max_length=255, blank=True, default="")
    raw_question = models.TextField(blank=True, default="")
    raw_answer = models.TextField(blank=True, default="")
    create_time = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "workflow_node_history"
        ordering = ["-create_time"]
        verbose_name_plural = "workflow node history"
        indexes = [
            models.Index(fields=["chat_id"], name="idx_node_history_chat_id"),
            models.Index(fields=["node_id"], name="idx_node_history_node_id"),
            models.Index(fields=["uid"], name="idx_node_history_uid"),
            models.Index(fields=["flow", "chat_id", "node_id", "uid", "-create_time"], name="idx_node_history_memory"),
        ]

    def __str__(self) -> str:
        return f"{self.chat_id}/{self.node_id} @ {self.create_time:%Y-%m-%d %H:%M}"


class AuditLog(models.Model):
    """Who changed access or secrets, what, from what to what, and when. Never holds a secret."""

    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    actor_repr = models.CharField(max_length=255, blank=True, default="")
    action = models.CharField(max_length=64)
    target_type = models.CharField(max_length=64)
    target_id = models.CharField(max_length=64)
    target_repr = models.CharField(max_length=255, blank=True, default="")
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    payload = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "audit_logs"
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["created_at"], name="idx_audit_logs_created_at"),
            models.Index(fields=["target_type", "target_id"], name="idx_audit_logs_target"),
            models.Index(fields=["actor", "created_at"], name="idx_audit_logs_actor"),
        ]

    def __str__(self) -> str:
        return f"{self.actor_repr} {self.action} {self.target_type}:{self.target_id}"


class UsageMetric(models.Model):
    """One run's use of the platform, kept after the run itself is purged."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    app = models.ForeignKey("licensing.App", on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    workflow = models.ForeignKey(
        "workflows.Workflow", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    run = models.ForeignKey("workflows.Run", on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    provider = models.CharField(max_length=100, blank=True, default="")
    model = models.CharField(max_length=100, blank=True, default="")
    tokens_in = models.PositiveBigIntegerField(default=0)
    tokens_out = models.PositiveBigIntegerField(default=0)
    node_count = models.PositiveIntegerField(default=0)
    duration_ms = models.PositiveBigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "usage_metrics"
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["user", "created_at"], name="idx_usage_user_created"),
            models.Index(fields=["app", "created_at"], name="idx_usage_app_created"),
        ]
        constraints = [
            # A run is metered once: a second writer of the same rows fails instead of counting twice.
            models.UniqueConstraint(
                fields=["run", "provider", "model"],
                condition=models.Q(run__isnull=False),
                name="usage_metrics_run_provider_model_unique",
            ),
        ]

    def __str__(self) -> str:
        return f"usage of run {self.run_id}"
