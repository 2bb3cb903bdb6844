"""Runs as the API sees them: start one, cancel one, wait for one to end.

What executes a run is :mod:`~workflows.execution.runner`; who it is handed to,
:mod:`~workflows.execution.dispatch`; the recovery of runs whose worker is gone,
:mod:`~workflows.execution.reaper`.
"""

import asyncio
import concurrent.futures
import time
from dataclasses import dataclass
from datetime import timedelta

from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from django.db import connection, transaction
from django.db.models import Prefetch, Q, QuerySet
from django.utils import timezone

from config.conf import weft_settings
from config.errors import Conflict, InvalidInput
from observability.tracing import trace_id_for_new_run
from workflows.engine import get_node_type, validate_graph
from workflows.models import RUN_FINAL_STATUSES, Run, RunStatus, RunTrigger, Task, Workflow, WorkflowVersion
from workflows.quotas import run_quota_reserve
from workflows.selectors import workflow_graph
from workflows.services import GraphInvalid

from . import live
from .dispatch import run_dispatch, run_here_possible
from .ending import run_close
from .journal import RunEnd
from .run_loop import request_run_loop
from .runner import worker_name


def run_start(
    *,
    workflow: Workflow,
    user,
    inputs: dict,
    trigger: str = RunTrigger.MANUAL,
    flow: WorkflowVersion | None = None,
    graph: dict | None = None,
    in_request: bool = False,
    **extra,
) -> Run:
    """Create a pending run of ``workflow`` (its draft, ``flow``'s release, or ``graph``) and dispatch it.

    The graph is validated and frozen into the run; ``inputs`` are checked against the start
    node's declared inputs (a 400 naming ``inputs.<name>``). ``extra`` are further Run fields
    (app, schedule, scheduled_tick, chat_id, agent, version). The run is dispatched after commit.

    ``in_request``: the caller serves a web request. A run of computing nodes then executes in this
    process (:func:`~workflows.execution.dispatch.run_here_possible`), whether the request waits for
    it or answers 202 at once: it needs no broker, and no worker.
    """
    if graph is None:
        graph = flow.release_data if flow is not None else workflow_graph(workflow=workflow)
    issues = validate_graph(graph)
    if issues:
        raise GraphInvalid(issues, "The workflow's graph is not valid; fix it before running it.")
    cleaned = run_inputs_clean(graph=graph, inputs=inputs)
    # A run this process executes itself is created leased to it: it needs no claim.
    here = in_request and run_here_possible(graph)
    if here:
        now = timezone.now()
        extra.update(
            status=RunStatus.RUNNING,
            lease_owner=worker_name(),
            lease_expires_at=now + timedelta(seconds=weft_settings.LEASE_TTL_S),
            dispatch_attempts=1,
            started_at=now,
        )
    with transaction.atomic(), run_quota_reserve(workflow=workflow, user=user):
        run = Run.objects.create(
            workflow=workflow,
            flow=flow,
            version=extra.pop("version", flow.version if flow is not None else ""),
            graph=graph,
            inputs=cleaned,
            trigger=trigger,
            triggered_by=user if getattr(user, "is_authenticated", False) else None,
            trace_id=trace_id_for_new_run(),
            **extra,
        )
        transaction.on_commit(lambda: run_dispatch(run_id=run.pk, claimed=run if here else None), robust=True)
    return run


def run_inputs_clean(*, graph: dict, inputs) -> dict:
    """The run's inputs with their defaults, or InvalidInput naming ``inputs.<name>``."""
    if not isinstance(inputs, dict):
        raise InvalidInput("Must be an object.", field="inputs")
    start = next(node for node in graph["nodes"] if node.get("type") == "start")
    cleaned, problems = get_node_type("start").clean_inputs(start.get("config") or {}, inputs)
    if problems:
        name, message = problems[0]
        raise InvalidInput(
            message,
            field=f"inputs.{name}",
            errors=[{"field": f"inputs.{name}", "message": text} for name, text in problems],
        )
    return cleaned


def run_cancel(*, run: Run, user) -> Run:
    """Cancel ``run``: a pending run ends at once; a running one is told to stop (its worker ends it).

    Cancelling a cancelled run changes nothing; a run that succeeded or failed is a Conflict.
    """
    with transaction.atomic():
        now = timezone.now()
        ended = run_close(run_id=run.pk, guard=Q(status=RunStatus.PENDING), status=RunStatus.CANCELLED, now=now)
        told = ended or Run.objects.filter(pk=run.pk, status=RunStatus.RUNNING).update(
            cancel_requested=True, updated_at=now
        )
        if not told:
            current = Run.objects.filter(pk=run.pk).values_list("status", flat=True).first()
            if current != RunStatus.CANCELLED:
                raise Conflict(f"The run has already {current}.", code="run_finished")
    run.refresh_from_db()
    return run


