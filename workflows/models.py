"""Workflows (the draft graph), their published versions, runs and schedules (seeds 000, 001)."""

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone as django_timezone


class WorkflowStatus(models.TextChoices):
    DRAFT = "draft", "Draft"
    PUBLISHED = "published", "Published"
    ARCHIVED = "archived", "Archived"


class WorkflowSource(models.TextChoices):
    NATIVE = "native", "Created here"
    TEMPLATE = "template", "From a template"
    COPY = "copy", "Copied from a workflow"
    IMPORTED = "imported", "Imported"
    COZE = "coze", "Imported from Coze"


class Workflow(models.Model):
    """A workflow group: the editable draft (its Node and Edge rows) and its lineage of versions."""

    Status = WorkflowStatus
    Source = WorkflowSource

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="workflows")
    name = models.CharField(max_length=255)
    description = models.TextField(blank=True, default="")
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.DRAFT)
    source = models.CharField(max_length=32, choices=Source.choices, default=Source.NATIVE)
    source_id = models.TextField(blank=True, default="")
    source_template = models.ForeignKey(
        "workflow_templates.WorkflowTemplate",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="workflows",
    )
    # An operator's switch (the admin): off, a failed run of this workflow cannot be retried from its failure.
    retries_enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "workflows"
        ordering = ["-updated_at"]
        indexes = [
            models.Index(fields=["owner", "status"], name="idx_workflows_owner_status"),
            models.Index(fields=["created_at"], name="idx_workflows_created_at"),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(status__in=WorkflowStatus.values), name="workflows_status_valid"),
            models.CheckConstraint(condition=Q(source__in=WorkflowSource.values), name="workflows_source_valid"),
        ]

    def __str__(self) -> str:
        return self.name


class WorkflowMemberRole(models.TextChoices):
    OWNER = "owner", "Owner"
    EDITOR = "editor", "Editor"
    VIEWER = "viewer", "Viewer"
    EXECUTOR = "executor", "Executor"


class WorkflowMember(models.Model):
    """Someone other than the owner who may see, edit or run a workflow."""

    Role = WorkflowMemberRole

    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="members")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="workflow_memberships")
    role = models.CharField(max_length=16, choices=Role.choices)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "workflow_members"
        constraints = [
            models.UniqueConstraint(fields=["workflow", "user"], name="workflow_member_unique"),
            models.CheckConstraint(condition=Q(role__in=WorkflowMemberRole.values), name="workflow_member_role_valid"),
        ]

    def __str__(self) -> str:
        return f"{self.user_id} is {self.role} of {self.workflow_id}"


