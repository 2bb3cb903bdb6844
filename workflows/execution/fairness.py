"""Fair shares of a worker's runs between users.

A Celery worker executes at most ``--concurrency`` runs at once (a task thread each, see
workflows.tasks), taken in the order of one queue: a user who starts hundreds of runs would take
every thread of every worker, and another user's run would wait behind all of them. So a worker
process gives each user at most ``WORKER_USER_SHARE`` places (``weft_settings``; unset: half its
concurrency), a place being a task thread executing one of the user's runs.

- A message for a run whose user has no place left here holds no thread: it is given back to the
  queue, unclaimed, with a countdown (DEFER_FIRST_S, doubling with each deferral of that run up
  to DEFER_LONGEST_S), and the thread takes the next message, perhaps another user's run.
- The run also joins its user's line in this worker: when one of the user's runs here ends and
  the worker has a thread to spare (no message waits for one), its place goes on, in the same
  thread, with the first run of the line still pending; with no thread to spare, it gives the
  thread back and hands that run to the queue at once (no countdown), so that the place is taken
  up again behind the messages already waiting. So a deferred run waits its turn, in the order
  the runs were given back, and a user's backlog keeps their places busy without waiting for
  their messages to come back. A user's line is forgotten when they have no place left here
  (their messages still name every run).

Nothing is claimed before a place is taken, and the journal's claim (one guarded UPDATE) lets a
single worker execute a run however many messages name it: a message whose run a place executed
meanwhile finds it unclaimable and ends there.

The reaper sends a run pending for PENDING_REDISPATCH_S since its last update again (its message
was lost). A deferred run's message is alive, so a deferral marks the run updated (at most once
every quarter of that time) and the reaper leaves it alone: one message per run.

Giving a message back costs the worker about two more messages to handle (the deferral and its
return): a user's burst beyond their share costs a few milliseconds of a worker's CPU per run,
nothing when they stay within it.

A run counts for the user it counts for in the quotas (workflows.quotas): who started it, or the
workflow's owner when a client app did.

Embedded mode needs none of this: its engine executes every run it is handed at once, with no
places one user could take from the others.
"""

import contextlib
import logging
import math
import threading
import uuid
from collections import OrderedDict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import InterfaceError, OperationalError, connection
from django.db.models.functions import Coalesce
from django.utils import timezone

from config.conf import weft_settings
from observability.metrics import runs_deferred
from workflows.models import Run, RunStatus

from .journal import claimable_condition

logger = logging.getLogger(__name__)

#: A deferred run's first countdown (seconds); it doubles with each deferral of the run, up to DEFER_LONGEST_S. Its
#: message is a fallback: a place of its user here takes it from their line as soon as it can.
DEFER_FIRST_S = 2.0
DEFER_LONGEST_S = 16.0


class WorkerShares:
    """A worker process's places: how many each user holds (at most ``share``; None: no limit), the
    line of each user's runs given back here, and how many of its ``concurrency`` task threads are busy."""

    def __init__(self, *, share: int | None = None, concurrency: int | None = None):
        self.share = share
        self.concurrency = concurrency
        self._held: dict[int, int] = {}
        self._lines: dict[int, OrderedDict[uuid.UUID, None]] = {}
        self._busy = 0
        self._stopping = False
        self._lock = threading.Lock()

    def configure(self, *, concurrency: int) -> None:
        """A worker executing ``concurrency`` runs at once: its share is the setting, or half of them."""
        configured = weft_settings.WORKER_USER_SHARE
        self.share = configured if configured is not None else max(1, math.ceil(concurrency / 2))
        self.concurrency = concurrency

    def take(self, user_id: int | None, run_id: uuid.UUID) -> bool:
        """Take a place for run ``run_id`` of the user; False if they already have their share, the run then joining
        the end of their line (unless it is in it already)."""
        with self._lock:
            held = self._held.get(user_id, 0)
            if self.share is not None and held >= self.share:
                self._lines.setdefault(user_id, OrderedDict()).setdefault(run_id)
                return False
            self._held[user_id] = held + 1
            if user_id in self._lines:
                self._lines[user_id].pop(run_id, None)
            return True

    def give_back(self, user_id: int | None) -> None:
        """Give a place back; the user's line goes with their last place here."""
        with self._lock:
            held = self._held[user_id] - 1
            if held:
                self._held[user_id] = held
            else:
                del self._held[user_id]
                self._lines.pop(user_id, None)

    def held(self, user_id: int) -> int:
        with self._lock:
            return self._held.get(user_id, 0)

    def line(self, user_id: int) -> list[uuid.UUID]:
        with self._lock:
            return list(self._lines.get(user_id, ()))

    def next_in_line(self, user_id: int, *, spare_thread: bool = True) -> uuid.UUID | None:
        """The first run of the user's line, out of it; None when it is empty (or, with ``spare_thread``, when no
        task thread is spare)."""
        with self._lock:
            line = self._lines.get(user_id)
            if not line or (spare_thread and not self._spare_thread()):
                return None
            run_id, _ = line.popitem(last=False)
            return run_id

    @contextlib.contextmanager
    def thread_busy(self) -> Iterator[None]:
        """Count the calling task thread as busy for the block."""
        with self._lock:
            self._busy += 1
        try:
            yield
        finally:
            with self._lock:
                self._busy -= 1

    def _spare_thread(self) -> bool:
        """Whether a task thread is idle (so no message waits for one here) and the worker is not stopping."""
        return self.concurrency is not None and self._busy < self.concurrency and not self._stopping

    @property
    def stopping(self) -> bool:
        return self._stopping

    def stop(self) -> None:
        """The worker is shutting down: places stop going on with their user's line."""
        with self._lock:
            self._stopping = True


