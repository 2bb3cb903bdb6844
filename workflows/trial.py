"""Trying one node of a workflow's draft: executed by the engine as in a run, stored nowhere but an audit row.

``node_try`` executes the node with the variables its templates would see in a run: ``start``
(the run's inputs) and the outputs of its ancestors by node id, as the caller gives them. The
engine's executor does the work, exactly as in a run (the node's timeout, the output checks, the
sandbox for code, the outbound guard for HTTP and models, sub-graphs for an iteration), over a
graph made for the try: the draft's start node, each ancestor of the node (whose given output is
replayed as if an earlier attempt had recorded it, or which counts as skipped when none is given,
as a branch not taken would), the node itself, and an end. Nothing of it is stored: no run, no
task, no event; only an audit row says who tried which node and how it ended.

A try is one attempt, bounded by the node's ``timeout_s`` (the engine's NODE_TIMEOUT_S when it
gives none) and by WAIT_TIMEOUT_S, the longest a request waits for a run. There is no retry and
the node's ``on_failure`` does not apply: the answer is the attempt's own outcome, and says
whether a run would have tried again (``retryable``). A try counts as a run start for the quotas
(``workflows.quotas``): it is refused when they are used up, and counts for the day's runs.
"""

import asyncio
import time
import uuid
from dataclasses import dataclass
from typing import Any

from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from config.conf import weft_settings
from config.errors import InvalidInput, NotFound, QuotaExceeded
from history.services import audit_log_record
from workflows.engine import MemoryJournal, NodePorts, RunExecutor, TaskRecord, get_node_type, validate_graph

from .execution.run_loop import request_run_loop
from .models import Run, RunStatus, Workflow
from .quotas import CONCURRENT_RETRY_AFTER_S, quota_limits, run_quota_reserve
from .selectors import workflow_graph
from .services import GraphInvalid

#: The audit action of a try.
NODE_TRY_ACTION = "workflow.node_try"
#: What an ancestor stands in for in the try's graph: never executed (its outcome is replayed).
_STUB_CODE = "def main():\n    return {}"
#: How much longer than the node's timeout the request waits for the engine to report it.
_GRACE_S = 5.0


@dataclass(frozen=True)
class NodeTrial:
    """How one try of a node ended: ``succeeded`` with its ``output``, or ``failed`` with its ``error``."""

    node: str
    type: str
    status: str
    output: dict | None
    error: dict | None
    duration_ms: float


class _RetryableFailure(Exception):
    """The attempt failed in a way a run would retry: the try ends there, without waiting for a retry."""

    def __init__(self, error: str):
        super().__init__(error)
        self.error = error


@dataclass
class _TrialJournal(MemoryJournal):
    """Keeps the try's events in memory, times the node, and ends the try at its first failure."""

    node_id: str = ""
    started: float | None = None
    ended: float | None = None

    async def record(self, event_type: str, node_id: str, data: dict, task=None, *, durable: bool = False) -> None:
        await super().record(event_type, node_id, data, task, durable=durable)
        if node_id != self.node_id or data.get("scope"):
            return
        if event_type == "node.started":
            self.started = time.monotonic()
        elif event_type in ("node.succeeded", "node.failed", "node.retrying"):
            self.ended = time.monotonic()
        if event_type == "node.retrying":
            raise _RetryableFailure(data["error"])

    def duration_ms(self) -> float:
        if self.started is None:
            return 0.0
        return round(((self.ended or time.monotonic()) - self.started) * 1000, 3)


