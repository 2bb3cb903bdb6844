"""A finished run whose worker died before metering it is metered by the next sweep, exactly once."""

import asyncio
import threading
from datetime import timedelta

import pytest
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

import workflows.execution.runner as runner
import workflows.usage
from history.models import UsageMetric
from tests.factories import RunFactory, TaskFactory, UsageMetricFactory
from workflows.execution.ending import run_usage_record
from workflows.execution.runner import run_execute
from workflows.models import Run
from workflows.retention import retention_purge
from workflows.tasks import usage_sweep_task
from workflows.usage import usage_sweep

LATER = timedelta(minutes=5)


def unmetered_run(*, age: timedelta = timedelta(minutes=2), status: str = "succeeded", tasks: int = 3) -> Run:
    """A run that ended ``age`` ago and was never metered, as a worker killed at the wrong moment leaves it."""
    at = timezone.now() - age
    run = RunFactory(status=status)
    finished = at if status in ("succeeded", "failed", "cancelled") else None
    Run.objects.filter(pk=run.pk).update(created_at=at - timedelta(seconds=3), started_at=at, finished_at=finished)
    for index in range(tasks):
        TaskFactory(run=run, node_id=f"n{index}", node_type="template", status="succeeded")
    return run


def rows_of(run: Run) -> list[tuple]:
    return list(
        UsageMetric.objects.filter(run=run).order_by("id").values_list("provider", "model", "node_count", "duration_ms")
    )


@pytest.mark.django_db(transaction=True)
def test_a_run_whose_worker_died_before_metering_is_metered_by_the_next_sweep(monkeypatch):
    # The worker commits the final status, then dies before its metering call. (A run that uses no
    # model is metered by the statement that ends it: this one is metered after, as one with a model.)
    monkeypatch.setattr(runner, "graph_uses_models", lambda graph: True)
    monkeypatch.setattr(runner, "run_usage_record", lambda *, run_id, **options: None)
    run = RunFactory()
    assert asyncio.run(run_execute(run_id=run.pk)) == "succeeded"
    assert not UsageMetric.objects.filter(run=run).exists()
    run.refresh_from_db()

    assert usage_sweep(now=timezone.now() + LATER) == 1

    duration_ms = int((run.finished_at - run.started_at).total_seconds() * 1000)
    assert rows_of(run) == [("", "", 3, duration_ms)]  # start, greet, end
    row = UsageMetric.objects.get(run=run)
    assert (row.user_id, row.workflow_id) == (run.triggered_by_id, run.workflow_id)
    assert usage_sweep(now=timezone.now() + LATER) == 0
    assert UsageMetric.objects.filter(run=run).count() == 1


@pytest.mark.django_db
def test_the_sweep_leaves_a_run_that_just_ended_to_its_worker_and_never_meters_an_unfinished_one():
    just_ended = unmetered_run(age=timedelta(seconds=1))
    running, pending = unmetered_run(status="running"), unmetered_run(status="pending")

    assert usage_sweep() == 0
    assert usage_sweep(now=timezone.now() + LATER) == 1
    assert UsageMetric.objects.filter(run=just_ended).count() == 1
    assert not UsageMetric.objects.filter(run__in=[running, pending]).exists()


@pytest.mark.django_db
def test_a_run_already_metered_is_left_alone():
    run = unmetered_run()
    kept = UsageMetricFactory(run=run, tokens_in=7)
    assert usage_sweep() == 0
    assert list(UsageMetric.objects.filter(run=run).values_list("pk", "tokens_in")) == [(kept.pk, 7)]


@pytest.mark.django_db
def test_each_pass_is_bounded_and_takes_the_oldest_first():
    runs = [unmetered_run(age=timedelta(minutes=minutes)) for minutes in (10, 50, 30, 40, 20)]
    oldest_first = sorted(runs, key=lambda run: Run.objects.get(pk=run.pk).created_at)

    assert usage_sweep(limit=2) == 2
    assert set(UsageMetric.objects.values_list("run_id", flat=True)) == {run.pk for run in oldest_first[:2]}
    assert [usage_sweep(limit=2) for _ in range(3)] == [2, 1, 0]
    assert UsageMetric.objects.count() == 5


