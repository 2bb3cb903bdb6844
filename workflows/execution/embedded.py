"""One background event loop per process on which runs execute, side by side.

Embedded mode (no Redis): the server process's loop (``embedded_engine``). The API still
answers at once: ``submit`` only hands the run over. That loop also runs the reaper every
REAPER_INTERVAL_S, so that runs left ``running`` by a previous process resume. It executes every
run it is handed at once: there are no places that one user's runs could all take, so it needs
no share per user (a worker's threads do: workflows.execution.fairness).

With Redis, each Celery worker process has one too (``worker_engine``, without the reaper,
which is a beat task there): every task thread hands its run to it and waits for the end, so
a run waiting for a retry or a slow answer holds no thread of its own and blocks no other run.
"""

import asyncio
import concurrent.futures
import logging
import threading

from django.db import close_old_connections

from workflows.engine.conf import engine_settings

logger = logging.getLogger(__name__)


class EmbeddedEngine:
    def __init__(self, *, reaper: bool = True, name: str = "weft-embedded-engine"):
        self._reaper = reaper
        self._name = name
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._in_flight: set[concurrent.futures.Future] = set()

    def start(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=self._serve, args=(loop,), name=self._name, daemon=True)
                thread.start()
                self._loop = loop
                threading.Thread(target=_prewarm_sandbox, name="weft-sandbox-prewarm", daemon=True).start()
            return self._loop

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
            loop.create_task(self._reap_forever())
        loop.run_forever()

    def submit(self, run_id):
        """Execute the run on the background loop; returns a concurrent Future of its final status."""
        from .services import run_execute

        future = asyncio.run_coroutine_threadsafe(run_execute(run_id=run_id), self.start())
        with self._lock:
            self._in_flight.add(future)
        future.add_done_callback(self._done)
        return future

    def _done(self, future) -> None:
        with self._lock:
            self._in_flight.discard(future)
        _log_failure(future)

    async def _reap_forever(self) -> None:
        while True:
            await asyncio.sleep(engine_settings.REAPER_INTERVAL_S)
            if not engine_settings.EMBEDDED_REAPER:
                continue
            try:
                await asyncio.to_thread(_reap_once)
            except Exception:
                logger.exception("The embedded reaper failed; it will try again.")


def _reap_once() -> None:
    """The housekeeping beat does with Redis: resume orphaned runs, meter unmetered ones, purge old ones."""
    from history.retention import retention_purge_if_due
    from history.usage import usage_sweep

    from .services import runs_reap

    try:
        runs_reap()
        usage_sweep()
        retention_purge_if_due()
    finally:
        close_old_connections()


def _prewarm_sandbox() -> None:
    from workflows.engine.sandbox import prewarm

    try:
        prewarm()
    except Exception:
        logger.warning("The code sandbox could not start its warm workers now; it will on first use.", exc_info=True)


def _log_failure(future) -> None:
    if not future.cancelled() and future.exception() is not None:
        logger.error("An embedded run crashed; the reaper will resume it.", exc_info=future.exception())


#: The server's engine in embedded mode.
embedded_engine = EmbeddedEngine()
#: A Celery worker process's engine (see workflows.tasks).
worker_engine = EmbeddedEngine(reaper=False, name="weft-worker-engine")
