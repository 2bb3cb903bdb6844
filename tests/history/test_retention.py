"""The retention purge: finished runs (tasks, events) and node history older than the window go, in batches."""

import time
from dataclasses import asdict
from datetime import timedelta

import pytest
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone

from history.models import AuditLog, WorkflowNodeHistory
from tests.factories import (
    AuditLogFactory,
    RunEventFactory,
    RunFactory,
    TaskFactory,
    UsageMetricFactory,
    WorkflowNodeHistoryFactory,
)
from tests.threads import held_in_another_transaction
from workflows.models import Run, RunEvent, Task
from workflows.retention import PurgeReport, retention_purge, retention_purge_if_due
from workflows.tasks import retention_purge_task

pytestmark = pytest.mark.django_db


def run_aged(days: float, status: str = "succeeded", *, events: int = 2, tasks: int = 2) -> Run:
    """A run created and (if it ended) finished ``days`` ago, with tasks and events."""
    at = timezone.now() - timedelta(days=days)
    run = RunFactory(status=status)
    finished = at if status in ("succeeded", "failed", "cancelled") else None
    Run.objects.filter(pk=run.pk).update(created_at=at, started_at=at, finished_at=finished)
    for _ in range(tasks):
        TaskFactory(run=run, status="succeeded")
    for seq in range(1, events + 1):
        RunEventFactory(run=run, seq=seq, at=at)
    return run


def history_aged(days: float) -> WorkflowNodeHistory:
    row = WorkflowNodeHistoryFactory()
    WorkflowNodeHistory.objects.filter(pk=row.pk).update(create_time=timezone.now() - timedelta(days=days))
    return row


def test_only_finished_runs_older_than_30_days_go_with_their_tasks_and_events():
    old = [run_aged(31, status) for status in ("succeeded", "failed", "cancelled")]
    old_but_running = run_aged(45, "running")
    old_but_pending = run_aged(45, "pending")
    recent = run_aged(29)
    report = retention_purge()
    assert report.runs == 3
    remaining = set(Run.objects.values_list("pk", flat=True))
    assert remaining == {old_but_running.pk, old_but_pending.pk, recent.pk}
    assert not Task.objects.filter(run__in=old).exists()
    assert not RunEvent.objects.filter(run_id__in=[run.pk for run in old]).exists()
    assert Task.objects.filter(run=recent).count() == 2
    assert RunEvent.objects.filter(run=old_but_running).count() == 2


def test_a_run_finished_inside_the_window_stays_even_if_it_began_before():
    run = run_aged(40)
    Run.objects.filter(pk=run.pk).update(finished_at=timezone.now() - timedelta(days=1))
    assert retention_purge().runs == 0
    assert Run.objects.filter(pk=run.pk).exists()


def test_the_purge_goes_in_batches():
    for _ in range(5):
        run_aged(60)
    for _ in range(3):
        history_aged(60)
    report = retention_purge(batch_size=2)
    assert report == PurgeReport(runs=5, node_history=3, batches=3 + 2)
    assert not Run.objects.exists()
    assert not WorkflowNodeHistory.objects.exists()


def test_usage_and_the_audit_trail_survive_the_runs_they_describe():
    run = run_aged(90)
    usage = UsageMetricFactory(run=run, workflow=run.workflow, tokens_in=42)
    audit = AuditLogFactory()
    AuditLog.objects.filter(pk=audit.pk).update(created_at=timezone.now() - timedelta(days=400))
    retention_purge()
    assert not Run.objects.filter(pk=run.pk).exists()
    usage.refresh_from_db()
    assert (usage.run, usage.workflow, usage.tokens_in) == (None, run.workflow, 42)
    assert AuditLog.objects.filter(pk=audit.pk).exists()


def test_node_history_older_than_the_window_goes():
    old, recent = history_aged(31), history_aged(2)
    assert retention_purge().node_history == 1
    assert list(WorkflowNodeHistory.objects.values_list("pk", flat=True)) == [recent.pk]
    assert not WorkflowNodeHistory.objects.filter(pk=old.pk).exists()


def test_the_window_is_a_setting(settings):
    settings.WEFT = {**settings.WEFT, "RETENTION_DAYS": 7}
    old, kept = run_aged(8), run_aged(6)
    assert retention_purge().runs == 1
    assert list(Run.objects.values_list("pk", flat=True)) == [kept.pk]
    assert not Run.objects.filter(pk=old.pk).exists()


def test_no_window_keeps_everything(settings):
    settings.WEFT = {**settings.WEFT, "RETENTION_DAYS": None}
    run_aged(3650)
    assert retention_purge() == PurgeReport()
    assert Run.objects.count() == 1


@pytest.mark.parametrize("days", [0, -1, "30", 2.5])
def test_a_bad_window_is_refused(settings, days):
    settings.WEFT = {**settings.WEFT, "RETENTION_DAYS": days}
    run_aged(3650)
    with pytest.raises(ImproperlyConfigured):
        retention_purge()
    assert Run.objects.count() == 1


def test_embedded_mode_purges_at_most_once_per_interval():
    run_aged(31)
    assert retention_purge_if_due() == PurgeReport(runs=1, batches=1)
    run_aged(31)
    assert retention_purge_if_due() is None
    assert Run.objects.count() == 1


def test_the_beat_task_purges_and_reports():
    run_aged(31)
    history_aged(31)
    # The old run was never metered: the task meters it before purging it.
    assert retention_purge_task() == {**asdict(PurgeReport(runs=1, node_history=1, batches=2)), "metered": 1}
    assert not Run.objects.exists()
    assert not WorkflowNodeHistory.objects.exists()


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(
    not settings.DATABASES["default"]["ENGINE"].endswith("postgresql"), reason="row locks need PostgreSQL"
)
def test_a_run_another_transaction_holds_is_left_for_later_not_waited_for():
    held, others = run_aged(40), [run_aged(40) for _ in range(3)]

    def take() -> None:
        Run.objects.select_for_update().filter(pk=held.pk).values_list("pk").get()

    with held_in_another_transaction(take, wait_s=5):
        began = time.monotonic()
        report = retention_purge(batch_size=2)
        assert time.monotonic() - began < 3
    assert report.runs == 3
    assert list(Run.objects.values_list("pk", flat=True)) == [held.pk]
    assert not Run.objects.filter(pk__in=[run.pk for run in others]).exists()
    assert retention_purge().runs == 1
