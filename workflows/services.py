"""Writes to workflows: create, edit the draft graph, delete, share with members.

Schedules have their own services in ``workflows.schedules.services``.
"""

import math
import re

from django.db import transaction
from django_celery_beat.models import PeriodicTask

from accounts.quotas import workflow_quota_check
from config.errors import Conflict, Forbidden, InvalidInput, NotFound
from history.services import audit_log_record

from .engine import GraphIssue, validate_graph
from .models import Edge, Node, Run, RunStatus, ScheduledWorkflow, Workflow, WorkflowMember, WorkflowMemberRole
from .permissions import CAN_EDIT, CAN_MANAGE
from .selectors import workflow_role_for_user

# Node ids, edge ends and source handles are identifiers, so that ``{{ id.field }}`` can name them.
DSL_KEY_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
DSL_KEY_MAX_LENGTH = 64
NODE_TYPE_MAX_LENGTH = 50
NODE_NAME_MAX_LENGTH = 255
MAX_NODES = 5000
MAX_EDGES = 10000
NODE_FIELDS = {"id", "type", "name", "config", "error_policy", "position"}
EDGE_FIELDS = {"source", "target", "source_handle"}
GRAPH_FIELDS = {"nodes", "edges"}

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


def _short(value) -> str:
    text = str(value)
    return text if len(text) <= 64 else f"{text[:61]}..."


def _key_problem(value, *, required: bool = True) -> str | None:
    if value is None or value == "":
        return "This field is required." if required else None
    if not isinstance(value, str):
        return "Must be a string."
    if len(value) > DSL_KEY_MAX_LENGTH:
        return f"At most {DSL_KEY_MAX_LENGTH} characters."
    if not DSL_KEY_PATTERN.fullmatch(value):
        return "Must be an identifier: letters, digits and '_', not starting with a digit."
    return None


def _unknown_fields(obj: dict, known: set[str], prefix: str, node: str | None) -> list[GraphIssue]:
    return [GraphIssue(node, f"{prefix}.{_short(key)}", "Unknown field.") for key in sorted(set(obj) - known, key=str)]


