"""Starting, cancelling, waiting for, executing and reaping runs."""

import asyncio
import functools
import logging
import os
import socket
import uuid
from datetime import timedelta

from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from accounts.quotas import run_quota_reserve, runs_over_duration
from config.errors import Conflict, InvalidInput
from observability.metrics import runs_finished_count
from observability.runs import run_observed
from observability.tracing import trace_id_for_new_run
from workflows.engine import validate_graph
from workflows.engine.conf import engine_settings
from workflows.engine.executor import RunExecutor
from workflows.engine.nodes import get_node_type
from workflows.models import (
    RUN_FINAL_STATUSES,
    Flow,
    Run,
    RunEvent,
    RunStatus,
    RunTrigger,
    Task,
    TaskStatus,
    Workflow,
)
from workflows.selectors import workflow_graph
from workflows.services import GraphInvalid

from . import live
from .journal import OPEN_TASK_STATUSES, DatabaseJournal, leases_release

logger = logging.getLogger(__name__)


def run_start(
    *,
    workflow: Workflow,
    user,
    inputs: dict,
    trigger: str = RunTrigger.MANUAL,
    flow: Flow | None = None,
    graph: dict | None = None,
    **extra,
) -> Run:
    """Create a pending run of ``workflow`` (its draft, ``flow``'s release, or ``graph``) and dispatch it.

    The graph is validated and frozen into the run; ``inputs`` are checked against the start
    node's declared inputs (a 400 naming ``inputs.<name>``). ``extra`` are further Run fields
    (app, schedule, scheduled_tick, chat_id, agent, version). The run is dispatched after commit.
    """
    if graph is None:
        graph = flow.release_data if flow is not None else workflow_graph(workflow=workflow)
    issues = validate_graph(graph)
    if issues:
        raise GraphInvalid(issues, "The workflow's graph is not valid; fix it before running it.")
    cleaned = run_inputs_clean(graph=graph, inputs=inputs)
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
        transaction.on_commit(lambda: run_dispatch(run_id=run.pk), robust=True)
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


def run_dispatch(*, run_id: uuid.UUID) -> None:
    """Hand the run to a worker: a Celery task with Redis, the embedded engine without."""
    if settings.EMBEDDED:
        from .embedded import embedded_engine

        embedded_engine.submit(run_id)
    else:
        from workflows.tasks import run_execute_task

        run_execute_task.delay(str(run_id))


def run_cancel(*, run: Run, user) -> Run:
    """Cancel ``run``: a pending run ends at once; a running one is told to stop (its worker ends it).

    Cancelling a cancelled run changes nothing; a run that succeeded or failed is a Conflict.
    """
    with transaction.atomic():
        now = timezone.now()
        ended = _run_close(run_id=run.pk, guard=Q(status=RunStatus.PENDING), status=RunStatus.CANCELLED, now=now)
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
    timeout = engine_settings.WAIT_TIMEOUT_S if timeout is None else timeout
    async_to_sync(run_end_awaited)(run_id=run.pk, timeout=timeout)
    run.refresh_from_db()
    return run


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


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


#: The lease owners of the runs this process is executing (``runs_hand_back`` releases them).
_executing: set[str] = set()


async def run_execute(*, run_id: uuid.UUID | str) -> str | None:
    """Claim the run and execute it to its end here; the final status ("lost": its lease was lost or handed
    back, it stopped), or None if it was not claimable."""
    journal = DatabaseJournal(run_id=uuid.UUID(str(run_id)), owner=worker_name())
    _executing.add(journal.owner)
    try:
        run = await journal.claim()
        if run is None:
            return None
        system = {
            "run_id": str(run.pk),
            "workflow_id": str(run.workflow_id),
            "user_id": run.triggered_by_id,
            "trigger": run.trigger,
            "created_at": run.created_at.isoformat(),
        }
        with run_observed(run=run, journal=journal) as observed:
            executor = RunExecutor(
                graph=run.graph, inputs=run.inputs, system=system, journal=observed, resumed=run.last_seq > 0
            )
            result = await executor.run()
        if result.status in RUN_FINAL_STATUSES:
            # Metered on the run's own database thread and connection, once its end is committed.
            await journal.on_thread(functools.partial(run_usage_record, run_id=run.pk))
    finally:
        _executing.discard(journal.owner)
        await journal.close()
    return result.status


def runs_hand_back() -> list[uuid.UUID]:
    """This process is shutting down: release the leases of the runs it executes (they stop at their next
    heartbeat, the nodes that succeeded stay done); their ids, to dispatch them again."""
    return leases_release(owners=list(_executing))


