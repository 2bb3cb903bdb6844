"""The run loop: one background event loop per process on which runs execute, side by side.

Embedded mode (no Redis): the server process's loop (``server_run_loop``). The API still
answers at once: ``submit`` only hands the run over. That loop also runs the reaper every
REAPER_INTERVAL_S, so that runs left ``running`` by a previous process resume. It executes every
run it is handed at once: there are no places that one user's runs could all take, so it needs
no share per user (a worker's threads do: workflows.execution.fairness).

With Redis, each Celery worker process has one too (``worker_run_loop``, without the reaper,
which is a beat task there): every task thread hands its run to it and waits for the end, so
a run waiting for a retry or a slow answer holds no thread of its own and blocks no other run.
And each web process has one (``request_run_loop``, no reaper either) for the runs its requests
wait for and that it may execute itself (workflows.execution.dispatch): no broker, worker or
channel layer between such a run and its answer, and the same claim, lease and journal as on a
worker, so the reaper resumes it elsewhere if the web process dies.

A server in embedded mode stops its run loop when it shuts down (config.shutdown, before Python's
exit waits for threads): the reaper stops, the runs' leases are released (each run stops
at its next heartbeat; the next process's reaper resumes it from its last completed node), and the
loop ends, within STOP_TIMEOUT_S. Runs handed over meanwhile stay pending for that reaper.
"""

import asyncio
import concurrent.futures
import contextlib
import functools
import logging
import threading
import time

from django.db import close_old_connections

from config.conf import weft_settings
from workflows.engine.sandbox import prewarm
from workflows.retention import retention_purge_if_due
from workflows.usage import usage_sweep

from .reaper import runs_reap
from .runner import run_execute, runs_hand_back

logger = logging.getLogger(__name__)

#: How long a stopping run loop waits for its runs to stop after their leases are released (seconds).
STOP_TIMEOUT_S = 5.0
#: How often a stopping run loop releases the leases of its runs again while some still execute (seconds).
HAND_BACK_CHECK_S = 0.5


class RunLoop:
    """A thread with an event loop that executes the runs handed to it (``submit``) until the process stops."""

    def __init__(self, *, reaper: bool = True, sandbox: bool = True, name: str = "weft-run-loop"):
        self._reaper = reaper
        self._sandbox = sandbox
        self._name = name
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        #: The future of each executing run, with its run id and the future of its end.
        self._in_flight: dict[concurrent.futures.Future, tuple[str, concurrent.futures.Future]] = {}
        self._reaping: asyncio.Task | None = None
        self._stopped = False

    def start(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._stopped:
                raise RuntimeError("The run loop was stopped: this process is shutting down.")
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=self._serve, args=(loop,), name=self._name, daemon=True)
                thread.start()
                self._loop = loop
                if self._sandbox:
                    threading.Thread(target=_prewarm_sandbox, name="weft-sandbox-prewarm", daemon=True).start()
            return self._loop

    @property
    def executing(self) -> int:
        """How many submitted runs are executing now."""
        with self._lock:
            return len(self._in_flight)

    def end_of(self, run_id) -> concurrent.futures.Future | None:
        """If run ``run_id`` executes here: a future of its end (a ``RunEnd``), done once its end is committed
        (before its metering); or of what its execution returned (None, "lost") if it ended otherwise."""
        run_id = str(run_id)
        with self._lock:
            return next((ended for of, ended in self._in_flight.values() if of == run_id), None)

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no submitted run is executing; False if some still are after ``timeout`` seconds."""
        with self._lock:
            pending = set(self._in_flight)
        if not pending:
            return True
        _, not_done = concurrent.futures.wait(pending, timeout=timeout)
        return not not_done

    def _serve(self, loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        if self._reaper:
            self._reaping = loop.create_task(self._reap_forever())
        loop.run_forever()

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> set:
        """Stop the reaper, hand the runs back (released leases) and end the loop once they have stopped
        (at most ``timeout`` seconds; the runs still executing then are cancelled with it).

        Returns the ids of the runs handed back, for the caller to dispatch again (or the reaper resumes them).
        """
        with self._lock:
            loop, self._stopped = self._loop, True
        if loop is None:
            return set()
        if self._reaping is not None:
            loop.call_soon_threadsafe(self._reaping.cancel)
        deadline = time.monotonic() + timeout
        handed: set = set()
        while True:  # again until idle: a run handed over just before the stop may be claimed after a release
            try:
                handed.update(runs_hand_back())
            except Exception:
                logger.exception("Could not hand the runs back; the reaper will resume them once their leases expire.")
                break
            remaining = deadline - time.monotonic()
            if self.wait_idle(min(HAND_BACK_CHECK_S, max(remaining, 0))) or remaining <= 0:
                break
        logger.info("Shutting down: %d run(s) handed back.", len(handed))
        with self._lock:
            left = list(self._in_flight)
        for future in left:  # outside the lock: a cancelled future's callback takes it
            future.cancel()
        loop.call_soon_threadsafe(loop.stop)
        return handed

    def submit(self, run_id, *, claimed=None):
        """Execute the run on the background loop; returns a concurrent Future of its final status.

        ``claimed``: the run as created already leased to this process (see ``runner.run_execute``)."""
        with self._lock:
            if self._stopped:  # shutting down: the run stays pending for the next process's reaper
                future = concurrent.futures.Future()
                future.set_result(None)
                return future
        ended = concurrent.futures.Future()
        future = asyncio.run_coroutine_threadsafe(
            run_execute(run_id=run_id, on_end=functools.partial(_settle, ended), claimed=claimed), self.start()
        )
        with self._lock:
            self._in_flight[future] = (str(run_id), ended)
        future.add_done_callback(self._done)
        return future

    def _done(self, future) -> None:
        with self._lock:
            _, ended = self._in_flight.pop(future, (None, None))
        if ended is not None:
            if future.cancelled() or future.exception() is not None:
                _settle(ended, None)
            else:
                _settle(ended, future.result())
        _log_failure(future)

    async def _reap_forever(self) -> None:
        while True:
            await asyncio.sleep(weft_settings.REAPER_INTERVAL_S)
            if not weft_settings.EMBEDDED_REAPER:
                continue
            try:
                await asyncio.to_thread(_reap_once)
            except Exception:
                logger.exception("The run loop's reaper failed; it will try again.")


def _reap_once() -> None:
    """The housekeeping beat does with Redis: resume orphaned runs, meter unmetered ones, purge old ones."""
    try:
        runs_reap()
        usage_sweep()
        retention_purge_if_due()
    finally:
        close_old_connections()


def _settle(future: concurrent.futures.Future, value) -> None:
    """Give ``future`` its result unless it has one."""
    with contextlib.suppress(concurrent.futures.InvalidStateError):
        future.set_result(value)


def _prewarm_sandbox() -> None:
    try:
        prewarm()
    except Exception:
        logger.warning("The code sandbox could not start its warm workers now; it will on first use.", exc_info=True)


def _log_failure(future) -> None:
    if not future.cancelled() and future.exception() is not None:
        logger.error("An embedded run crashed; the reaper will resume it.", exc_info=future.exception())


#: The server's run loop in embedded mode (it also reaps).
server_run_loop = RunLoop(name="weft-server-run-loop")
#: A Celery worker process's run loop (see workflows.tasks; beat reaps).
worker_run_loop = RunLoop(reaper=False, name="weft-worker-run-loop")
#: A web process's run loop, for the runs its requests wait for (see workflows.execution.dispatch).
request_run_loop = RunLoop(reaper=False, sandbox=False, name="weft-request-run-loop")
