"""Celery tasks of schedules: beat fires each schedule's entry, and keeps results current.

Celery's ``autodiscover_tasks()`` only imports ``<app>.tasks``: ``config/celery.py`` also lists
this package (``app.autodiscover_tasks(["workflows.schedules"])``).
"""

from celery import shared_task
from django.db import close_old_connections


@shared_task(name="workflows.schedule_fire", ignore_result=True)
def schedule_fire_task(schedule_id: str) -> str | None:
    """Beat entry of one schedule: fire its due tick (a no-op if another beat already did)."""
    from .services import schedule_fire

    close_old_connections()
    try:
        run = schedule_fire(schedule_id=schedule_id)
        return str(run.pk) if run is not None else None
    finally:
        close_old_connections()


@shared_task(name="workflows.schedules_sync", ignore_result=True)
def schedules_sync_task() -> int:
    """Beat task: record the results of scheduled runs that ended, pausing failing schedules."""
    from .services import schedules_results_sync

    return schedules_results_sync()
