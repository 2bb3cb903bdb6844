"""A run past its user's maximum duration is failed by the reaper, with an error naming the quota."""

import asyncio
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from tests.engine.conftest import chain, end, node, start
from tests.factories import RunFactory, UserFactory, WorkflowFactory
from tests.threads import in_thread
from workflows.execution.reaper import runs_reap
from workflows.execution.runner import run_execute
from workflows.execution.services import run_start
from workflows.models import Run, RunEvent, RunStatus, Task, TaskStatus
from workflows.services import workflow_create

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("undispatched")]


async def until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await in_thread(condition):
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


def test_a_running_run_past_its_limit_is_failed_and_its_worker_stops(user, set_quota, settings):
    settings.WEFT = {**settings.WEFT, "ENGINE": {**settings.WEFT["ENGINE"], "CANCEL_POLL_S": 0.05}}
    set_quota(user, max_run_duration_s=60)
    graph = chain(start(), node("nap", "test_sleep", {"seconds": 30}), end())
    run = run_start(workflow=workflow_create(owner=user, name="Slow", graph=graph), user=user, inputs={})

    async def scenario():
        worker = asyncio.create_task(run_execute(run_id=run.pk))
        await until(lambda: Task.objects.filter(run=run, node_id="nap", status=TaskStatus.RUNNING).exists())
        started_at = await in_thread(lambda: Run.objects.get(pk=run.pk).started_at)
        early = await in_thread(runs_reap, now=started_at + timedelta(seconds=59))
        late = await in_thread(runs_reap, now=started_at + timedelta(seconds=60))
        return early, late, await asyncio.wait_for(worker, timeout=5)

    early, late, worker_result = asyncio.run(scenario())

    assert (early["failed"], late["failed"]) == (0, 1)
    assert worker_result == "lost"  # it saw the run end and stopped without writing more
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED
    assert "maximum duration of 60 s" in run.error
    assert "max_run_duration_s" in run.error
    final = RunEvent.objects.filter(run=run).order_by("-seq").first()
    assert (final.type, final.data) == ("run.failed", {"error": run.error})
    assert Task.objects.get(run=run, node_id="nap").status == TaskStatus.CANCELLED


def test_each_run_has_the_limit_of_the_user_it_counts_for(user, set_quota, settings):
    settings.WEFT = {**settings.WEFT, "QUOTAS": {**settings.WEFT["QUOTAS"], "MAX_RUN_DURATION_S": 10}}
    patient = UserFactory()
    set_quota(patient, max_run_duration_s=100)
    now = timezone.now()
    lease = now + timedelta(minutes=5)  # held by a live worker
    began = now - timedelta(seconds=30)

    def running(workflow, triggered_by):
        return RunFactory(
            workflow=workflow,
            triggered_by=triggered_by,
            status=RunStatus.RUNNING,
            started_at=began,
            lease_owner="w",
            lease_expires_at=lease,
        )

    defaulted = running(WorkflowFactory(owner=user), user)
    allowed_longer = running(WorkflowFactory(owner=patient), patient)
    by_an_app = running(WorkflowFactory(owner=patient), None)  # counts for the workflow's owner

    assert runs_reap(now=now)["failed"] == 1

    statuses = dict(Run.objects.values_list("pk", "status"))
    assert statuses[defaulted.pk] == RunStatus.FAILED
    assert statuses[allowed_longer.pk] == statuses[by_an_app.pk] == RunStatus.RUNNING
    assert "maximum duration of 10 s" in Run.objects.get(pk=defaulted.pk).error