class _DatabaseThread:
    """Where a worker's fairness queries run: one thread whose connection stays open between them.

    A task thread would open a connection for each message (Celery closes them after each task).
    Until ``start`` (outside a worker: tests, eager calls) queries run on the caller's thread.
    """

    def __init__(self):
        self._executor: ThreadPoolExecutor | None = None

    def start(self) -> None:
        self._executor = self._executor or ThreadPoolExecutor(max_workers=1, thread_name_prefix="weft-fairness")

    def call(self, function, *args):
        if self._executor is None:
            return function(*args)
        return self._executor.submit(reconnecting, function, *args).result()


def reconnecting(function, *args):
    """``function(*args)``, once more on a new connection if the database went away since the last query."""
    try:
        return function(*args)
    except (InterfaceError, OperationalError):
        connection.close()  # the database went away since the last query: once more, on a new connection
        return function(*args)


#: The Celery worker process's places and fairness thread, set up when it is ready (workflows.tasks).
worker_shares = WorkerShares()
_database = _DatabaseThread()


def worker_start(*, concurrency: int) -> None:
    """This process is a worker executing ``concurrency`` runs at once (threads pool)."""
    worker_shares.configure(concurrency=concurrency)
    _database.start()


@dataclass(frozen=True)
class Turn:
    """What a worker does with a message of a run: execute it in a place of ``user_id`` taken for it
    (to give back when done), give it back to the queue (``defer``; ``updated_at`` is the run's last
    update), or neither: it is not to be executed."""

    user_id: int | None = None
    execute: bool = False
    defer: bool = False
    updated_at: datetime | None = None


def run_turn(*, run_id, shares: WorkerShares) -> Turn:
    """Decide what this worker does with a message of run ``run_id``."""
    run_id = uuid.UUID(str(run_id))
    if shares.share is None:  # no places to share (a prefork child, an eager call): no query either
        shares.take(None, run_id)
        return Turn(execute=True)
    found = _database.call(_claimable, run_id)
    if found is None:
        return Turn()
    user_id, updated_at = found
    if shares.take(user_id, run_id):
        return Turn(user_id=user_id, execute=True)
    return Turn(user_id=user_id, defer=True, updated_at=updated_at)


def run_following(*, user_id: int, shares: WorkerShares, spare_thread: bool = True) -> uuid.UUID | None:
    """The run a place of the user goes on with: the first of their line still claimable, if a thread is spare.

    Without ``spare_thread``, whether a thread is spare or not: the run a place that gives its thread back hands
    to the queue, so that the place is taken up again once a thread is free (a message may be waiting for it).
    """
    while (run_id := shares.next_in_line(user_id, spare_thread=spare_thread)) is not None:
        if _database.call(_claimable, run_id) is not None:
            return run_id
    return None


def run_deferral(*, run_id, turn: Turn, deferrals: int) -> float:
    """Note that the message of ``run_id`` is given back (``deferrals`` times before): its countdown.

    A pending run is marked updated when the reaper could otherwise take its message for lost: when it was last
    updated a quarter of PENDING_REDISPATCH_S ago, its countdown being at most that long.
    """
    quarter = weft_settings.PENDING_REDISPATCH_S / 4
    if turn.updated_at < timezone.now() - timedelta(seconds=quarter):
        _database.call(_touch, run_id)
    countdown = min(DEFER_FIRST_S * 2 ** min(deferrals, 16), DEFER_LONGEST_S, quarter)
    runs_deferred.inc()
    logger.debug(
        "Run %s given back to the queue for %.1f s (deferral %d): its user %s has their share of this worker's runs.",
        run_id,
        countdown,
        deferrals + 1,
        turn.user_id,
    )
    return countdown


def _claimable(run_id: uuid.UUID) -> tuple[int, datetime] | None:
    """The user the run counts for and its last update, if a worker may claim it now."""
    return (
        Run.objects.filter(claimable_condition(timezone.now()), pk=run_id)
        .annotate(quota_user_id=Coalesce("triggered_by_id", "workflow__owner_id"))
        .values_list("quota_user_id", "updated_at")
        .first()
    )


def _touch(run_id) -> None:
    Run.objects.filter(pk=run_id, status=RunStatus.PENDING).update(updated_at=timezone.now())
