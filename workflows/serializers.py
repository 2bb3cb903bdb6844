from django.contrib.auth import get_user_model
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from config.api.serializers import StrictModelSerializer, StrictSerializer
from config.errors import InvalidInput

from . import services
from .execution.large_outputs import InlineBudget, run_data_inlined
from .execution.services import FinishedRun
from .models import Run, ScheduledWorkflow, Task, Workflow, WorkflowMember, WorkflowMemberRole, WorkflowVersion
from .permissions import CAN_RUN
from .schedules import services as schedule_services
from .selectors import workflow_graph, workflow_role_for_user, workflows_for_user

MAX_ID = 2**63 - 1  # the largest primary key the database holds


# --- The DSL -----------------------------------------------------------------------------------
class DslGraphField(serializers.JSONField):
    """A DSL v1 graph: the API schema shows the engine's JSON Schema (``workflows.openapi``);
    ``graph_clean`` checks it, so that each problem is answered with its node and field."""


class GraphField(DslGraphField):
    """A workflow's draft as a DSL document, read from and written to its Node/Edge rows."""

    def get_attribute(self, instance):
        return workflow_graph(workflow=instance)


# --- Workflows ---------------------------------------------------------------------------------
class WorkflowSerializer(StrictModelSerializer):
    """A workflow with its draft graph and your role on it."""

    graph = GraphField(required=False, help_text="The draft: DSL v1 nodes and edges.")
    owner = serializers.CharField(source="owner.username", read_only=True)
    role = serializers.SerializerMethodField(help_text="Your role on this workflow.")

    class Meta:
        model = Workflow
        fields = [
            "id",
            "name",
            "description",
            "graph",
            "status",
            "source",
            "source_template",
            "owner",
            "role",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["status", "source", "source_template", "created_at", "updated_at"]
        extra_kwargs = {"description": {"max_length": 10_000}}

    @extend_schema_field(serializers.ChoiceField(choices=WorkflowMemberRole.choices))
    def get_role(self, workflow: Workflow) -> str | None:
        if hasattr(workflow, "caller_role"):
            return workflow.caller_role
        request = self.context.get("request")
        return workflow_role_for_user(workflow=workflow, user=request.user) if request else None


class WorkflowVersionSerializer(StrictModelSerializer):
    """A published version of a workflow."""

    created = serializers.DateTimeField(source="create_at", read_only=True)

    class Meta:
        model = WorkflowVersion
        fields = ["version", "name", "description", "release_status", "created"]
        read_only_fields = fields


# --- Members -----------------------------------------------------------------------------------
class WorkflowMemberSerializer(StrictModelSerializer):
    """Someone a workflow is shared with, and their role."""

    user = serializers.IntegerField(source="user_id", read_only=True)
    username = serializers.CharField(source="user.username", read_only=True)

    class Meta:
        model = WorkflowMember
        fields = ["user", "username", "role", "created_at"]
        read_only_fields = fields


class WorkflowMemberSetSerializer(StrictSerializer):
    """Share a workflow with a user, or change their role."""

    user = serializers.CharField(max_length=150, help_text="The user's username, or their numeric id.")
    role = serializers.ChoiceField(choices=WorkflowMemberRole.choices)

    def validate_user(self, value: str):
        users = get_user_model().objects
        user = users.filter(username=value).first()
        if user is None and value.isascii() and value.isdigit() and int(value) <= MAX_ID:
            user = users.filter(pk=int(value)).first()
        if user is None:
            raise serializers.ValidationError("No such user.")
        return user


class WorkflowMemberRoleSerializer(StrictSerializer):
    """A member's new role."""

    role = serializers.ChoiceField(choices=WorkflowMemberRole.choices)


# --- Runs --------------------------------------------------------------------------------------
class TaskSerializer(StrictModelSerializer):
    """One node's execution within a run."""

    output = serializers.JSONField(source="output_data", read_only=True)

    class Meta:
        model = Task
        fields = [
            "node_id",
            "node_type",
            "scope",
            "status",
            "attempt",
            "output",
            "error",
            "started_at",
            "finished_at",
        ]
        read_only_fields = fields


class RunSerializer(StrictModelSerializer):
    """A run with its tasks (prefetch ``tasks``), as the contract shows it."""

    workflow = serializers.UUIDField(source="workflow_id", read_only=True)
    retry_of = serializers.UUIDField(
        source="retry_of_id", read_only=True, allow_null=True, help_text="The run this one retries, if any."
    )
    tasks = TaskSerializer(many=True, read_only=True)

    class Meta:
        model = Run
        fields = [
            "id",
            "workflow",
            "status",
            "trigger",
            "inputs",
            "outputs",
            "error",
            "version",
            "retry_of",
            "tasks",
            "created_at",
            "started_at",
            "finished_at",
        ]
        read_only_fields = fields

    def to_representation(self, instance):
        """Outputs kept in object storage are read back, up to one budget per answer (a page of runs
        shares it); past it they stay references with a download ``url`` (execution/large_outputs.py)."""
        budget = self.context.setdefault("stored_outputs_budget", InlineBudget.new())
        return run_data_inlined(super().to_representation(instance), run_id=instance.pk, budget=budget)


_TIME = serializers.DateTimeField(read_only=True)


def finished_run_data(finished: FinishedRun) -> dict:
    """What ``RunSerializer`` shows of a finished run. A run answered from its journal's record (``tasks``)
    is rendered field by field, without a serializer instance per task: the same data
    (tests/engine/test_runs_here.py compares the two), for a fraction of the time."""
    run, tasks = finished.run, finished.tasks
    if tasks is None:
        return RunSerializer(run).data
    time = _TIME.to_representation
    data = {
        "id": str(run.pk),
        "workflow": str(run.workflow_id),
        "status": str(run.status),
        "trigger": str(run.trigger),
        "inputs": run.inputs,
        "outputs": run.outputs,
        "error": run.error,
        "version": run.version,
        "retry_of": None if run.retry_of_id is None else str(run.retry_of_id),
        "tasks": [
            {
                "node_id": task["node_id"],
                "node_type": task["node_type"],
                "scope": task["scope"],
                "status": str(task["status"]),
                "attempt": task["attempt"],
                "output": task["output"],
                "error": task["error"],
                "started_at": time(task["started_at"]),
                "finished_at": time(task["finished_at"]),
            }
            for task in tasks
        ],
        "created_at": time(run.created_at),
        "started_at": time(run.started_at),
        "finished_at": time(run.finished_at),
    }
    return run_data_inlined(data, run_id=run.pk)


# --- Schedules ---------------------------------------------------------------------------------
class ScheduleSerializer(StrictModelSerializer):
    """A cron schedule that starts runs of a workflow."""

    workflow = serializers.PrimaryKeyRelatedField(
        queryset=Workflow.objects.none(), pk_field=serializers.UUIDField(), help_text="A workflow you can run."
    )
    cron = serializers.CharField(
        source="cron_expression",
        max_length=255,
        help_text=(
            "Five fields: minute hour day-of-month month day-of-week (0-6 or sun-sat). When both days are "
            "restricted, both must match."
        ),
    )
    timezone = serializers.CharField(max_length=64, default="UTC", help_text="An IANA time zone, e.g. Europe/Paris.")
    version = serializers.CharField(
        source="flow.version",
        max_length=128,
        required=False,
        allow_null=True,
        help_text=(
            "Pin a published version; null runs the latest version released on the API channel "
            "(the draft while none is)."
        ),
    )
    inputs = serializers.DictField(required=False, help_text="The inputs every scheduled run gets.")
    max_retries = serializers.IntegerField(
        min_value=0,
        max_value=100,
        default=3,
        help_text="Pause the schedule after this many consecutive failed runs (0: never).",
    )
    last_execution_status = serializers.CharField(
        read_only=True, help_text="succeeded, failed or running; empty until the first run."
    )
    next_run_at = serializers.DateTimeField(
        source="next_fire_at", read_only=True, allow_null=True, help_text="The next tick the schedule fires at."
    )

    class Meta:
        model = ScheduledWorkflow
        fields = [
            "id",
            "workflow",
            "name",
            "cron",
            "timezone",
            "version",
            "inputs",
            "status",
            "pause_reason",
            "max_retries",
            "consecutive_failures",
            "last_execution_at",
            "last_execution_status",
            "last_error_message",
            "next_run_at",
            "created_at",
            "updated_at",
        ]
        read_only_fields = [
            "status",
            "pause_reason",
            "consecutive_failures",
            "last_execution_at",
            "last_execution_status",
            "last_error_message",
            "next_run_at",
            "created_at",
            "updated_at",
        ]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        request = self.context.get("request")
        if request is not None:
            self.fields["workflow"].queryset = workflows_for_user(user=request.user, roles=CAN_RUN)

    def validate_cron(self, value: str) -> str:
        try:
            return schedule_services.cron_check(value)
        except InvalidInput as error:
            raise serializers.ValidationError(error.message) from None

    def validate_inputs(self, value: dict) -> dict:
        if services.json_has_nul(value):
            raise serializers.ValidationError("Must not contain NUL characters.")
        return value

    def validate_timezone(self, value: str) -> str:
        try:
            return schedule_services.timezone_check(value)
        except InvalidInput as error:
            raise serializers.ValidationError(error.message) from None

    def to_service_arguments(self) -> dict:
        """The validated fields, named as the schedule services take them."""
        renamed = {"cron_expression": "cron", "timezone": "timezone_name"}
        arguments = {renamed.get(field, field): value for field, value in self.validated_data.items()}
        if "flow" in arguments:
            arguments["version"] = arguments.pop("flow")["version"]
        return arguments


class SchedulePauseSerializer(StrictSerializer):
    reason = serializers.CharField(
        max_length=1000, required=False, allow_blank=True, help_text="Why; shown with the paused schedule."
    )


class ScheduleActionSerializer(StrictSerializer):
    """No body."""
