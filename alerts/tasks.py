"""Celery tasks of the alerts app; each takes ids and calls a service (sent by name from services)."""

from celery import shared_task
from django.db import close_old_connections

from .services import deliveries_sweep, delivery_send, run_end_handle


@shared_task(name="alerts.run_end_handle", ignore_result=True)
def run_end_handle_task(run_id: str) -> int:
    """A run ended whose workflow's policy acts on it: start its error workflow, send its notifications."""
    close_old_connections()
    try:
        return len(run_end_handle(run_id=run_id))
    finally:
        close_old_connections()


@shared_task(name="alerts.delivery_send", ignore_result=True)
def delivery_send_task(delivery_id: str) -> None:
    """The next attempt of a delivery (sent with a countdown after a failed one)."""
    close_old_connections()
    try:
        delivery_send(delivery_id=delivery_id)
    finally:
        close_old_connections()


@shared_task(name="alerts.deliveries_sweep", ignore_result=True)
def deliveries_sweep_task() -> int:
    """Beat: send the deliveries that are due and whose task was lost, or whose worker died."""
    close_old_connections()
    try:
        return deliveries_sweep()
    finally:
        close_old_connections()
