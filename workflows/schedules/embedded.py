"""Embedded mode (no Redis, no beat): a daemon thread fires due ticks every EMBEDDED_INTERVAL_S.

It goes through the same services as beat's task: the (schedule, tick) key makes a tick fire
once even if a beat runs against the same database too. ``config/asgi.py`` starts it with the
embedded engine.
"""

import logging
import threading

from django.db import close_old_connections
from django.utils import timezone

from .selectors import schedule_setting

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
            if self._stop.wait(schedule_setting("EMBEDDED_INTERVAL_S")):
                return


def tick_once() -> None:
    """Fire what is due now; a failure is logged and tried again on the next turn."""
    from .services import schedules_fire_due

    try:
        schedules_fire_due(now=timezone.now())
    except Exception:
        logger.exception("Firing due schedules failed; trying again on the next turn.")
    finally:
        close_old_connections()


schedule_ticker = ScheduleTicker()