def runs_reap(*, now=None) -> dict[str, int]:
    """Recover runs whose worker is gone: resume them elsewhere, or end them once their attempts are spent.

    A running run with an expired lease is cancelled if a cancel was requested, failed with a
    reason after MAX_DISPATCH_ATTEMPTS claims, else released and dispatched again. A pending run
    held by a worker whose hold expired (the worker died with its message, workflows.execution.holds)
    is dispatched again, as is a run still pending long after its last update (its dispatch was
    lost). A run running for longer than its user's quota allows is failed (its worker sees it and
    stops).
    """
    now = now or timezone.now()
    counts = {"resumed": 0, "failed": 0, "cancelled": 0, "redispatched": 0}
    for run_id, error in runs_over_duration(now=now):
        with transaction.atomic():
            running = Q(status=RunStatus.RUNNING)
            counts["failed"] += _run_close(run_id=run_id, guard=running, status=RunStatus.FAILED, error=error, now=now)
    expired = Q(status=RunStatus.RUNNING) & (Q(lease_expires_at__lt=now) | Q(lease_expires_at__isnull=True))
    grace = timedelta(seconds=engine_settings.REDISPATCH_GRACE_S)
    for run_id, attempts, cancel in Run.objects.filter(expired).values_list(
        "pk", "dispatch_attempts", "cancel_requested"
    ):
        with transaction.atomic():
            if cancel:
                counts["cancelled"] += _run_close(run_id=run_id, guard=expired, status=RunStatus.CANCELLED, now=now)
            elif attempts >= engine_settings.MAX_DISPATCH_ATTEMPTS:
                error = f"The run's worker was lost {attempts} times; it was not resumed again."
                counts["failed"] += _run_close(
                    run_id=run_id, guard=expired, status=RunStatus.FAILED, error=error, now=now
                )
            elif Run.objects.filter(expired, pk=run_id).update(
                lease_owner="", lease_expires_at=now + grace, updated_at=now
            ):
                counts["resumed"] += 1
                transaction.on_commit(lambda run_id=run_id: run_dispatch(run_id=run_id), robust=True)
    counts["redispatched"] += _runs_held_by_the_dead_redispatch(now=now)
    stale = now - timedelta(seconds=engine_settings.PENDING_REDISPATCH_S)
    for run_id in Run.objects.filter(status=RunStatus.PENDING, updated_at__lt=stale).values_list("pk", flat=True):
        with transaction.atomic():
            if Run.objects.filter(pk=run_id, status=RunStatus.PENDING, updated_at__lt=stale).update(updated_at=now):
                counts["redispatched"] += 1
                transaction.on_commit(lambda run_id=run_id: run_dispatch(run_id=run_id), robust=True)
    return counts


def _runs_held_by_the_dead_redispatch(*, now) -> int:
    """Dispatch again the pending runs whose worker's hold expired; how many."""
    dead = Q(status=RunStatus.PENDING, lease_expires_at__lt=now) & ~Q(lease_owner="")
    count = 0
    for run_id in Run.objects.filter(dead).values_list("pk", flat=True):
        with transaction.atomic():
            if Run.objects.filter(dead, pk=run_id).update(lease_owner="", lease_expires_at=None, updated_at=now):
                count += 1
                transaction.on_commit(lambda run_id=run_id: run_dispatch(run_id=run_id), robust=True)
    return count


def _run_close(*, run_id, guard: Q, status: str, now, error: str = "") -> bool:
    """End a run no worker holds (guarded by ``guard``), with its final event; call inside a transaction."""
    closed = Run.objects.filter(guard, pk=run_id).update(
        status=status,
        error=error,
        finished_at=now,
        updated_at=now,
        lease_owner="",
        lease_expires_at=None,
        cancel_requested=status == RunStatus.CANCELLED,
        last_seq=F("last_seq") + 1,
    )
    if not closed:
        return False
    seq, workflow_id = Run.objects.filter(pk=run_id).values_list("last_seq", "workflow_id").get()
    data = {"error": error} if error else {}
    event = RunEvent.objects.create(run_id=run_id, seq=seq, type=f"run.{status}", node_id="", data=data, at=now)
    Task.objects.filter(run_id=run_id, status__in=OPEN_TASK_STATUSES).update(
        status=TaskStatus.CANCELLED, finished_at=now
    )
    message = live.event_message(run_id=run_id, seq=seq, event_type=event.type, node_id="", data=data, at=now)
    transaction.on_commit(lambda: _publish_now(workflow_id=workflow_id, message=message), robust=True)
    transaction.on_commit(lambda: run_usage_record(run_id=run_id))
    transaction.on_commit(lambda: runs_finished_count(status=status))
    return True


def _publish_now(*, workflow_id, message: dict) -> None:
    async_to_sync(live.publish)(workflow_id=workflow_id, message=message)


def run_usage_record(*, run_id) -> None:
    """Meter a finished run (one usage_metrics row); a failure here is logged and never touches the run."""
    try:
        from history.usage import usage_record_for_run
    except ImportError:  # history.usage is not there yet
        logger.warning("history.usage.usage_record_for_run is missing; run %s was not metered.", run_id)
        return
    try:
        usage_record_for_run(run_id=run_id)
    except Exception:
        logger.exception("Could not record the usage of run %s; the run is unaffected.", run_id)
