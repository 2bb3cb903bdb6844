"""Celery tasks of schedules: beat's one entry fires what is due, another keeps results current.

Celery's ``autodiscover_tasks()`` only imports ``<app>.tasks``: ``config/celery.py`` also lists
this package (``app.autodiscover_tasks(["workflows.schedules"])``).
"""

from celery import shared_task
from django.db import close_old_connections

from .services import schedules_fire_due, schedules_results_sync


@shared_task(name="workflows.schedules_fire_due", ignore_result=True)
def schedules_fire_due_task() -> int:
    """Beat, every TICK_INTERVAL_S: fire the due ticks of all schedules (claimed, so a second beat fires none)."""
    close_old_connections()
    try:
        return len(schedules_fire_due())
    finally:
        close_old_connections()


@shared_task(name="workflows.schedules_sync", ignore_result=True)
def schedules_sync_task() -> int:
    """Beat task: record the results of scheduled runs that ended, pausing failing schedules."""
    return schedules_results_sync()
