"""Quotas on starting runs: per user a day and at once, per workflow a day; 429s that say which and when."""

from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from accounts.models import QuotaCounter
from config.errors import QuotaExceeded
from tests.factories import (
    AppFactory,
    LicenseFactory,
    RunFactory,
    ScheduledWorkflowFactory,
    UserFactory,
    WorkflowMemberFactory,
)
from tests.quotas.conftest import runs_url
from tests.schedules.conftest import in_effect_since
from workflows.execution.services import run_start
from workflows.models import Run, RunStatus, RunTrigger, WorkflowMember
from workflows.releases.services import workflow_publish
from workflows.schedules.services import schedule_create, schedule_fire

pytestmark = pytest.mark.usefixtures("undispatched")


def start(workflow, user):
    return run_start(workflow=workflow, user=user, inputs={"city": "Lyon"})


def next_utc_midnight() -> datetime:
    return datetime.combine(timezone.now().astimezone(UTC).date() + timedelta(days=1), datetime.min.time(), tzinfo=UTC)


def test_the_runs_of_a_day_are_limited_with_a_429_naming_the_quota_and_its_reset(
    counting, user, user_client, runnable, set_quota
):
    set_quota(user, runs_per_day=2)

    statuses = [user_client.post(runs_url(runnable), {"inputs": {"city": "Lyon"}}).status_code for _ in range(2)]
    refused = user_client.post(runs_url(runnable), {"inputs": {"city": "Lyon"}})

    assert statuses == [202, 202]
    assert refused.status_code == 429
    body = refused.json()
    assert body["code"] == "quota_exceeded"
    assert body["quota"] == "runs_per_day"
    assert body["limit"] == 2
    assert datetime.fromisoformat(body["resets_at"]) == next_utc_midnight()
    assert body["retry_after"] == int(refused["Retry-After"])
    seconds_left = (next_utc_midnight() - timezone.now()).total_seconds()
    assert seconds_left - 5 <= body["retry_after"] <= seconds_left + 1
    assert Run.objects.filter(workflow=runnable).count() == 2


def test_a_refused_start_takes_nothing_and_yesterdays_count_does_not_matter(counting, user, runnable, set_quota):
    set_quota(user, runs_per_day=2, concurrent_runs=1)
    first = start(runnable, user)
    with pytest.raises(QuotaExceeded) as too_many:
        start(runnable, user)  # refused for concurrency: the day's count is not touched
    assert too_many.value.extra["quota"] == "concurrent_runs"
    Run.objects.filter(pk=first.pk).update(status=RunStatus.SUCCEEDED)
    start(runnable, user)
    Run.objects.filter(workflow=runnable).update(status=RunStatus.SUCCEEDED)
    for _ in range(3):  # each refusal gives back what it took
        with pytest.raises(QuotaExceeded) as used_up:
            start(runnable, user)
        assert used_up.value.extra["quota"] == "runs_per_day"
    assert Run.objects.filter(workflow=runnable).count() == 2
    set_quota(user, runs_per_day=3)
    start(runnable, user)  # the refusals left the count at 2
    Run.objects.filter(workflow=runnable).update(status=RunStatus.SUCCEEDED)
    if counting == "database":
        yesterday = timezone.now().date() - timedelta(days=1)
        QuotaCounter.objects.filter(key=f"runs_per_day:user:{user.pk}").update(day=yesterday)
        start(runnable, user)  # a new day counts from zero
        assert QuotaCounter.objects.get(key=f"runs_per_day:user:{user.pk}").count == 1


def test_a_start_that_fails_gives_its_place_back(counting, user, runnable, set_quota):
    set_quota(user, runs_per_day=2)
    schedule = ScheduledWorkflowFactory(workflow=runnable, owner=user)
    tick = timezone.now().replace(microsecond=0)
    run_start(workflow=runnable, user=user, inputs={}, schedule=schedule, scheduled_tick=tick)
    with pytest.raises(Exception, match="runs_schedule_tick_unique|duplicate|UNIQUE"):
        run_start(workflow=runnable, user=user, inputs={}, schedule=schedule, scheduled_tick=tick)

    start(runnable, user)  # the failed start did not use the second place
    with pytest.raises(QuotaExceeded):
        start(runnable, user)


