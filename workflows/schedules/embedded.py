"""Embedded mode (no Redis, no beat): a daemon thread fires due ticks every TICK_INTERVAL_S.

It calls the service beat's entry calls, ``schedules_fire_due``, which claims each tick in the
database: a tick fires once even if a beat, or another server, ticks against the same database
too. ``config/asgi.py`` starts it with the server's run loop.
"""

import logging
import threading

from django.db import close_old_connections
from django.utils import timezone

from config.conf import weft_settings

from .services import schedules_fire_due, schedules_results_sync

logger = logging.getLogger(__name__)


class ScheduleTicker:
    def __init__(self):
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._stop.clear()
                self._thread = threading.Thread(target=self._serve, name="weft-schedule-ticker", daemon=True)
                self._thread.start()

    def stop(self, timeout: float = 10) -> None:
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._stop.set()
            thread.join(timeout)

    def _serve(self) -> None:
        while True:
            tick_once()
            if self._stop.wait(weft_settings.TICK_INTERVAL_S):
                return


def tick_once() -> None:
    """Fire what is due now and record results; a failure is logged and tried again on the next turn."""
    try:
        now = timezone.now()
        schedules_fire_due(now=now)
        schedules_results_sync(now=now)
    except Exception:
        logger.exception("Firing due schedules failed; trying again on the next turn.")
    finally:
        close_old_connections()


schedule_ticker = ScheduleTicker()