class Node(models.Model):
    """One node of a workflow's draft graph; ``key`` is its id in the DSL."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="nodes")
    key = models.CharField(max_length=64)
    type = models.CharField(max_length=50)
    name = models.CharField(max_length=255, blank=True, default="")
    config = models.JSONField(default=dict)
    error_policy = models.JSONField(default=dict, blank=True)
    # DSL ``cache`` ({"ttl_s": N}): the node's result is reused (workflows/engine/cache.py); null: never.
    cache = models.JSONField(null=True, blank=True)
    position_x = models.FloatField(null=True, blank=True)
    position_y = models.FloatField(null=True, blank=True)

    class Meta:
        db_table = "nodes"
        ordering = ["workflow", "key"]
        constraints = [
            models.UniqueConstraint(fields=["workflow", "key"], name="nodes_workflow_key_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.key} ({self.type})"


class Edge(models.Model):
    """A directed edge of the draft graph; ``source_handle`` names a branch (case id, else, error)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="edges")
    source_node = models.ForeignKey(Node, on_delete=models.CASCADE, related_name="outgoing_edges")
    target_node = models.ForeignKey(Node, on_delete=models.CASCADE, related_name="incoming_edges")
    source_handle = models.CharField(max_length=64, blank=True, default="")
    condition = models.TextField(blank=True, default="")

    class Meta:
        db_table = "edges"
        constraints = [
            models.UniqueConstraint(
                fields=["workflow", "source_node", "target_node", "source_handle"], name="edges_unique"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.source_node_id} → {self.target_node_id}"


class ReleaseChannel(models.IntegerChoices):
    """Bits of ``WorkflowVersion.release_status``: a version may be released on several channels at once."""

    WEB = 1, "Web"
    API = 2, "API"
    MARKETPLACE = 4, "Marketplace"


class WorkflowVersion(models.Model):
    """One immutable published version of a workflow (the API's "version"; the seed's ``flow`` table).

    A ``Workflow`` is the lineage (the seed's and the app API's ``group``): its draft, its members
    and its versions. Publishing freezes the draft into one of these rows.

    ``data`` is the draft as it was when published; ``release_data`` is what clients run.
    The semver parts are stored as integers so that "latest" is numeric, never string order.
    """

    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="versions", db_column="group_id")
    name = models.CharField(max_length=128)
    data = models.JSONField()
    release_data = models.JSONField()
    description = models.CharField(max_length=1024, blank=True, default="")
    version = models.CharField(max_length=128)
    version_major = models.PositiveIntegerField()
    version_minor = models.PositiveIntegerField()
    version_patch = models.PositiveIntegerField()
    version_prerelease = models.CharField(max_length=64, blank=True, default="")
    release_status = models.PositiveSmallIntegerField(default=0)
    app = models.ForeignKey(
        "licensing.App", on_delete=models.SET_NULL, null=True, blank=True, related_name="+", db_column="app_id"
    )
    source = models.PositiveSmallIntegerField(default=0)
    # 0: no tag, 1: control group (seed).
    tag = models.IntegerField(default=0)
    create_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+", db_column="create_by"
    )
    update_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        db_column="update_by",
    )
    create_at = models.DateTimeField(auto_now_add=True)
    update_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "flow"
        ordering = ["workflow", "-version_major", "-version_minor", "-version_patch"]
        constraints = [
            models.UniqueConstraint(fields=["workflow", "version"], name="flow_group_version_unique"),
            models.CheckConstraint(
                condition=Q(release_status__gte=0) & Q(release_status__lt=8), name="flow_release_status_bits"
            ),
        ]
        indexes = [
            models.Index(
                fields=["workflow", "-version_major", "-version_minor", "-version_patch"],
                name="idx_flow_group_semver",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.workflow_id}@{self.version}"


class WorkflowSnapshot(models.Model):
    """A labelled copy of a draft graph, with its diff against the previous snapshot."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="snapshots")
    graph = models.JSONField(default=dict)
    diff = models.JSONField(default=dict, blank=True)
    label = models.CharField(max_length=255, blank=True, default="")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "workflow_snapshots"
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.label or str(self.id)


class RunStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


RUN_FINAL_STATUSES = (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED)


class RunTrigger(models.TextChoices):
    MANUAL = "manual", "Manual"
    APP = "app", "Client app"
    SCHEDULE = "schedule", "Schedule"
    AGENT = "agent", "Agent"
    WEBHOOK = "webhook", "Webhook"
    ERROR_WORKFLOW = "error_workflow", "Error workflow"


class Run(models.Model):
    """One execution of a workflow graph, frozen in ``graph`` when the run was created."""

    Status = RunStatus
    Trigger = RunTrigger

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # Every index of runs is written on each run's insert and on each change of its status, so none is
    # kept twice: idx_runs_workflow_created (workflow, -created_at) serves lookups by workflow, and
    # idx_runs_agent_id those by agent.
    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="runs", db_index=False)
    flow = models.ForeignKey(WorkflowVersion, on_delete=models.SET_NULL, null=True, blank=True, related_name="runs")
    version = models.CharField(max_length=128, blank=True, default="")
    graph = models.JSONField(default=dict)
    agent = models.ForeignKey(
        "agents.Agent", on_delete=models.SET_NULL, null=True, blank=True, related_name="runs", db_index=False
    )
    triggered_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="runs"
    )
    app = models.ForeignKey("licensing.App", on_delete=models.SET_NULL, null=True, blank=True, related_name="runs")
    schedule = models.ForeignKey(
        "ScheduledWorkflow", on_delete=models.SET_NULL, null=True, blank=True, related_name="runs"
    )
    # The cron tick a scheduled run belongs to: one run per (schedule, tick), however many beats.
    scheduled_tick = models.DateTimeField(null=True, blank=True)
    trigger = models.CharField(max_length=16, choices=Trigger.choices, default=Trigger.MANUAL)
    status = models.CharField(max_length=20, choices=RunStatus.choices, default=RunStatus.PENDING)
    inputs = models.JSONField(default=dict, blank=True)
    outputs = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True, default="")
    chat_id = models.CharField(max_length=255, blank=True, default="")
    # The client app's end user, so that chat memory of one user never reaches another.
    uid = models.CharField(max_length=255, blank=True, default="")
    # Durability: the worker holding the run renews its lease; an expired lease is reclaimed.
    lease_owner = models.CharField(max_length=255, blank=True, default="")
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    dispatch_attempts = models.PositiveIntegerField(default=0)
    cancel_requested = models.BooleanField(default=False)
    last_seq = models.PositiveIntegerField(default=0)
    # Set before the run's first output is written to object storage: retention deletes its objects.
    stored_outputs = models.BooleanField(default=False)
    trace_id = models.CharField(max_length=64, blank=True, default="")
    # The failed (or cancelled) run this one retries from its failure (workflows/execution/retry.py).
    # Indexed by idx_runs_retry_of, over retries only: every run's insert pays for each index it is in.
    retry_of = models.ForeignKey(
        "self", on_delete=models.SET_NULL, null=True, blank=True, related_name="retries", db_index=False
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "runs"
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["agent"], name="idx_runs_agent_id"),
            models.Index(fields=["status"], name="idx_runs_status"),
            models.Index(fields=["created_at"], name="idx_runs_created_at"),
            models.Index(fields=["workflow", "-created_at"], name="idx_runs_workflow_created"),
            models.Index(fields=["lease_expires_at"], name="idx_runs_running_lease", condition=Q(status="running")),
            # The runs in flight, which the concurrent_runs quota counts on every start: a small index
            # (idx_runs_status holds every run, and each run's dead versions until a vacuum).
            models.Index(
                fields=["triggered_by", "workflow"],
                name="idx_runs_in_flight",
                condition=Q(status__in=[RunStatus.PENDING, RunStatus.RUNNING]),
            ),
            models.Index(fields=["retry_of"], name="idx_runs_retry_of", condition=Q(retry_of__isnull=False)),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(status__in=RunStatus.values), name="runs_status_valid"),
            models.CheckConstraint(condition=Q(trigger__in=RunTrigger.values), name="runs_trigger_valid"),
            models.UniqueConstraint(
                fields=["schedule", "scheduled_tick"],
                condition=Q(schedule__isnull=False, scheduled_tick__isnull=False),
                name="runs_schedule_tick_unique",
            ),
        ]

    def __str__(self) -> str:
        return f"run {self.id} ({self.status})"

    @property
    def is_finished(self) -> bool:
        return self.status in RUN_FINAL_STATUSES


class TaskStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    RUNNING = "running", "Running"
    RETRYING = "retrying", "Retrying"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    SKIPPED = "skipped", "Skipped"
    CANCELLED = "cancelled", "Cancelled"


class Task(models.Model):
    """One node's execution within a run. ``scope`` tells iterations of the same node apart."""

    Status = TaskStatus

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="tasks")
    agent = models.ForeignKey("agents.Agent", on_delete=models.SET_NULL, null=True, blank=True, related_name="tasks")
    node_id = models.CharField(max_length=64)
    node_type = models.CharField(max_length=50, blank=True, default="")
    scope = models.CharField(max_length=255, blank=True, default="")
    name = models.CharField(max_length=255)
    description = models.TextField(blank=True, default="")
    status = models.CharField(max_length=20, choices=TaskStatus.choices, default=TaskStatus.PENDING)
    input_data = models.JSONField(null=True, blank=True)
    output_data = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True, default="")
    attempt = models.PositiveIntegerField(default=0)
    retry_count = models.PositiveIntegerField(default=0)
    events = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "tasks"
        ordering = ["created_at"]
        indexes = [
            models.Index(fields=["run", "status"], name="idx_tasks_run_status"),
        ]
        constraints = [
            models.UniqueConstraint(fields=["run", "node_id", "scope"], name="tasks_run_node_scope_unique"),
            models.CheckConstraint(condition=Q(status__in=TaskStatus.values), name="tasks_status_valid"),
        ]

    def __str__(self) -> str:
        return f"{self.node_id} of {self.run_id} ({self.status})"


