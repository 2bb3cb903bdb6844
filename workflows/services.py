"""Writes to workflows: create, edit the draft graph, delete, share with members.

Schedules have their own services in ``workflows.schedules.services``.
"""

import math

from django.db import transaction

from agents.tools_runtime import workflow_tools_issues
from config.errors import Conflict, Forbidden, InvalidInput, NotFound
from history.services import audit_log_record

from .engine import GraphIssue, dsl_shape_issues, validate_graph
from .models import Edge, Node, Run, RunStatus, Workflow, WorkflowMember, WorkflowMemberRole
from .permissions import CAN_EDIT, CAN_MANAGE
from .quotas import workflow_quota_check
from .selectors import workflow_role_for_user

_UNSET = object()


class GraphInvalid(InvalidInput):
    """The graph cannot be saved: each issue names the node (if any), the field and the problem."""

    default_code = "invalid_graph"

    def __init__(self, issues: list[GraphIssue], message: str = "The graph is not valid."):
        super().__init__(message)
        self.issues = list(issues)

    def as_dict(self) -> dict:
        return {
            "detail": self.message,
            "code": self.code,
            "errors": [issue.as_dict() for issue in self.issues],
        }


def json_has_nul(value) -> bool:
    """Whether a JSON document holds a NUL character, which PostgreSQL cannot store in text or jsonb."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def graph_clean(graph, *, owner=None) -> dict:
    """Check a DSL graph; return it normalised, every field present as the Node and Edge rows hold it.

    The engine checks it: its shape against the DSL's JSON Schema, then the rules a schema cannot
    say. An empty draft needs only the shape: it is where every workflow starts. Then what
    PostgreSQL cannot store, and, with ``owner``, that tool and agent nodes name tools and agents
    the owner's workflows may use. Raises GraphInvalid with the issues found.
    """
    has_content = isinstance(graph, dict) and bool(graph.get("nodes") or graph.get("edges"))
    issues = validate_graph(graph) if has_content else dsl_shape_issues(graph)
    if issues:
        raise GraphInvalid(issues)
    cleaned = _graph_normalised(graph)
    issues = _unstorable_issues(cleaned)
    if not issues and has_content and owner is not None:
        issues = workflow_tools_issues(graph=cleaned, owner=owner)
    if issues:
        raise GraphInvalid(issues)
    return cleaned


def _graph_normalised(graph: dict) -> dict:
    """A graph of the DSL's shape with the optional fields filled in."""
    return {
        "nodes": [
            {
                "id": node["id"],
                "type": node["type"],
                "name": node.get("name") or "",
                "config": node.get("config") or {},
                "error_policy": node.get("error_policy") or {},
                **({"cache": node["cache"]} if node.get("cache") else {}),
                "position": {axis: (node.get("position") or {}).get(axis) for axis in ("x", "y")},
            }
            for node in graph.get("nodes") or []
        ],
        "edges": [
            {"source": edge["source"], "target": edge["target"], "source_handle": edge.get("source_handle") or None}
            for edge in graph.get("edges") or []
        ],
    }


def _unstorable_issues(graph: dict) -> list[GraphIssue]:
    """NUL characters, which PostgreSQL cannot store, and coordinates that are not JSON numbers."""
    issues = []
    for index, node in enumerate(graph["nodes"]):
        for field in ("name", "config", "error_policy"):
            if json_has_nul(node[field]):
                issues.append(GraphIssue(node["id"], f"nodes[{index}].{field}", "Must not contain NUL characters."))
        for axis, value in node["position"].items():
            if value is not None and not math.isfinite(value):
                issues.append(GraphIssue(node["id"], f"nodes[{index}].position.{axis}", "Must be a finite number."))
    return issues


def _graph_replace(*, workflow: Workflow, graph: dict) -> None:
    """Replace the draft's Node and Edge rows with ``graph`` (already cleaned), in the caller's transaction."""
    Edge.objects.filter(workflow=workflow).delete()
    Node.objects.filter(workflow=workflow).delete()
    nodes = Node.objects.bulk_create(
        Node(
            workflow=workflow,
            key=node["id"],
            type=node["type"],
            name=node["name"],
            config=node["config"],
            error_policy=node["error_policy"],
            cache=node.get("cache"),
            position_x=node["position"]["x"],
            position_y=node["position"]["y"],
        )
        for node in graph["nodes"]
    )
    node_by_key = {node.key: node for node in nodes}
    edges = []
    for index, edge in enumerate(graph["edges"]):
        ends = []
        for end in ("source", "target"):
            if edge[end] not in node_by_key:
                raise GraphInvalid([GraphIssue(edge[end], f"edges[{index}].{end}", f"Edge {end} is not a node.")])
            ends.append(node_by_key[edge[end]])
        edges.append(
            Edge(workflow=workflow, source_node=ends[0], target_node=ends[1], source_handle=edge["source_handle"] or "")
        )
    Edge.objects.bulk_create(edges)
    # The caller's instance may hold prefetched rows of the old draft.
    getattr(workflow, "_prefetched_objects_cache", {}).pop("nodes", None)
    getattr(workflow, "_prefetched_objects_cache", {}).pop("edges", None)


def workflow_create(
    *,
    owner,
    name: str,
    description: str = "",
    graph: dict | None = None,
    source: str = Workflow.Source.NATIVE,
    source_template=None,
) -> Workflow:
    """Create a workflow owned by ``owner``, with ``graph`` as its draft (empty when None), within their quota."""
    cleaned = graph_clean(graph, owner=owner) if graph is not None else None
    workflow = Workflow(owner=owner, name=name, description=description, source=source, source_template=source_template)
    workflow.full_clean(validate_unique=False, validate_constraints=False)
    with transaction.atomic():
        workflow_quota_check(owner=owner)
        workflow.save()
        if cleaned is not None:
            _graph_replace(workflow=workflow, graph=cleaned)
    return workflow