def node_try(*, workflow: Workflow, user, node_id: str, inputs: Any) -> NodeTrial:
    """Execute node ``node_id`` of ``workflow``'s draft once with ``inputs``: ``{"start": {...}, "<ancestor>": {...}}``.

    Raises NotFound (``node_id``) when the draft has no such node, InvalidInput naming
    ``inputs.<key>`` for inputs the node cannot see, GraphInvalid for the node's own problems (as
    the validate endpoint reports them), QuotaExceeded when the user may start no run now.
    A node that fails is not an error here: the trial says how it failed.
    """
    draft = workflow_graph(workflow=workflow)
    nodes = {node["id"]: node for node in draft["nodes"]}
    if node_id not in nodes:
        raise NotFound(f"The workflow's draft has no node {node_id!r}.", field="node_id")
    target = nodes[node_id]
    start = next((node for node in draft["nodes"] if node["type"] == "start"), None)
    ancestors = _ancestors(draft, node_id)
    given = _inputs_checked(inputs, node_id=node_id, allowed=ancestors - {start["id"] if start else ""})
    given["start"] = _start_inputs(start, given.get("start", {}))
    timeout_s = _timeout(target)
    graph, previous = _trial_graph(
        target=target, start=start, nodes=nodes, ancestors=ancestors, given=given, timeout_s=timeout_s
    )
    issues = validate_graph(graph)
    if issues:
        raise GraphInvalid(issues, f"Node {node_id!r} cannot be tried as it is; fix it first.")
    _quotas_take(workflow=workflow, user=user)
    try_id = uuid.uuid4()
    system = {
        "run_id": str(try_id),
        "workflow_id": str(workflow.pk),
        "user_id": getattr(user, "pk", None),
        "trigger": "try",
        "created_at": timezone.now().isoformat(),
    }
    journal = _TrialJournal(previous=previous, node_id=node_id)
    outcome = _execute(
        graph=graph,
        start_inputs=given["start"],
        system=system,
        journal=journal,
        owner_id=workflow.owner_id,
        timeout_s=timeout_s,
    )
    trial = NodeTrial(node=node_id, type=target["type"], **outcome)
    audit_log_record(
        actor=user,
        action=NODE_TRY_ACTION,
        target=workflow,
        payload={
            "try": str(try_id),
            "node": node_id,
            "type": target["type"],
            "status": trial.status,
            "duration_ms": trial.duration_ms,
            **({"retryable": trial.error["retryable"]} if trial.error else {}),
        },
    )
    return trial


def _quotas_take(*, workflow: Workflow, user) -> None:
    """Count the try as a run start for the quotas, or QuotaExceeded naming the one used up.

    ``run_quota_reserve`` counts the run its block creates among the runs in flight; a try creates
    none, so it is refused here when the user's runs in flight already take every place.
    """
    user_id = user.pk if getattr(user, "is_authenticated", False) else workflow.owner_id
    limit = quota_limits(user_id=user_id).concurrent_runs
    in_flight = Run.objects.filter(
        Q(triggered_by_id=user_id) | Q(triggered_by__isnull=True, workflow__owner_id=user_id),
        status__in=[RunStatus.PENDING, RunStatus.RUNNING],
    ).count()
    if in_flight >= limit:
        raise QuotaExceeded(
            f"{limit} runs are pending or running, the most allowed at once (quota concurrent_runs); "
            "try the node when one of them has ended.",
            quota="concurrent_runs",
            limit=limit,
            retry_after=CONCURRENT_RETRY_AFTER_S,
        )
    with transaction.atomic(), run_quota_reserve(workflow=workflow, user=user):
        pass  # no run is created: the try takes its place in the day's runs


def _ancestors(graph: dict, node_id: str) -> set[str]:
    """The ids of every node with a path to ``node_id`` in ``graph``."""
    sources: dict[str, set[str]] = {}
    for edge in graph["edges"]:
        sources.setdefault(edge["target"], set()).add(edge["source"])
    found: set[str] = set()
    stack = [node_id]
    while stack:
        for source in sources.get(stack.pop(), ()):
            if source not in found and source != node_id:
                found.add(source)
                stack.append(source)
    return found


def _inputs_checked(inputs: Any, *, node_id: str, allowed: set[str]) -> dict[str, dict]:
    """``inputs`` if each key is ``start`` or an ancestor's id, with an object as its value; else InvalidInput."""
    if not isinstance(inputs, dict):
        raise InvalidInput('Must be an object: {"start": {...}, "<ancestor id>": {...}}.', field="inputs")
    for key, value in inputs.items():
        if key != "start" and key not in allowed:
            raise InvalidInput(
                f"{key!r} is not upstream of node {node_id!r}: give `start` and the outputs of its ancestors only.",
                field=f"inputs.{key}",
            )
        if not isinstance(value, dict):
            what = "the run's inputs" if key == "start" else f"the output of node {key!r}"
            raise InvalidInput(f"Must be an object: {what}.", field=f"inputs.{key}")
    return dict(inputs)


def _start_inputs(start: dict | None, given: dict) -> dict:
    """The run's inputs as a run would see them (defaults applied), or InvalidInput naming ``inputs.start.<name>``.

    A required input may be left out: the node may not read it (if it does, it fails as undefined).
    """
    if start is None:
        return given
    cleaned, problems = get_node_type("start").clean_inputs(start.get("config") or {}, given)
    for name, message in problems:
        if name in given:  # a value of the wrong type, or an input the start node does not declare
            raise InvalidInput(message, field=f"inputs.start.{name}")
    return cleaned


