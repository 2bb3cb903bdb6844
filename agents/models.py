"""Agents, the tools they may call, the LLM providers they talk to, and chat sessions (seeds 001, 002)."""

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q
from django_cryptography.fields import encrypt


class LLMProviderKind(models.TextChoices):
    """The wire protocol a provider speaks (one adapter each in ``workflows.engine``'s LLM client)."""

    OPENAI = "openai", "OpenAI-compatible (/chat/completions)"
    ANTHROPIC = "anthropic", "Anthropic (Messages API)"
    GEMINI = "gemini", "Google Gemini API"


class LLMProvider(models.Model):
    """A model endpoint of some kind with its key, encrypted at rest and never sent back."""

    Kind = LLMProviderKind

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="providers")
    name = models.CharField(max_length=50)
    # Existing rows, and providers created without a kind, are OpenAI-compatible.
    kind = models.CharField(max_length=20, choices=Kind.choices, default=Kind.OPENAI)
    base_url = models.URLField(max_length=500)
    api_key = encrypt(models.TextField(blank=True, default=""))
    model = models.CharField(max_length=100, blank=True, default="")
    available_models = models.JSONField(default=list, blank=True)
    # Rate limits and other knobs, e.g. {"rate_limit": {"requests_per_minute": 60}}.
    metadata = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "llm_providers"
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["owner", "name"], name="llm_providers_owner_name_unique"),
            models.CheckConstraint(condition=Q(kind__in=LLMProviderKind.values), name="llm_providers_kind_valid"),
        ]

    def __str__(self) -> str:
        return self.name


class ToolKind(models.TextChoices):
    HTTP = "http", "HTTP endpoint"
    BUILTIN = "builtin", "Built in"


class ToolVisibility(models.TextChoices):
    PRIVATE = "private", "Private"
    PUBLIC = "public", "Public"


class ToolStatus(models.TextChoices):
    PENDING = "pending", "Pending review"
    APPROVED = "approved", "Approved"
    REJECTED = "rejected", "Rejected"


class Tool(models.Model):
    """A callable tool; only an operator-approved tool can run or be given to an agent."""

    Kind = ToolKind
    Visibility = ToolVisibility

    Status = ToolStatus

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="tools", db_column="owner_id"
    )
    # Unique per owner rather than globally (seed): one user's names must not leak to another.
    name = models.CharField(max_length=255)
    description = models.TextField(blank=True, default="")
    category = models.CharField(max_length=50, blank=True, default="")
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.HTTP)
    endpoint = models.URLField(max_length=500, blank=True, default="")
    parameters = models.JSONField(default=dict, blank=True)
    config = models.JSONField(default=dict, blank=True)
    # The HTTP headers sent with every call, credentials among them: encrypted at rest, never sent back.
    secret_headers = encrypt(models.JSONField(default=dict, blank=True))
    visibility = models.CharField(max_length=20, choices=Visibility.choices, default=Visibility.PRIVATE)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PENDING)
    review_reason = models.TextField(blank=True, default="")
    reviewer = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    reviewed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "tools"
        ordering = ["name"]
        indexes = [
            models.Index(fields=["status", "visibility"], name="idx_tools_status_visibility"),
        ]
        constraints = [
            models.UniqueConstraint(fields=["owner", "name"], name="tools_owner_name_unique"),
            models.CheckConstraint(condition=Q(kind__in=ToolKind.values), name="tools_kind_valid"),
            models.CheckConstraint(condition=Q(visibility__in=ToolVisibility.values), name="tools_visibility_valid"),
            models.CheckConstraint(condition=Q(status__in=ToolStatus.values), name="tools_status_valid"),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def is_approved(self) -> bool:
        return self.status == self.Status.APPROVED


class AgentStatus(models.TextChoices):
    ACTIVE = "active", "Active"
    ARCHIVED = "archived", "Archived"


class Agent(models.Model):
    """A model with a system prompt and approved tools, run as a tool-calling loop."""

    Status = AgentStatus

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="agents")
    name = models.CharField(max_length=255)
    start = models.TextField(blank=True, default="")
    goal = models.TextField(blank=True, default="")
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.ACTIVE)
    provider = models.ForeignKey(LLMProvider, on_delete=models.SET_NULL, null=True, blank=True, related_name="agents")
    model = models.CharField(max_length=100, blank=True, default="")
    system_prompt = models.TextField(blank=True, default="")
    tools = models.ManyToManyField(Tool, blank=True, related_name="agents", db_table="agent_tools")
    max_steps = models.PositiveIntegerField(default=10)
    token_budget = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "agents"
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["status"], name="idx_agents_status"),
            models.Index(fields=["created_at"], name="idx_agents_created_at"),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(status__in=AgentStatus.values), name="agents_status_valid"),
        ]

    def __str__(self) -> str:
        return self.name


