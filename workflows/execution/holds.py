"""A Celery worker's hold on the pending runs whose messages it has taken from the queue.

A worker takes a message from Redis before it executes it: at once into a free task thread, or
into its timer for a deferred run's countdown (workflows.execution.fairness). If the worker dies
(kill -9) meanwhile, the message stays unacknowledged in Redis for the broker's visibility timeout
(hours), and its run stays ``pending`` without any sign of the dead worker. So on receiving a
message the worker writes its hold on the pending run: ``lease_owner`` (this process) and
``lease_expires_at``, renewed for all its holds by one UPDATE every HEARTBEAT_S. The run stays
pending and claimable by any worker (the journal's claim replaces the hold with the run's lease).

The reaper dispatches again a pending run whose hold expired: its worker died, so the run
resumes within LEASE_TTL_S + REAPER_INTERVAL_S, as a running run of that worker does. The dead
worker's message may come back one day (the visibility timeout): the journal's claim lets one
worker execute a run however many messages name it, so no run starts twice.

A message taken by a worker that dies before writing its hold (a few milliseconds) is
dispatched again by the reaper's PENDING_REDISPATCH_S rule.
"""

import logging
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from django.utils import timezone

from config.conf import weft_settings
from workflows.models import Run, RunStatus

from .fairness import reconnecting

logger = logging.getLogger(__name__)


class WorkerHolds:
    """This worker process's holds: written, renewed and given back on one database thread of their own."""

    def __init__(self):
        self.owner = ""
        self._executor: ThreadPoolExecutor | None = None
        self._stopped = threading.Event()

    def start(self, *, owner: str) -> None:
        """This process is a worker named ``owner``: hold the runs it receives, renew the holds until ``stop``."""
        self.owner = owner
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="weft-holds")
        threading.Thread(target=self._renew_forever, name="weft-holds-heartbeat", daemon=True).start()

    def take(self, run_id) -> None:
        """Hold run ``run_id`` (if it is pending) for this worker; a failure is logged (the run keeps its message)."""
        if self._executor is None:
            return
        try:
            self._call(_hold, uuid.UUID(str(run_id)), self.owner)
        except Exception:
            logger.warning("Could not hold run %s for this worker.", run_id, exc_info=True)

    def release(self) -> list[uuid.UUID]:
        """Stop renewing, and give back the runs still held: their ids (for dispatching them again)."""
        self._stopped.set()
        if self._executor is None:
            return []
        return self._call(_release, self.owner)

    def _renew_forever(self) -> None:
        while not self._stopped.wait(weft_settings.HEARTBEAT_S):
            try:
                self._call(_renew, self.owner)
            except Exception:
                logger.warning("Could not renew this worker's holds; trying again.", exc_info=True)

    def _call(self, function, *args):
        return self._executor.submit(reconnecting, function, *args).result()


def _expiry():
    return timezone.now() + timedelta(seconds=weft_settings.LEASE_TTL_S)


def _hold(run_id: uuid.UUID, owner: str) -> None:
    Run.objects.filter(pk=run_id, status=RunStatus.PENDING).update(lease_owner=owner, lease_expires_at=_expiry())


def _renew(owner: str) -> None:
    Run.objects.filter(status=RunStatus.PENDING, lease_owner=owner).update(lease_expires_at=_expiry())


def _release(owner: str) -> list[uuid.UUID]:
    held = Run.objects.filter(status=RunStatus.PENDING, lease_owner=owner)
    run_ids = list(held.values_list("pk", flat=True))
    Run.objects.filter(pk__in=run_ids, status=RunStatus.PENDING, lease_owner=owner).update(
        lease_owner="", lease_expires_at=None, updated_at=timezone.now()
    )
    return run_ids


#: The Celery worker process's holds (workflows.tasks starts them when the worker is ready).
worker_holds = WorkerHolds()
