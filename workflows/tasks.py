"""Celery tasks of the workflows app: execute a run, reap runs whose worker is gone.

A worker runs with the threads pool (see config/celery.py and platform/Procfile): each task
thread hands its run to the process's one event loop (``worker_run_loop``) and waits for its end
before the message is acknowledged (acks late). A run waiting for a retry's backoff or a slow
answer is only a suspended coroutine on that loop, so it blocks neither a thread's other work
nor any other run. If the worker dies (kill -9), the run's lease expires and the reaper
(``workflows.runs_reap``, a beat task) resumes it on another worker from its last completed
node, or fails it once its dispatch attempts are spent.

A worker shares its threads fairly between users: it executes at most WORKER_USER_SHARE runs of
one user at once and gives a run of a user who has that many back to the queue, unclaimed, so
that the thread takes the next message; a thread whose run ends goes on with the first run its
user has waiting in line there (workflows.execution.fairness).

A worker holds the pending runs whose messages it receives (workflows.execution.holds): if it
dies before claiming them, the reaper dispatches them again once the hold expires, as it resumes
its running runs once their leases expire.

A worker shutting down (SIGTERM: Celery's warm shutdown) does not wait for the runs it executes,
which may be long: it releases their leases and its holds, so its runs stop at their next
heartbeat (CANCEL_POLL_S) and each goes back to the queue at once, to resume on another worker
from its last completed node. So a worker exits within seconds of SIGTERM (in the threads pool;
a prefork child finishes its run first).
"""

import logging
import threading
from dataclasses import asdict

from celery import shared_task
from celery.signals import task_received, worker_init, worker_process_init, worker_ready, worker_shutting_down
from django.db import connection

from workflows.execution import fairness
from workflows.execution.dispatch import RUN_EXECUTE_TASK
from workflows.execution.fairness import run_deferral, run_following, run_turn
from workflows.execution.holds import worker_holds
from workflows.execution.reaper import runs_reap
from workflows.execution.run_loop import worker_run_loop
from workflows.execution.runner import runs_hand_back, worker_name
from workflows.partitions import run_event_partitions_ensure
from workflows.retention import retention_purge
from workflows.usage import usage_sweep

logger = logging.getLogger(__name__)


@worker_process_init.connect
def _engine_start_in_child(**kwargs) -> None:
    """Prefork pool: each child process executes runs on an event loop of its own."""
    _engine_start()


@worker_init.connect
def _holds_start(**kwargs) -> None:
    """Before the first message comes: the process that receives messages holds their runs."""
    worker_holds.start(owner=worker_name())


@worker_ready.connect
def _engine_start_in_worker(sender=None, **kwargs) -> None:
    """Threads (or solo) pool: the worker's own process executes the runs."""
    pool = getattr(sender, "pool", None)
    if pool is not None and type(pool).__module__.endswith(".prefork"):
        return
    if pool is not None:
        fairness.worker_start(concurrency=pool.num_processes)
    _engine_start()


@task_received.connect
def _run_hold(request=None, **kwargs) -> None:
    """A run's message is here, to execute now or after its countdown: hold the run for this worker."""
    if request is not None and request.name == run_execute_task.name and request.args:
        worker_holds.take(request.args[0])


@worker_shutting_down.connect
def _runs_hand_back(**kwargs) -> None:
    """A warm shutdown waits for the runs in progress: none starts in their places, and each is handed back.

    Called in the signal handler: the database work is done on a thread of its own.
    """
    fairness.worker_shares.stop()
    threading.Thread(target=_hand_back, name="weft-hand-back", daemon=True).start()


def _hand_back() -> None:
    """Release this worker's holds (their runs are dispatched again at once) and its runs' leases (each task
    thread dispatches its run again once it has stopped, see ``_runs_execute``)."""
    try:
        for run_id in worker_holds.release():
            run_execute_task.apply_async(args=[str(run_id)])
        handed = runs_hand_back()
    except Exception:
        logger.exception("Could not hand this worker's runs back; the reaper will resume them.")
        return
    logger.info("Shutting down: %d run(s) handed back to the queue.", len(handed))


def _engine_start() -> None:
    """Start the loop (and the code sandbox's warm processes) now, not with the first run."""
    worker_run_loop.start()


@shared_task(name=RUN_EXECUTE_TASK, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def run_execute_task(run_id: str, deferrals: int = 0) -> str | None:
    """Execute run ``run_id`` in this worker (a resumed run skips the nodes that succeeded), in a place of its user.

    A run whose user has no place left here is given back to the queue instead (``deferrals``:
    how many times it was before) and comes again after a countdown, unless a place of its user
    takes it from their line here first. Returns the final status of the last run executed in
    this place (None: none was).
    """
    if fairness.worker_shares.stopping:
        # A message taken (prefetched) after the warm shutdown began: another worker executes it.
        run_execute_task.apply_async(args=[run_id], kwargs={"deferrals": deferrals})
        return None
    with fairness.worker_shares.thread_busy():
        turn = run_turn(run_id=run_id, shares=fairness.worker_shares)
        if turn.defer:
            countdown = run_deferral(run_id=run_id, turn=turn, deferrals=deferrals)
            run_execute_task.apply_async(args=[run_id], kwargs={"deferrals": deferrals + 1}, countdown=countdown)
        if not turn.execute:
            return None
        try:
            return _runs_execute(first=run_id, user_id=turn.user_id)
        finally:
            fairness.worker_shares.give_back(turn.user_id)


def _runs_execute(*, first, user_id: int | None) -> str | None:
    """Execute ``first``, then the runs of the user's line while the worker has a thread to spare; then hand the
    next one, if any, to the queue."""
    run_id, status = first, None
    while run_id is not None:
        # This thread's connection goes back (to the pool) while it waits: the run's journal needs one.
        if not connection.in_atomic_block:
            connection.close()
        status = worker_run_loop.submit(run_id).result()
        if status == "lost" and fairness.worker_shares.stopping:  # handed back: stopped here, to resume elsewhere
            run_execute_task.apply_async(args=[str(run_id)])
        run_id = run_following(user_id=user_id, shares=fairness.worker_shares)
    handed_over = run_following(user_id=user_id, shares=fairness.worker_shares, spare_thread=False)
    if handed_over is not None:
        run_execute_task.apply_async(args=[str(handed_over)])
    return status


@shared_task(name="workflows.runs_reap", ignore_result=True)
def runs_reap_task() -> dict:
    """Beat task: resume or end runs whose lease expired; re-dispatch runs stuck pending."""
    return runs_reap()


# The housekeeping of finished runs. Their names are those the history app gave them first.


@shared_task(name="history.retention_purge", ignore_result=True)
def retention_purge_task() -> dict:
    """Beat task: meter any finished run still unmetered, then delete what is older than WEFT_RETENTION_DAYS."""
    metered = usage_sweep(lookback_s=None)
    return {**asdict(retention_purge()), "metered": metered}


@shared_task(name="workflows.run_event_partitions_ensure", ignore_result=True)
def run_event_partitions_ensure_task() -> list[str]:
    """Beat task: create run_events' partitions for this month and the months ahead (PostgreSQL): their names."""
    return run_event_partitions_ensure()


@shared_task(name="history.usage_sweep", ignore_result=True)
def usage_sweep_task() -> int:
    """Beat task: meter the recent finished runs whose worker died before it metered them."""
    return usage_sweep()