class RunEvent(models.Model):
    """The run's event stream, one row per event, so that ``?after=<seq>`` replays it exactly.

    On PostgreSQL the table is partitioned by month of ``run_created_at`` (docs/partitions.md): the
    database's primary key is (id, run_created_at) and its unique key (run, seq, run_created_at),
    as strong as (run, seq) since every event of a run carries the same copy of its creation time.
    """

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="events")
    seq = models.PositiveIntegerField()
    type = models.CharField(max_length=32)
    node_id = models.CharField(max_length=64, blank=True, default="")
    data = models.JSONField(default=dict, blank=True)
    at = models.DateTimeField()
    # The run's created_at, copied: the partition key, so that all of a run's events share a partition.
    run_created_at = models.DateTimeField(editable=False)

    class Meta:
        db_table = "run_events"
        ordering = ["run", "seq"]
        constraints = [
            models.UniqueConstraint(fields=["run", "seq"], name="run_events_run_seq_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.run_id}#{self.seq} {self.type}"

    def save(self, *args, **kwargs):
        # The journal writes its batches with the copy; an event saved one at a time reads it here.
        if self.run_created_at is None:
            self.run_created_at = Run.objects.values_list("created_at", flat=True).get(pk=self.run_id)
        super().save(*args, **kwargs)


class ScheduledWorkflowStatus(models.TextChoices):
    ACTIVE = "active", "Active"
    PAUSED = "paused", "Paused"


class ScheduledWorkflowExecutionStatus(models.TextChoices):
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    RUNNING = "running", "Running"


class ScheduledWorkflow(models.Model):
    """A cron schedule that starts runs of a workflow (pinned version, or the latest)."""

    Status = ScheduledWorkflowStatus
    ExecutionStatus = ScheduledWorkflowExecutionStatus

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="schedules")
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="schedules")
    flow = models.ForeignKey(WorkflowVersion, on_delete=models.PROTECT, null=True, blank=True, related_name="schedules")
    name = models.CharField(max_length=255, blank=True, default="")
    cron_expression = models.CharField(max_length=255)
    timezone = models.CharField(max_length=64, default="UTC")
    inputs = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.ACTIVE)
    pause_reason = models.TextField(blank=True, default="")
    max_retries = models.PositiveIntegerField(default=3)
    consecutive_failures = models.PositiveIntegerField(default=0)
    last_execution_at = models.DateTimeField(null=True, blank=True)
    last_execution_status = models.CharField(max_length=20, choices=ExecutionStatus.choices, blank=True, default="")
    last_error_message = models.TextField(blank=True, default="")
    # When the schedule last took effect (created, resumed, a new workflow, cron or time zone):
    # ticks before it do not fire, and failures before it do not count towards the pause.
    effective_from = models.DateTimeField(default=django_timezone.now)
    # The next tick to fire (UTC): the firing turn claims a schedule by moving it forward, from the
    # value it read, past now (workflows/schedules/services.py). Null until the schedule is saved.
    next_fire_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "scheduled_workflows"
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["status", "workflow"], name="idx_scheduled_status_workflow"),
            models.Index(fields=["status", "next_fire_at"], name="idx_scheduled_status_next_fire"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=ScheduledWorkflowStatus.values), name="scheduled_status_valid"
            ),
            models.CheckConstraint(
                condition=Q(last_execution_status__in=[*ScheduledWorkflowExecutionStatus.values, ""]),
                name="scheduled_last_status_valid",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.workflow_id} @ {self.cron_expression} ({self.timezone})"