@pytest.mark.django_db
def test_the_minutely_sweep_looks_back_an_hour_and_the_hourly_one_at_everything():
    old = unmetered_run(age=timedelta(hours=3))
    assert usage_sweep() == 0
    assert usage_sweep(lookback_s=None) == 1
    assert UsageMetric.objects.filter(run=old).count() == 1


@pytest.mark.django_db(transaction=True)
def test_the_embedded_housekeeping_sweeps_too():
    from workflows.execution.run_loop import _reap_once

    recent, older = unmetered_run(), unmetered_run(age=timedelta(hours=3))
    _reap_once()  # the minutely sweep, and the hourly one with the retention purge
    assert UsageMetric.objects.filter(run__in=[recent, older]).count() == 2
    _reap_once()
    assert UsageMetric.objects.count() == 2


@pytest.mark.django_db
def test_the_batch_size_is_a_setting_and_the_beat_task_sweeps(settings):
    settings.WEFT = {**settings.WEFT, "USAGE_SWEEP_BATCH_SIZE": 1}
    first, second = unmetered_run(age=timedelta(minutes=3)), unmetered_run(age=timedelta(minutes=2))
    assert usage_sweep_task() == 1
    assert UsageMetric.objects.filter(run=first).exists()
    assert not UsageMetric.objects.filter(run=second).exists()


@pytest.mark.django_db
def test_a_run_that_cannot_be_metered_is_logged_and_does_not_hold_up_the_others(monkeypatch, caplog):
    broken, fine = unmetered_run(age=timedelta(minutes=3)), unmetered_run(age=timedelta(minutes=2))
    real = workflows.usage._tokens_by_model

    def tokens(*, run, tasks):
        if run.pk == broken.pk:
            raise ValueError("a graph the metering cannot read")
        return real(run=run, tasks=tasks)

    monkeypatch.setattr(workflows.usage, "_tokens_by_model", tokens)
    assert usage_sweep() == 1
    assert not UsageMetric.objects.filter(run=broken).exists()
    assert UsageMetric.objects.filter(run=fine).count() == 1
    assert f"Could not record the usage of run {broken.pk}" in caplog.text


@pytest.mark.django_db
def test_the_retention_purge_meters_a_run_before_deleting_it():
    run = unmetered_run(age=timedelta(days=40))
    workflow_id = run.workflow_id
    assert retention_purge().runs == 1
    assert not Run.objects.filter(pk=run.pk).exists()
    assert list(UsageMetric.objects.values_list("run_id", "workflow_id", "node_count")) == [(None, workflow_id, 3)]


@pytest.mark.django_db
def test_the_database_refuses_to_meter_a_run_twice():
    run = unmetered_run()
    UsageMetricFactory(run=run, provider="fast", model="m")
    with pytest.raises(IntegrityError), transaction.atomic():
        UsageMetricFactory(run=run, provider="fast", model="m")
    # Rows whose run was purged are not bound by it.
    UsageMetricFactory(run=None, provider="fast", model="m")
    UsageMetricFactory(run=None, provider="fast", model="m")


@pytest.mark.django_db(transaction=True)
@pytest.mark.services
def test_sweeps_racing_each_other_and_the_worker_meter_each_run_once():
    """Two sweeps and the workers' own metering, at once on real PostgreSQL: one set of rows per run."""
    runs = [unmetered_run() for _ in range(4)]
    barrier = threading.Barrier(4)
    swept: list[int] = []
    errors: list[BaseException] = []

    def in_thread(work):
        def body():
            try:
                barrier.wait(timeout=10)
                work()
            except BaseException as exc:  # reported by the test below
                errors.append(exc)
            finally:
                connection.close()

        return threading.Thread(target=body)

    def workers_metering():
        for run in runs:
            run_usage_record(run_id=run.pk)

    threads = [
        in_thread(lambda: swept.append(usage_sweep())),
        in_thread(lambda: swept.append(usage_sweep())),
        in_thread(workers_metering),
        in_thread(lambda: [run_usage_record(run_id=run.pk) for run in reversed(runs)]),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert not errors, errors
    assert all(not thread.is_alive() for thread in threads)
    for run in runs:
        assert rows_of(run) == [("", "", 3, 0)]
    assert UsageMetric.objects.count() == len(runs)
    assert sum(swept) <= len(runs)
