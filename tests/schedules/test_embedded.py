"""Embedded mode (no beat): the in-process ticker fires due schedules."""

import time

import pytest
from django.utils import timezone

from tests.schedules.conftest import an_hour_ago, in_effect_since
from workflows.models import Run
from workflows.schedules.embedded import ScheduleTicker, tick_once
from workflows.schedules.services import schedule_create


def this_minute_hourly() -> str:
    """Hourly, at this minute: one tick is due now, and the next is an hour away."""
    return f"{timezone.now().minute} * * * *"


pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("embedded")]


def test_one_turn_fires_a_due_schedule_once(user, workflow):
    schedule = schedule_create(user=user, workflow=workflow, cron=this_minute_hourly(), inputs={"city": "Oslo"})
    in_effect_since(schedule, an_hour_ago())

    tick_once()
    tick_once()

    run = Run.objects.get(schedule=schedule)
    assert run.scheduled_tick is not None


def test_the_ticker_thread_fires_due_schedules_and_runs_them(user, workflow, settings):
    settings.WEFT = {**settings.WEFT, "SCHEDULES": {"TICK_INTERVAL_S": 0.1}}
    schedule = schedule_create(user=user, workflow=workflow, cron=this_minute_hourly(), inputs={"city": "Oslo"})
    in_effect_since(schedule, an_hour_ago())
    ticker = ScheduleTicker()

    ticker.start()
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            run = Run.objects.filter(schedule=schedule, status="succeeded").first()
            if run is not None:
                break
            time.sleep(0.1)
    finally:
        ticker.stop()

    assert run is not None
    assert run.outputs == {"text": "Weather for Oslo"}
    assert Run.objects.filter(schedule=schedule).count() == 1
