"""Ending a run that no worker holds, and metering a run that ended.

A run executing on a worker ends there (its journal writes the final status). A run no worker
holds (a pending run cancelled, a run whose worker is gone for good, a run over its duration
quota) is ended here, under a guard on its current state so that it ends once, with its final
event published after commit.
"""

import logging

from asgiref.sync import async_to_sync
from django.db import transaction
from django.db.models import F, Q

from observability.metrics import runs_finished_count
from workflows import usage
from workflows.models import Run, RunEvent, RunStatus, Task, TaskStatus

from . import live
from .journal import OPEN_TASK_STATUSES
from .signals import run_ended_send

logger = logging.getLogger(__name__)


def run_close(*, run_id, guard: Q, status: str, now, error: str = "") -> bool:
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
    transaction.on_commit(lambda: run_ended_send(run_id=run_id, workflow_id=workflow_id, status=status))
    return True


def _publish_now(*, workflow_id, message: dict) -> None:
    async_to_sync(live.publish)(workflow_id=workflow_id, message=message)


def run_usage_record(*, run_id, graph: dict | None = None) -> None:
    """Meter a finished run (its ``graph``, when the caller has it, may spare a read); a failure here
    is logged and never touches the run."""
    try:
        if graph is None:
            usage.usage_record_for_run(run_id=run_id)
        else:
            usage.usage_record_ended(run_id=run_id, graph=graph)
    except Exception:
        logger.exception("Could not record the usage of run %s; the run is unaffected.", run_id)
