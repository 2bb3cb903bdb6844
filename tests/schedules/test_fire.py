"""Ticks: computed in the schedule's time zone, fired once however many processes try."""

import threading
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection

from tests.factories import WorkflowVersionFactory
from tests.schedules.conftest import in_effect_since
from workflows.models import Run, RunTrigger
from workflows.releases.services import workflow_publish
from workflows.schedules.selectors import schedule_tick_latest
from workflows.schedules.services import schedule_create, schedule_fire, schedules_fire_due

SUMMER_MORNING = datetime(2025, 7, 1, 7, 1, 30, tzinfo=UTC)  # 09:01:30 in Paris
LONG_AGO = datetime(2025, 1, 1, tzinfo=UTC)


@pytest.fixture
def daily(user, workflow):
    """Every day at 09:00 in Paris, in effect since long ago."""
    schedule = schedule_create(
        user=user, workflow=workflow, cron="0 9 * * *", timezone_name="Europe/Paris", inputs={"city": "Lyon"}
    )
    in_effect_since(schedule, LONG_AGO)
    return schedule


@pytest.mark.django_db
def test_the_tick_is_the_latest_fire_time_in_the_schedules_time_zone(daily):
    assert schedule_tick_latest(schedule=daily, now=SUMMER_MORNING) == datetime(2025, 7, 1, 7, 0, tzinfo=UTC)
    winter = datetime(2025, 1, 15, 8, 0, tzinfo=UTC)  # 09:00 in Paris, exactly on the tick
    assert schedule_tick_latest(schedule=daily, now=winter) == winter
    assert schedule_tick_latest(schedule=daily, now=winter - timedelta(seconds=1)) == datetime(
        2025, 1, 14, 8, 0, tzinfo=UTC
    )


@pytest.mark.django_db
def test_a_tick_fires_one_run_however_often_it_is_fired(daily, workflow):
    first = schedule_fire(schedule_id=daily.pk, now=SUMMER_MORNING)

    assert schedule_fire(schedule_id=daily.pk, now=SUMMER_MORNING) is None
    assert schedule_fire(schedule_id=daily.pk, now=SUMMER_MORNING + timedelta(seconds=40)) is None
    assert schedules_fire_due(now=SUMMER_MORNING) == []
    run = Run.objects.get()
    assert run == first
    assert (run.schedule, run.scheduled_tick) == (daily, datetime(2025, 7, 1, 7, 0, tzinfo=UTC))
    assert run.trigger == RunTrigger.SCHEDULE
    assert run.triggered_by == daily.owner
    assert run.inputs == {"city": "Lyon"}
    assert run.workflow == workflow


def test_the_next_tick_fires_a_second_run(daily):
    schedule_fire(schedule_id=daily.pk, now=SUMMER_MORNING)
    schedule_fire(schedule_id=daily.pk, now=SUMMER_MORNING + timedelta(days=1))

    assert Run.objects.count() == 2


def test_ticks_before_the_schedule_took_effect_do_not_fire(daily):
    in_effect_since(daily, SUMMER_MORNING - timedelta(seconds=30))

    assert schedule_fire(schedule_id=daily.pk, now=SUMMER_MORNING) is None
    assert not Run.objects.exists()


def test_a_tick_missed_for_longer_than_the_grace_is_not_replayed(daily, settings):
    settings.WEFT = {**settings.WEFT, "SCHEDULES": {"MISFIRE_GRACE_S": 120}}

    assert schedule_fire(schedule_id=daily.pk, now=SUMMER_MORNING + timedelta(minutes=2)) is None
    assert not Run.objects.exists()
    # Skipped, not postponed: the next tick fires, the next day.
    assert schedule_fire(schedule_id=daily.pk, now=SUMMER_MORNING + timedelta(days=1)) is not None
    in_effect_since(daily, LONG_AGO)
    assert schedule_fire(schedule_id=daily.pk, now=SUMMER_MORNING) is not None  # within the grace it fires