def run_wait(*, run: Run, timeout: float | None = None) -> Run:
    """Wait (at most ``timeout`` seconds) until ``run`` has finished; return it refreshed."""
    _run_end_wait(run_id=run.pk, timeout=timeout)
    run.refresh_from_db()
    return run


@dataclass(frozen=True)
class FinishedRun:
    """A run that has finished, as a request that waited for it answers it: ``tasks`` are its task rows as
    its journal in this process stored them (see ``RunEnd``), or None when ``run`` was read back with
    its ``tasks`` prefetched."""

    run: Run
    tasks: list[dict] | None = None


def run_wait_finished(*, run: Run, timeout: float | None = None, runs: QuerySet | None = None) -> FinishedRun | None:
    """Wait (at most ``timeout`` seconds) until ``run`` has finished: then the run with its tasks, else None.

    A run this process executed (a run it created, so its journal wrote every row) is answered from
    what its journal stored, with no read; another is read back from ``runs`` (a queryset of those
    the caller may see).
    """
    end = _run_end_wait(run_id=run.pk, timeout=timeout)
    if end is not None and end.tasks is not None:
        run.status, run.outputs, run.error, run.finished_at = end.status, end.outputs, end.error, end.finished_at
        return FinishedRun(run=run, tasks=end.tasks)
    runs = Run.objects.all() if runs is None else runs
    # What the answer shows, not the frozen graph nor each task's events; get() compiles no ordering.
    tasks = Prefetch("tasks", queryset=Task.objects.defer("events", "description", "input_data"))
    try:
        return FinishedRun(runs.defer("graph").prefetch_related(tasks).get(pk=run.pk, status__in=RUN_FINAL_STATUSES))
    except Run.DoesNotExist:
        return None


def _run_end_wait(*, run_id, timeout: float | None) -> RunEnd | None:
    """Wait until the run has ended or ``timeout`` passed; its end if its journal is in this process."""
    timeout = weft_settings.WAIT_TIMEOUT_S if timeout is None else timeout
    if connection.settings_dict["OPTIONS"].get("pool") and not connection.in_atomic_block:
        # Back to the pool while waiting: the run's journal (in this process, perhaps) needs one.
        connection.close()
    ended = request_run_loop.end_of(run_id)
    if ended is not None:  # executing in this process: woken when its end is committed
        started = time.monotonic()
        concurrent.futures.wait([ended], timeout=timeout)
        if ended.done():
            end = ended.result()
            if isinstance(end, RunEnd):
                return end
            if end in RUN_FINAL_STATUSES:
                return None
        timeout -= time.monotonic() - started
    if timeout > 0:  # executing elsewhere (or handed back meanwhile): its final event says when it ends
        async_to_sync(run_end_awaited)(run_id=run_id, timeout=timeout)
    return None


#: How often a wait reads the run's status, at most (it starts at 20 ms and doubles up to this).
WAIT_CHECK_MAX_S = 1.0


async def run_end_awaited(*, run_id, timeout: float) -> bool:
    """Whether the run finished within ``timeout`` seconds (returns as soon as it does).

    The run's final event comes through its channel-layer group the moment it is committed. The
    layer may drop a message, so the run's status is also read: at once, after joining the
    group, then at growing intervals.
    """
    loop = asyncio.get_running_loop()
    live.bind_consumer_loop(loop)
    deadline = loop.time() + timeout
    finished = database_sync_to_async(_run_is_finished)
    async with live.run_listening(run_id) as listener:
        pause = 0.02
        check_at = loop.time()
        while True:
            now = loop.time()
            if now >= check_at:
                if await finished(run_id):
                    return True
                check_at = loop.time() + pause
                pause = min(pause * 2, WAIT_CHECK_MAX_S)
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            message = await listener.receive(max(0.0, min(check_at, deadline) - loop.time()))
            if message is not None and any(live.is_final(payload["kind"]) for payload in live.payloads(message)):
                return True


def _run_is_finished(run_id) -> bool:
    return Run.objects.filter(pk=run_id, status__in=RUN_FINAL_STATUSES).exists()