def test_runs_at_once_are_limited_until_one_ends(counting, user, user_client, runnable, set_quota):
    set_quota(user, concurrent_runs=2)
    RunFactory(workflow=runnable, status=RunStatus.RUNNING)
    start(runnable, user)

    refused = user_client.post(runs_url(runnable), {"inputs": {}})

    assert refused.status_code == 429
    body = refused.json()
    assert (body["code"], body["quota"], body["limit"]) == ("quota_exceeded", "concurrent_runs", 2)
    assert body["resets_at"] is None
    assert int(refused["Retry-After"]) >= 1
    Run.objects.filter(workflow=runnable, status=RunStatus.RUNNING).update(status=RunStatus.FAILED)
    assert user_client.post(runs_url(runnable), {"inputs": {}}).status_code == 202


def test_the_limits_are_each_users_own(counting, user, runnable, set_quota):
    set_quota(user, runs_per_day=1)
    member = UserFactory()
    WorkflowMemberFactory(workflow=runnable, user=member, role=WorkflowMember.Role.EXECUTOR)

    start(runnable, user)
    with pytest.raises(QuotaExceeded):
        start(runnable, user)
    start(runnable, member)  # the member's own day, on the default quota

    assert Run.objects.filter(workflow=runnable, triggered_by=member).count() == 1


def test_a_workflows_runs_of_the_day_are_limited_by_its_owners_quota_whoever_starts_them(
    counting, user, runnable, set_quota, client_for
):
    set_quota(user, workflow_runs_per_day=2)
    member = UserFactory()
    WorkflowMemberFactory(workflow=runnable, user=member, role=WorkflowMember.Role.EXECUTOR)

    start(runnable, member)
    start(runnable, user)
    refused = client_for(member).post(runs_url(runnable), {"inputs": {}})

    assert refused.status_code == 429
    assert refused.json()["quota"] == "workflow_runs_per_day"
    assert refused.json()["limit"] == 2


def test_the_defaults_come_from_settings(counting, user, runnable, settings):
    settings.WEFT = {**settings.WEFT, "QUOTAS": {**settings.WEFT["QUOTAS"], "RUNS_PER_DAY": 1}}
    start(runnable, user)
    with pytest.raises(QuotaExceeded) as refused:
        start(runnable, user)
    assert refused.value.extra["limit"] == 1


def test_runs_started_by_a_client_app_count_for_the_workflows_owner(user, runnable, set_quota):
    set_quota(user, concurrent_runs=1)
    run_start(workflow=runnable, user=None, inputs={}, trigger=RunTrigger.APP)

    with pytest.raises(QuotaExceeded) as refused:
        start(runnable, user)
    assert refused.value.extra["quota"] == "concurrent_runs"


def test_a_schedules_tick_refused_by_a_quota_is_a_failed_run_naming_it(user, runnable, set_quota):
    set_quota(user, concurrent_runs=0)
    schedule = schedule_create(user=user, workflow=runnable, cron="0 9 * * *", timezone_name="UTC", inputs={})
    in_effect_since(schedule, datetime(2025, 1, 1, tzinfo=UTC))

    run = schedule_fire(schedule_id=schedule.pk, now=datetime(2025, 7, 1, 9, 0, 30, tzinfo=UTC))

    assert run.status == RunStatus.FAILED
    assert "concurrent_runs" in run.error
    assert schedule_fire(schedule_id=schedule.pk, now=datetime(2025, 7, 1, 9, 0, 40, tzinfo=UTC)) is None


def test_a_client_apps_run_past_the_owners_quota_is_a_429(api_client, user, runnable, set_quota):
    workflow_publish(workflow=runnable, version="1.0.0", user=user)
    app = AppFactory(owner=user, api_key="wk_quota", api_secret="app-secret-of-quota-test")
    LicenseFactory(app=app, group=runnable)
    set_quota(user, workflow_runs_per_day=1)
    credentials = {"HTTP_AUTHORIZATION": "Bearer wk_quota:app-secret-of-quota-test"}
    path = f"/api/v1/app/workflows/{runnable.pk}/runs/"

    first = api_client.post(path, {"inputs": {}}, format="json", **credentials)
    refused = api_client.post(path, {"inputs": {}}, format="json", **credentials)

    assert first.status_code == 202
    assert refused.status_code == 429
    assert (refused.json()["quota"], refused.json()["limit"]) == ("workflow_runs_per_day", 1)
    assert Run.objects.get(workflow=runnable).app == app