def workflow_retries_set(*, workflows, enabled: bool, operator) -> int:
    """An operator switches retries from failure on or off for ``workflows``; audited per workflow changed."""
    changed = 0
    with transaction.atomic():
        for workflow in workflows.select_for_update().exclude(retries_enabled=enabled):
            workflow.retries_enabled = enabled
            workflow.save(update_fields=["retries_enabled", "updated_at"])
            audit_log_record(
                actor=operator,
                action="workflow.retries_enable" if enabled else "workflow.retries_disable",
                target=workflow,
                before={"retries_enabled": not enabled},
                after={"retries_enabled": enabled},
            )
            changed += 1
    return changed


def workflow_update(
    *,
    workflow: Workflow,
    user,
    name: str = _UNSET,
    description: str = _UNSET,
    graph: dict = _UNSET,
) -> Workflow:
    """Change the given fields of a workflow; a new graph replaces the whole draft at once."""
    _require_role(workflow=workflow, user=user, roles=CAN_EDIT)
    cleaned = graph_clean(graph, owner=workflow.owner) if graph is not _UNSET else None
    changed = []
    for field, value in (("name", name), ("description", description)):
        if value is not _UNSET:
            setattr(workflow, field, value)
            changed.append(field)
    workflow.full_clean(exclude=["owner", "source_template"], validate_unique=False, validate_constraints=False)
    with transaction.atomic():
        # One draft writer at a time: two graph replacements must not interleave.
        Workflow.objects.select_for_update().filter(pk=workflow.pk).values_list("pk").get()
        if cleaned is not None:
            _graph_replace(workflow=workflow, graph=cleaned)
        workflow.save(update_fields=[*changed, "updated_at"])
    return workflow


def workflow_delete(*, workflow: Workflow, user, as_operator: bool = False) -> None:
    """Delete a workflow with its draft, versions, runs and schedules; not while a run is active.

    Only a manager may do it, or an operator in the admin (``as_operator``)."""
    if not as_operator:
        _require_role(workflow=workflow, user=user, roles=CAN_MANAGE)
    with transaction.atomic():
        Workflow.objects.select_for_update().filter(pk=workflow.pk).values_list("pk").get()
        if Run.objects.filter(workflow=workflow, status__in=[RunStatus.PENDING, RunStatus.RUNNING]).exists():
            raise Conflict("This workflow has runs in progress; cancel them first.", code="runs_in_progress")
        audit_log_record(actor=user, action="workflow.delete", target=workflow, before=_workflow_access(workflow))
        workflow.delete()


def _workflow_access(workflow: Workflow) -> dict:
    """Who could use the workflow, for the audit row of its deletion (members and app licenses go with it)."""
    return {
        "name": workflow.name,
        "owner": workflow.owner_id,
        "status": workflow.status,
        "versions": workflow.versions.count(),
        "schedules": workflow.schedules.count(),
        "members": [
            {"user": user_id, "role": role}
            for user_id, role in workflow.members.order_by("user_id").values_list("user_id", "role")
        ],
        "licenses": [
            {"app": app_id, "status": status}
            for app_id, status in workflow.licenses.order_by("app_id").values_list("app_id", "status")
        ],
    }


def _require_role(*, workflow: Workflow, user, roles) -> str:
    role = workflow_role_for_user(workflow=workflow, user=user)
    if role is None:
        raise NotFound("No such workflow.")
    if role not in roles:
        raise Forbidden(f"Your role ({role}) does not allow this on this workflow.")
    return role


def workflow_member_set(*, workflow: Workflow, actor, user, role: str, as_operator: bool = False) -> WorkflowMember:
    """Give ``user`` the ``role`` on ``workflow`` (add or change).

    Only an owner may do it, or an operator in the admin (``as_operator``), whose change is
    audited the same way.
    """
    if not as_operator:
        _require_role(workflow=workflow, user=actor, roles=CAN_MANAGE)
    if role not in WorkflowMemberRole.values:
        raise InvalidInput(f"Unknown role; one of {', '.join(WorkflowMemberRole.values)}.", field="role")
    if user.pk == workflow.owner_id:
        raise InvalidInput("The workflow's owner is always its owner; they need no member row.", field="user")
    with transaction.atomic():
        member = WorkflowMember.objects.select_for_update().filter(workflow=workflow, user=user).first()
        if member is None:
            member = WorkflowMember.objects.create(workflow=workflow, user=user, role=role)
            audit_log_record(
                actor=actor,
                action="workflow.member_add",
                target=workflow,
                after={"user": user.pk, "role": role},
            )
        elif member.role != role:
            before = member.role
            member.role = role
            member.save(update_fields=["role"])
            audit_log_record(
                actor=actor,
                action="workflow.member_role_change",
                target=workflow,
                before={"user": user.pk, "role": before},
                after={"user": user.pk, "role": role},
            )
    return member


def workflow_member_remove(*, workflow: Workflow, actor, user, as_operator: bool = False) -> None:
    """Take away ``user``'s access to ``workflow``; only an owner (or an operator) may do it."""
    if not as_operator:
        _require_role(workflow=workflow, user=actor, roles=CAN_MANAGE)
    with transaction.atomic():
        member = WorkflowMember.objects.select_for_update().filter(workflow=workflow, user=user).first()
        if member is None:
            raise NotFound("This user is not a member of the workflow.", field="user")
        member.delete()
        audit_log_record(
            actor=actor,
            action="workflow.member_remove",
            target=workflow,
            before={"user": user.pk, "role": member.role},
        )