def test_a_paused_schedule_does_not_fire(daily, user):
    from workflows.schedules.services import schedule_pause

    schedule_pause(schedule=daily, user=user)

    assert schedules_fire_due(now=SUMMER_MORNING) == []
    assert schedule_fire(schedule_id=daily.pk, now=SUMMER_MORNING) is None


def test_without_a_release_the_draft_runs(daily):
    run = schedule_fire(schedule_id=daily.pk, now=SUMMER_MORNING)

    assert (run.flow, run.version) == (None, "")


def test_the_latest_version_released_on_the_api_runs(daily, workflow, user):
    workflow_publish(workflow=workflow, version="1.0.0", user=user)
    latest = workflow_publish(workflow=workflow, version="1.1.0", user=user)
    WorkflowVersionFactory(workflow=workflow, version_major=2, release_status=0)  # published but released nowhere

    run = schedule_fire(schedule_id=daily.pk, now=SUMMER_MORNING)

    assert (run.flow, run.version) == (latest, "1.1.0")


def test_a_pinned_version_runs(daily, workflow, user):
    pinned = workflow_publish(workflow=workflow, version="1.0.0", user=user)
    workflow_publish(workflow=workflow, version="1.1.0", user=user)
    daily.flow = pinned
    daily.save(update_fields=["flow"])

    run = schedule_fire(schedule_id=daily.pk, now=SUMMER_MORNING)

    assert (run.flow, run.version) == (pinned, "1.0.0")


def test_a_tick_whose_run_cannot_start_is_a_failed_run_of_that_tick(daily):
    daily.inputs = {"city": ["not", "a", "string"]}
    daily.save(update_fields=["inputs"])

    run = schedule_fire(schedule_id=daily.pk, now=SUMMER_MORNING)

    assert run.status == "failed"
    assert "could not start" in run.error
    assert schedule_fire(schedule_id=daily.pk, now=SUMMER_MORNING) is None
    assert Run.objects.count() == 1
    daily.refresh_from_db()
    assert (daily.last_execution_status, daily.consecutive_failures) == ("failed", 1)


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
def test_two_beats_firing_the_same_tick_at_once_make_one_run(user, workflow, settings):
    """Two processes fire the same tick at the same moment: the unique (schedule, tick) key decides."""
    settings.EMBEDDED = True
    schedule = schedule_create(user=user, workflow=workflow, cron="* * * * *")
    in_effect_since(schedule, LONG_AGO)
    now = datetime.now(UTC)
    barrier = threading.Barrier(4)
    results, errors = [], []

    def beat():
        try:
            barrier.wait(timeout=10)
            results.append(schedule_fire(schedule_id=schedule.pk, now=now))
        except Exception as error:  # surfaced by the assertion below
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=beat) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert errors == []
    assert len([run for run in results if run is not None]) == 1
    assert Run.objects.filter(schedule=schedule).count() == 1


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
def test_two_tickers_fire_every_tick_of_every_schedule_once(user, workflow, settings):
    """Two tickers (beat and an embedded server, or two beats) turn at the same moments over three minutes."""
    settings.EMBEDDED = True
    schedules = [schedule_create(user=user, workflow=workflow, cron="* * * * *") for _ in range(8)]
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=3)
    for schedule in schedules:
        in_effect_since(schedule, start - timedelta(seconds=1))
    turns = [start + timedelta(minutes=minute, seconds=second) for minute in range(3) for second in (1, 20)]
    fired = {"a": [], "b": []}
    errors = []

    def ticker(name: str, barrier: threading.Barrier):
        try:
            for now in turns:
                barrier.wait(timeout=30)
                fired[name].extend(schedules_fire_due(now=now))
        except Exception as error:  # surfaced by the assertion below
            errors.append(error)
        finally:
            connection.close()

    barrier = threading.Barrier(2)
    threads = [threading.Thread(target=ticker, args=(name, barrier)) for name in fired]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert errors == []
    runs = Run.objects.filter(schedule__in=schedules)
    assert runs.count() == len(schedules) * 3 == len(fired["a"]) + len(fired["b"])
    assert runs.values("schedule", "scheduled_tick").distinct().count() == runs.count()
