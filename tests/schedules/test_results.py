"""Results follow the runs; a schedule whose runs keep failing pauses itself, and says why."""

from datetime import timedelta

import pytest
from django.utils import timezone

from history.models import AuditLog
from tests.schedules.conftest import an_hour_ago, in_effect_since
from workflows.execution.services import run_wait
from workflows.models import ScheduledWorkflow
from workflows.schedules.services import schedule_create, schedule_resume, schedules_fire_due, schedules_results_sync

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("embedded")]


def fire_and_finish(schedule, *, now):
    """Fire the schedule's tick at ``now`` and let the server's run loop finish the run."""
    (run,) = schedules_fire_due(now=now)
    run = run_wait(run=run, timeout=20)
    assert run.is_finished
    return run


def minutes(count: int):
    """The start of the minute ``count`` minutes ago: a tick of '* * * * *'."""
    return timezone.now().replace(second=0, microsecond=0) - timedelta(minutes=count)


def test_a_successful_run_is_recorded(user, workflow):
    schedule = schedule_create(user=user, workflow=workflow, cron="* * * * *", inputs={"city": "Lyon"})
    in_effect_since(schedule, an_hour_ago())

    run = fire_and_finish(schedule, now=minutes(0))
    schedules_results_sync()

    assert run.status == "succeeded"
    schedule.refresh_from_db()
    assert schedule.last_execution_status == "succeeded"
    assert schedule.last_execution_at == run.created_at
    assert (schedule.consecutive_failures, schedule.last_error_message) == (0, "")


def test_after_max_retries_failures_the_schedule_pauses_itself(user, failing_workflow):
    schedule = schedule_create(user=user, workflow=failing_workflow, cron="* * * * *", max_retries=3)
    in_effect_since(schedule, an_hour_ago())

    for ago in (3, 2):
        assert fire_and_finish(schedule, now=minutes(ago)).status == "failed"
    schedules_results_sync()
    schedule.refresh_from_db()
    assert (schedule.status, schedule.consecutive_failures, schedule.last_execution_status) == ("active", 2, "failed")
    assert schedule.last_error_message

    fire_and_finish(schedule, now=minutes(1))
    assert schedules_fire_due(now=minutes(0)) == []  # the results are recorded first: it paused, no 4th run

    schedule.refresh_from_db()
    assert schedule.status == "paused"
    assert schedule.consecutive_failures == 3
    assert "3 consecutive failed runs" in schedule.pause_reason
    assert schedules_fire_due(now=minutes(-1)) == []  # paused: not due any more
    audit = AuditLog.objects.get(action="schedule.auto_pause")
    assert (audit.actor, audit.actor_repr, audit.target_id) == (None, "system", str(schedule.pk))
    assert audit.after["status"] == "paused"
    assert schedule.runs.count() == 3

    # Resumed, it starts counting again from zero instead of pausing at once.
    schedule_resume(schedule=schedule, user=user)
    schedules_results_sync()
    schedule.refresh_from_db()
    assert (schedule.status, schedule.consecutive_failures) == ("active", 0)


def test_a_success_resets_the_failure_count(user, failing_workflow, workflow):
    schedule = schedule_create(user=user, workflow=failing_workflow, cron="* * * * *", max_retries=2)
    in_effect_since(schedule, an_hour_ago())
    fire_and_finish(schedule, now=minutes(3))
    ScheduledWorkflow.objects.filter(pk=schedule.pk).update(workflow=workflow, inputs={"city": "Nice"})
    schedule.refresh_from_db()
    fire_and_finish(schedule, now=minutes(2))
    ScheduledWorkflow.objects.filter(pk=schedule.pk).update(workflow=failing_workflow, inputs={})
    schedule.refresh_from_db()
    fire_and_finish(schedule, now=minutes(1))

    schedules_results_sync()

    schedule.refresh_from_db()
    assert (schedule.status, schedule.consecutive_failures, schedule.last_execution_status) == ("active", 1, "failed")