class SessionStatus(models.TextChoices):
    ACTIVE = "active", "Active"
    ARCHIVED = "archived", "Archived"
    CLOSED = "closed", "Closed"


class Session(models.Model):
    """A user's conversation, with its messages and its own line of workflow versions (seed 002)."""

    Status = SessionStatus

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="sessions", db_column="user_id"
    )
    title = models.CharField(max_length=255, blank=True, default="")
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.ACTIVE)
    agent = models.ForeignKey(Agent, on_delete=models.SET_NULL, null=True, blank=True, related_name="sessions")
    # The last sequence number handed out; messages take the next one under a row lock.
    last_sequence_number = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "sessions"
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["owner"], name="idx_sessions_user_id"),
            models.Index(fields=["owner", "status"], name="idx_sessions_user_status"),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(status__in=SessionStatus.values), name="sessions_status_valid"),
        ]

    def __str__(self) -> str:
        return self.title or str(self.id)


class MessageRole(models.TextChoices):
    USER = "user", "User"
    ASSISTANT = "assistant", "Assistant"
    SYSTEM = "system", "System"
    TOOL = "tool", "Tool"


class Message(models.Model):
    """One message of a session; ``sequence_number`` is gapless and unique within the session."""

    Role = MessageRole

    session = models.ForeignKey(Session, on_delete=models.CASCADE, related_name="messages")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="messages")
    role = models.CharField(max_length=20, choices=Role.choices, db_column="message_type")
    content = models.TextField()
    sequence_number = models.PositiveIntegerField()
    metadata = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "messages"
        ordering = ["session", "sequence_number"]
        indexes = [
            models.Index(fields=["session"], name="idx_messages_session_id"),
            models.Index(fields=["user"], name="idx_messages_user_id"),
        ]
        constraints = [
            models.UniqueConstraint(fields=["session", "sequence_number"], name="idx_messages_session_sequence"),
            models.CheckConstraint(condition=Q(role__in=MessageRole.values), name="messages_role_valid"),
            models.CheckConstraint(condition=Q(sequence_number__gte=1), name="messages_sequence_positive"),
        ]

    def __str__(self) -> str:
        return f"{self.session_id}#{self.sequence_number} {self.role}"


class SessionWorkflowStatus(models.TextChoices):
    DRAFT = "draft", "Draft"
    COMPLETE = "complete", "Complete"


class SessionWorkflowSourceType(models.TextChoices):
    SCRATCH = "scratch", "Created from scratch"
    TEMPLATE = "template", "From a template"
    USER_WORKFLOW = "user_workflow", "Copied from a workflow"


class SessionWorkflow(models.Model):
    """A version of the workflow being shaped in a session (seed 002's ``workflows``).

    Each change stores a new version pointing at its parent; exactly one is current.
    """

    Status = SessionWorkflowStatus
    SourceType = SessionWorkflowSourceType

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    session = models.ForeignKey(Session, on_delete=models.CASCADE, related_name="workflow_versions")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    sequence_number = models.PositiveIntegerField()
    parent = models.ForeignKey(
        "self",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="children",
        db_column="parent_workflow_id",
    )
    is_current = models.BooleanField(default=True)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.DRAFT)
    source_type = models.CharField(max_length=20, choices=SourceType.choices, default=SourceType.SCRATCH)
    source_template = models.ForeignKey(
        "workflow_templates.WorkflowTemplate", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    source_workflow = models.ForeignKey(
        "workflows.Workflow", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    workflow_data = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "session_workflows"
        ordering = ["session", "sequence_number"]
        constraints = [
            models.UniqueConstraint(fields=["session", "sequence_number"], name="session_workflows_seq_unique"),
            models.UniqueConstraint(
                fields=["session"], condition=Q(is_current=True), name="session_workflows_one_current"
            ),
            models.CheckConstraint(
                condition=Q(status__in=SessionWorkflowStatus.values), name="session_workflows_status_valid"
            ),
            models.CheckConstraint(
                condition=Q(source_type__in=SessionWorkflowSourceType.values), name="session_workflows_source_valid"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.session_id} v{self.sequence_number}"