def _coordinate_problem(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return "Must be a finite number or null."
    return None


def _node_clean(raw, index: int, issues: list[GraphIssue]) -> dict | None:
    prefix = f"nodes[{index}]"
    if not isinstance(raw, dict):
        issues.append(GraphIssue(None, prefix, "Each node must be an object."))
        return None
    count = len(issues)
    node_id = raw.get("id")
    id_problem = _key_problem(node_id)
    node = None if id_problem else node_id
    if id_problem:
        issues.append(GraphIssue(None, f"{prefix}.id", id_problem))
    issues.extend(_unknown_fields(raw, NODE_FIELDS, prefix, node))
    node_type = raw.get("type")
    if not isinstance(node_type, str) or not node_type:
        issues.append(GraphIssue(node, f"{prefix}.type", "A node type (a string) is required."))
    elif len(node_type) > NODE_TYPE_MAX_LENGTH:
        issues.append(GraphIssue(node, f"{prefix}.type", f"At most {NODE_TYPE_MAX_LENGTH} characters."))
    elif not DSL_KEY_PATTERN.fullmatch(node_type):
        issues.append(GraphIssue(node, f"{prefix}.type", f"Unknown node type {_short(node_type)!r}."))
    name = raw.get("name")
    if name is None:
        name = ""
    elif not isinstance(name, str):
        issues.append(GraphIssue(node, f"{prefix}.name", "Must be a string."))
    elif len(name) > NODE_NAME_MAX_LENGTH:
        issues.append(GraphIssue(node, f"{prefix}.name", f"At most {NODE_NAME_MAX_LENGTH} characters."))
    elif "\x00" in name:
        issues.append(GraphIssue(node, f"{prefix}.name", "Must not contain NUL characters."))
    for field in ("config", "error_policy"):
        if raw.get(field) is not None and not isinstance(raw[field], dict):
            issues.append(GraphIssue(node, f"{prefix}.{field}", "Must be an object."))
        elif json_has_nul(raw.get(field)):
            issues.append(GraphIssue(node, f"{prefix}.{field}", "Must not contain NUL characters."))
    position = raw.get("position")
    x = y = None
    if position is not None:
        if not isinstance(position, dict):
            issues.append(GraphIssue(node, f"{prefix}.position", 'Must be an object {"x", "y"} or null.'))
        else:
            issues.extend(_unknown_fields(position, {"x", "y"}, f"{prefix}.position", node))
            x, y = position.get("x"), position.get("y")
            for axis, value in (("x", x), ("y", y)):
                if problem := _coordinate_problem(value):
                    issues.append(GraphIssue(node, f"{prefix}.position.{axis}", problem))
    if len(issues) > count:
        return None
    return {
        "id": node_id,
        "type": node_type,
        "name": name,
        "config": raw.get("config") or {},
        "error_policy": raw.get("error_policy") or {},
        "position": {"x": x, "y": y},
    }


def _edge_clean(raw, index: int, issues: list[GraphIssue]) -> dict | None:
    prefix = f"edges[{index}]"
    if not isinstance(raw, dict):
        issues.append(GraphIssue(None, prefix, "Each edge must be an object."))
        return None
    count = len(issues)
    issues.extend(_unknown_fields(raw, EDGE_FIELDS, prefix, None))
    for end in ("source", "target"):
        if problem := _key_problem(raw.get(end)):
            issues.append(GraphIssue(None, f"{prefix}.{end}", problem))
    handle = raw.get("source_handle")
    if problem := _key_problem(handle, required=False):
        source = raw.get("source") if isinstance(raw.get("source"), str) else None
        issues.append(GraphIssue(source, f"{prefix}.source_handle", problem))
    if len(issues) > count:
        return None
    return {"source": raw["source"], "target": raw["target"], "source_handle": handle or None}


def graph_clean(graph, *, owner=None) -> dict:
    """Check a DSL graph's shape, then validate it with the engine; return it normalised.

    Junk (a list where an object belongs, a node without id, an overlong key) is reported
    field by field before the engine sees the graph, so the engine only reads well-formed
    documents. With ``owner``, tool and agent nodes must name tools and agents the owner's
    workflows may use. Raises GraphInvalid with every issue found.
    """
    if not isinstance(graph, dict):
        raise GraphInvalid([GraphIssue(None, "graph", "The graph must be an object with nodes and edges.")])
    issues = _unknown_fields(graph, GRAPH_FIELDS, "graph", None)
    lists = {}
    for field, limit in (("nodes", MAX_NODES), ("edges", MAX_EDGES)):
        value = graph.get(field)
        if value is None:
            value = []
        if not isinstance(value, list):
            issues.append(GraphIssue(None, field, f"Must be a list of {field[:-1]} objects."))
            value = []
        elif len(value) > limit:
            issues.append(GraphIssue(None, field, f"At most {limit} {field}."))
            value = []
        lists[field] = value
    nodes = [_node_clean(raw, index, issues) for index, raw in enumerate(lists["nodes"])]
    edges = [_edge_clean(raw, index, issues) for index, raw in enumerate(lists["edges"])]
    seen_edges = set()
    for index, edge in enumerate(edges):
        if edge is None:
            continue
        identity = (edge["source"], edge["target"], edge["source_handle"] or "")
        if identity in seen_edges:
            issues.append(GraphIssue(edge["source"], f"edges[{index}]", "Duplicate edge."))
        seen_edges.add(identity)
    if issues:
        raise GraphInvalid(issues)
    cleaned = {"nodes": nodes, "edges": edges}
    if nodes or edges:
        # An empty draft is always allowed: it is where every workflow starts.
        issues = validate_graph(cleaned)
        if owner is not None:
            from agents.tools_runtime import workflow_tools_issues

            issues += workflow_tools_issues(graph=cleaned, owner=owner)
    if issues:
        raise GraphInvalid(issues)
    return cleaned


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
        # The schedules go with the workflow; their beat entries are not linked by a cascade.
        PeriodicTask.objects.filter(
            pk__in=ScheduledWorkflow.objects.filter(workflow=workflow).values("periodic_task")
        ).delete()
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