def _timeout(node: dict) -> float:
    """The node's timeout (the engine's default when it gives none), at most WAIT_TIMEOUT_S."""
    policy = node.get("error_policy")
    timeout_s = policy.get("timeout_s", weft_settings.NODE_TIMEOUT_S) if isinstance(policy, dict) else None
    if not isinstance(timeout_s, int | float) or isinstance(timeout_s, bool) or timeout_s <= 0:
        timeout_s = None  # no timeout: the request's bound
    return min(timeout_s or weft_settings.WAIT_TIMEOUT_S, weft_settings.WAIT_TIMEOUT_S)


def _trial_graph(
    *, target: dict, start: dict | None, nodes: dict, ancestors: set[str], given: dict, timeout_s: float
) -> tuple[dict, dict[tuple[str, str], TaskRecord]]:
    """The graph a try executes, and the outcomes the executor replays instead of executing them."""
    tried = {key: target[key] for key in ("id", "type", "name", "config") if target.get(key)}
    tried["error_policy"] = {
        "timeout_s": timeout_s,
        "retry": {"max_attempts": 2},  # a failure a run would retry is reported (_TrialJournal), then the try ends
        "on_failure": "fail",
    }
    if target is start:
        start_node = tried
    else:
        start_config = (start or {}).get("config") or {}
        start_node = {"id": start["id"] if start else "start", "type": "start", "config": start_config}
    graph_nodes = [start_node]
    edges = []
    previous: dict[tuple[str, str], TaskRecord] = {}
    if target is not start:
        previous[("", start_node["id"])] = TaskRecord("succeeded", 1, output=given.get("start", {}))
        for ancestor in sorted(ancestors - {start_node["id"]}):
            graph_nodes.append({"id": ancestor, "type": "code", "config": {"code": _STUB_CODE}})
            edges += [{"source": start_node["id"], "target": ancestor}, {"source": ancestor, "target": target["id"]}]
            output = given.get(ancestor)
            previous[("", ancestor)] = (
                TaskRecord("succeeded", 1, output=output) if output is not None else TaskRecord("skipped", 0)
            )
        graph_nodes.append(tried)
        edges.append({"source": start_node["id"], "target": target["id"]})
    if target["type"] != "end":
        end_id = _free_id("end", taken=nodes.keys() | {start_node["id"]})
        graph_nodes.append({"id": end_id, "type": "end"})
        edges.append({"source": start_node["id"], "target": end_id})
    return {"nodes": graph_nodes, "edges": edges}, previous


def _free_id(base: str, *, taken) -> str:
    candidate, n = base, 1
    while candidate in taken:
        n += 1
        candidate = f"{base}_{n}"
    return candidate


def _execute(
    *, graph: dict, start_inputs: dict, system: dict, journal: _TrialJournal, owner_id, timeout_s: float
) -> dict:
    """Run the try's graph on this process's request run loop and wait for it (bounded by the node's timeout)."""

    async def owner():
        return owner_id

    executor = RunExecutor(
        graph=graph, inputs=start_inputs, system=system, journal=journal, ports=NodePorts(owner_id=owner)
    )
    if connection.settings_dict["OPTIONS"].get("pool") and not connection.in_atomic_block:
        connection.close()  # back to the pool while waiting: a node may need one (an llm node reads its provider)
    future = asyncio.run_coroutine_threadsafe(_outcome(executor, journal), request_run_loop.start())
    try:
        return future.result(timeout=timeout_s + _GRACE_S)
    except TimeoutError:
        future.cancel()
        return _failed(f"The try did not end within {timeout_s:g} s.", retryable=True, journal=journal)


async def _outcome(executor: RunExecutor, journal: _TrialJournal) -> dict:
    try:
        await executor.run()
    except _RetryableFailure as failure:
        return _failed(failure.error, retryable=True, journal=journal)
    task = journal.tasks.get(("", journal.node_id))
    if task is not None and task.status == "succeeded":
        return {"status": "succeeded", "output": task.output, "error": None, "duration_ms": journal.duration_ms()}
    return _failed(task.error if task is not None else journal.error, retryable=False, journal=journal)


def _failed(error: str, *, retryable: bool, journal: _TrialJournal) -> dict:
    return {
        "status": "failed",
        "output": None,
        "error": {"code": "node_failed", "detail": error, "retryable": retryable},
        "duration_ms": journal.duration_ms(),
    }
