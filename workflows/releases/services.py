"""Publishing versions of a workflow, releasing them on channels, and rolling the draft back."""

from django.db import IntegrityError, transaction

from agents.tools_runtime import workflow_tools_issues
from config.errors import Conflict, InvalidInput
from config.generations import ACCESS, generation_move
from history.services import audit_log_record
from workflows.engine import validate_graph
from workflows.models import ReleaseChannel, Workflow, WorkflowVersion
from workflows.selectors import workflow_graph
from workflows.services import GraphInvalid, workflow_update

from .versions import parse_version

DEFAULT_CHANNELS = ("web", "api")


def channels_mask(channels, *, field: str = "channels") -> int:
    """``["web", "api"]`` → the ``release_status`` bits of those channels."""
    if not isinstance(channels, list | tuple) or not channels:
        raise InvalidInput("Give a non-empty list of channels.", field=field, code="invalid_channels")
    by_name = {choice.name.lower(): choice.value for choice in ReleaseChannel}
    mask = 0
    for name in channels:
        if name not in by_name:
            raise InvalidInput(
                f"Unknown channel {str(name)[:32]!r}; channels are {', '.join(by_name)}.",
                field=field,
                code="invalid_channels",
            )
        mask |= by_name[name]
    return mask


def channel_names(mask: int) -> list[str]:
    return [choice.name.lower() for choice in ReleaseChannel if mask & choice.value]


def _release_graph(graph: dict) -> dict:
    """What clients run: the graph without what only the editor needs (canvas positions)."""
    return {
        "nodes": [{key: value for key, value in node.items() if key != "position"} for node in graph["nodes"]],
        "edges": graph["edges"],
    }


def workflow_publish(
    *, workflow: Workflow, version: str, user, description: str = "", channels=DEFAULT_CHANNELS
) -> WorkflowVersion:
    """Freeze the validated draft into a new immutable version, greater than every earlier one."""
    parsed = parse_version(version)
    mask = channels_mask(list(channels))
    with transaction.atomic():
        # One publisher at a time per workflow, so that "greater than every earlier one" holds.
        workflow = Workflow.objects.select_for_update().get(pk=workflow.pk)
        graph = workflow_graph(workflow=workflow)
        issues = validate_graph(graph)
        if not issues:
            issues = workflow_tools_issues(graph=graph, owner=workflow.owner)
        if issues:
            raise GraphInvalid(issues)
        latest = (
            WorkflowVersion.objects.filter(workflow=workflow)
            .order_by("-version_major", "-version_minor", "-version_patch")
            .values_list("version_major", "version_minor", "version_patch", "version")
            .first()
        )
        if latest and (parsed.major, parsed.minor, parsed.patch) <= latest[:3]:
            raise Conflict(
                f"Version {parsed} must be greater than the latest version {latest[3]}.",
                field="version",
                code="version_not_greater",
            )
        try:
            with transaction.atomic():
                flow = WorkflowVersion.objects.create(
                    workflow=workflow,
                    name=workflow.name[:128],
                    description=description,
                    data=graph,
                    release_data=_release_graph(graph),
                    version=str(parsed),
                    version_major=parsed.major,
                    version_minor=parsed.minor,
                    version_patch=parsed.patch,
                    release_status=mask,
                    create_by=user,
                    update_by=user,
                )
        except IntegrityError:
            raise Conflict(f"Version {parsed} already exists.", field="version", code="version_exists") from None
        if workflow.status != Workflow.Status.PUBLISHED:
            Workflow.objects.filter(pk=workflow.pk).update(status=Workflow.Status.PUBLISHED)
            generation_move(ACCESS)
        # Licensed apps may call this version from now on.
        audit_log_record(
            actor=user,
            action="flow.publish",
            target=flow,
            after={"workflow": str(workflow.pk), "version": flow.version, "channels": channel_names(mask)},
        )
    return flow


def flow_release(*, flow: WorkflowVersion, channels, user) -> WorkflowVersion:
    """Release a version on more channels (bits are only added)."""
    mask = channels_mask(channels)
    return _flow_channels_set(flow=flow, user=user, action="flow.release", new=lambda current: current | mask)


def flow_withdraw(*, flow: WorkflowVersion, user, channels=None) -> WorkflowVersion:
    """Take a version off some channels, or off all of them; the version itself stays."""
    keep = 0
    if channels is not None:
        keep = sum(choice.value for choice in ReleaseChannel) & ~channels_mask(channels)
    return _flow_channels_set(flow=flow, user=user, action="flow.withdraw", new=lambda current: current & keep)


def _flow_channels_set(*, flow: WorkflowVersion, user, action: str, new) -> WorkflowVersion:
    """Set the version's channels to ``new(current)`` under a row lock; audited when they change."""
    with transaction.atomic():
        current = WorkflowVersion.objects.select_for_update().values_list("release_status", flat=True).get(pk=flow.pk)
        updated = new(current)
        WorkflowVersion.objects.filter(pk=flow.pk).update(release_status=updated, update_by=user)
        generation_move(ACCESS)
        if updated != current:
            audit_log_record(
                actor=user,
                action=action,
                target=flow,
                before={"channels": channel_names(current)},
                after={"channels": channel_names(updated)},
            )
    flow.refresh_from_db()
    return flow


def workflow_rollback(*, workflow: Workflow, flow: WorkflowVersion, user) -> Workflow:
    """Make a published version the draft again; the next publish needs a new, greater version."""
    return workflow_update(workflow=workflow, user=user, graph=flow.data)
