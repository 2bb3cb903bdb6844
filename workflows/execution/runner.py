"""Executing a run: claim it, run its graph through the engine, record its end.

The runner knows no transport: whoever hands it a run id (the server's run loop in embedded
mode, a Celery task thread on a worker) awaits :func:`run_execute` on a run loop
(:mod:`workflows.execution.run_loop`).
"""

import functools
import os
import socket
import uuid
from collections.abc import Callable

from observability.runs import run_observed
from workflows.engine import RunExecutor
from workflows.models import RUN_FINAL_STATUSES, Run
from workflows.usage import graph_uses_models

from .ending import run_usage_record
from .journal import DatabaseJournal, leases_release
from .node_cache import run_node_cache
from .ports import run_ports
from .signals import run_ended_send


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


#: The lease owners of the runs this process is executing (``runs_hand_back`` releases them).
_executing: set[str] = set()


async def run_execute(
    *, run_id: uuid.UUID | str, on_end: Callable[[str], None] | None = None, claimed: Run | None = None
) -> str | None:
    """Claim the run and execute it to its end here; the final status ("lost": its lease was lost or handed
    back, it stopped), or None if it was not claimable.

    ``on_end(status)`` is called as soon as the run's end is committed, before its metering.
    ``claimed``: the run as created already leased to this process (no claim to make).
    """
    owner = claimed.lease_owner if claimed is not None else worker_name()
    journal = DatabaseJournal(run_id=uuid.UUID(str(run_id)), owner=owner, on_end=on_end)
    _executing.add(journal.owner)
    try:
        run = journal.adopt(claimed) if claimed is not None else await journal.claim()
        if run is None:
            return None
        system = {
            "run_id": str(run.pk),
            "workflow_id": str(run.workflow_id),
            "user_id": run.triggered_by_id,
            "trigger": run.trigger,
            "created_at": run.created_at.isoformat(),
        }
        # A run that uses no model is metered by the statement that ends it, where the journal can.
        journal.meter_with_end = not graph_uses_models(run.graph)
        ports = run_ports(run)
        with run_observed(run=run, journal=journal) as observed:
            executor = RunExecutor(
                graph=run.graph,
                inputs=run.inputs,
                system=system,
                journal=observed,
                resumed=run.last_seq > 0,
                ports=ports,
                cache=run_node_cache(run, owner_id=ports.owner_id),
            )
            result = await executor.run()
        if result.status in RUN_FINAL_STATUSES:
            # On the run's own database thread and connection, once its end is committed.
            # The status as committed (a success whose outputs could not be stored ended failed).
            status = journal.ended.status if journal.ended is not None else result.status
            ended = functools.partial(_run_ended, run=run, status=status, metered=journal.metered)
            await journal.on_thread(ended, last=True)
    finally:
        _executing.discard(journal.owner)
        await journal.close()
    return result.status


def _run_ended(*, run: Run, status: str, metered: bool) -> None:
    """What follows a run's committed end: its metering (unless the journal's final statement did it)
    and the ``run_ended`` signal."""
    if not metered:
        run_usage_record(run_id=run.pk, graph=run.graph)
    run_ended_send(run_id=run.pk, workflow_id=run.workflow_id, status=status)


def runs_hand_back() -> list[uuid.UUID]:
    """This process is shutting down: release the leases of the runs it executes (they stop at their next
    heartbeat, the nodes that succeeded stay done); their ids, to dispatch them again."""
    return leases_release(owners=list(_executing))
