"""Celery tasks of the workflows app: execute a run, reap runs whose worker is gone.

A worker runs with the threads pool (see config/celery.py and platform/Procfile): each task
thread hands its run to the process's one event loop (``worker_engine``) and waits for its end
before the message is acknowledged (acks late). A run waiting for a retry's backoff or a slow
answer is only a suspended coroutine on that loop, so it blocks neither a thread's other work
nor any other run. If the worker dies (kill -9), the run's lease expires and the reaper
(``workflows.runs_reap``, a beat task) resumes it on another worker from its last completed
node, or fails it once its dispatch attempts are spent.
"""

import logging

from celery import shared_task
from celery.signals import worker_process_init, worker_ready

logger = logging.getLogger(__name__)


@worker_process_init.connect
def _engine_start_in_child(**kwargs) -> None:
    """Prefork pool: each child process executes runs on an event loop of its own."""
    _engine_start()


@worker_ready.connect
def _engine_start_in_worker(sender=None, **kwargs) -> None:
    """Threads (or solo) pool: the worker's own process executes the runs."""
    pool = getattr(sender, "pool", None)
    if pool is not None and type(pool).__module__.endswith(".prefork"):
        return
    _engine_start()


def _engine_start() -> None:
    """Start the loop (and the code sandbox's warm processes) now, not with the first run."""
    from workflows.execution.embedded import worker_engine

    worker_engine.start()


@shared_task(name="workflows.run_execute", acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def run_execute_task(run_id: str) -> str | None:
    """Execute run ``run_id`` in this worker (a resumed run skips the nodes that succeeded)."""
    from workflows.execution.embedded import worker_engine

    return worker_engine.submit(run_id).result()


@shared_task(name="workflows.runs_reap", ignore_result=True)
def runs_reap_task() -> dict:
    """Beat task: resume or end runs whose lease expired; re-dispatch runs stuck pending."""
    from workflows.execution.services import runs_reap

    return runs_reap()
