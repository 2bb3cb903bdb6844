"""Retrying a run from its failure: a new run that reuses what succeeded in the failed one.

:func:`run_retry` creates a run linked to the original (``retry_of``) and, in the same transaction,
a task row for each node execution that succeeded in the original (its output and attempt, the
iterations' items included), then dispatches it as any run. The engine reads those rows as a
resumed run reads its own (``Journal.completed``): a succeeded node is not executed again, its
stored output is passed on; the failed node, the skipped ones and those that never ran execute.
No node with effects that succeeded in the original runs again. A copied row has no events of its
own (``events`` is empty: they are the original's) and its ``description`` names the original
run: that tells it from a node execution of the retry.

A retry is never executed by the web process that starts it (``run_start``'s ``in_request``): that
path takes a run with no task rows (``DatabaseJournal.adopt``); a retry is claimed as any
dispatched run, and the claim sees its rows.

The retry runs the original's frozen graph (``"same"``), or the workflow's current draft
(``"current"``) when every succeeded node, and each node containing it (an iteration), has the
same id, type and config in it: otherwise a Conflict naming the nodes that differ. A succeeded
node is reused whatever changed around it (a node upstream that now runs again, an edge).
"""

from django.db import transaction

from config.errors import Conflict, Forbidden
from workflows.engine import get_node_type, validate_graph
from workflows.models import Run, RunStatus, Task, TaskStatus, Workflow
from workflows.selectors import workflow_graph
from workflows.services import GraphInvalid

from .large_outputs import stored_outputs_copy
from .services import run_start

#: The graph a retry runs: the original run's own, or the workflow's current draft.
RETRY_GRAPH_SAME = "same"
RETRY_GRAPH_CURRENT = "current"
RETRY_GRAPHS = (RETRY_GRAPH_SAME, RETRY_GRAPH_CURRENT)

#: Only a run that ended without succeeding is retried.
RETRYABLE_STATUSES = (RunStatus.FAILED, RunStatus.CANCELLED)

#: The fields of a succeeded task row that its copy in the retry keeps.
_COPIED_FIELDS = (
    "agent_id",
    "node_id",
    "node_type",
    "scope",
    "name",
    "input_data",
    "output_data",
    "attempt",
    "retry_count",
    "started_at",
    "finished_at",
)


class RetryGraphChanged(Conflict):
    """Nodes that succeeded in the run differ in the current draft: their outputs cannot be reused."""

    default_code = "retry_graph_changed"


def run_retry(*, run: Run, workflow: Workflow, user, graph: str = RETRY_GRAPH_SAME) -> Run:
    """Start a run of ``workflow`` that retries ``run`` (failed or cancelled) from its failure.

    ``graph``: ``"same"`` (the run's frozen graph and version) or ``"current"`` (the draft). The new
    run has ``run``'s inputs and conversation (app, chat, end user), is started by ``user`` and
    counts against ``user``'s quotas as any run. A Conflict when ``run`` has not failed or was not
    cancelled (``run_not_retryable``), or when a succeeded node differs in the draft
    (``retry_graph_changed``, with ``nodes``); an InvalidInput when the draft is not valid.
    """
    if not workflow.retries_enabled:
        raise Forbidden("An operator has switched off retries of this workflow's runs.", code="retries_disabled")
    if run.status not in RETRYABLE_STATUSES:
        raise Conflict(
            f"Only a failed or cancelled run can be retried; this one is {run.status}.", code="run_not_retryable"
        )
    succeeded = list(Task.objects.filter(run=run, status=TaskStatus.SUCCEEDED).values(*_COPIED_FIELDS))
    if graph == RETRY_GRAPH_CURRENT:
        chosen = workflow_graph(workflow=workflow)
        issues = validate_graph(chosen)
        if issues:
            raise GraphInvalid(issues, "The workflow's graph is not valid; fix it before running it.")
        changed = _changed_nodes(original=run.graph, current=chosen, tasks=succeeded)
        if changed:
            raise RetryGraphChanged(
                "These nodes succeeded in the run but differ in the current draft, so their outputs cannot be "
                f"reused: {', '.join(changed)}. Retry with the same graph, or start a new run.",
                field="graph",
                nodes=changed,
            )
        flow, version = None, ""
    else:
        chosen, flow, version = run.graph, run.flow, run.version
    with transaction.atomic():
        # run_start dispatches on commit: after the copies below are committed with the run.
        retry = run_start(
            workflow=workflow,
            user=user,
            inputs=run.inputs,
            graph=chosen,
            flow=flow,
            version=version,
            retry_of=run,
            app_id=run.app_id,
            agent_id=run.agent_id,
            chat_id=run.chat_id,
            uid=run.uid,
        )
        succeeded = stored_outputs_copy(tasks=succeeded, run=run, to=retry)  # each run's objects go with it
        reused = f"Reused from run {run.pk}: not executed again."
        Task.objects.bulk_create(
            [Task(run=retry, status=TaskStatus.SUCCEEDED, description=reused, events=[], **task) for task in succeeded]
        )
    return retry


def _changed_nodes(*, original: dict, current: dict, tasks: list[dict]) -> list[str]:
    """The succeeded nodes (``tasks``) that ``current`` does not define as ``original`` did, named by their
    path (``each/call`` for a node of iteration ``each``'s sub-graph), sorted."""
    changed = set()
    for task in tasks:
        containers = _containers(task["scope"])
        before = _definition(original, containers, task["node_id"])
        if before is None or before != _definition(current, containers, task["node_id"]):
            changed.add("/".join([*containers, task["node_id"]]))
    return sorted(changed)


def _containers(scope: str) -> list[str]:
    """The ids of the nodes whose sub-graphs hold a task of ``scope`` (``"a[0]/b[2]"`` → ``["a", "b"]``)."""
    return [part.split("[", 1)[0] for part in scope.split("/")] if scope else []


def _definition(graph: dict, containers: list[str], node_id: str) -> list[tuple] | None:
    """(id, type, config) of the node ``node_id`` in ``graph``, inside ``containers``, and of each of its
    containers; None if any of them is not there."""
    found = []
    graphs = [graph]
    for wanted in [*containers, node_id]:
        node = next(
            (node for level in graphs for node in level.get("nodes", []) if node.get("id") == wanted),
            None,
        )
        if node is None:
            return None
        config = node.get("config") or {}
        found.append((wanted, node.get("type"), config))
        node_type = get_node_type(node.get("type"))
        graphs = [sub for _, sub, _ in node_type.subgraphs(config)] if node_type is not None else []
    return found
