"""run_events by month of its runs' creation: partitions made ahead, rows routed and moved, months dropped whole."""

from datetime import UTC, datetime, timedelta

import pytest
from django.conf import settings
from django.db import IntegrityError, connection
from django.db.migrations.executor import MigrationExecutor
from django.db.models import Q
from django.utils import timezone

from tests.factories import RunEventFactory, RunFactory
from tests.threads import held_in_another_transaction
from workflows import partitions
from workflows.models import RUN_FINAL_STATUSES, Run, RunEvent
from workflows.partitions import (
    run_event_partitions,
    run_event_partitions_drop,
    run_event_partitions_ensure,
    run_events_partitioned,
)
from workflows.retention import retention_purge

pytestmark = pytest.mark.django_db
postgresql = pytest.mark.skipif(
    not settings.DATABASES["default"]["ENGINE"].endswith("postgresql"), reason="partitions are PostgreSQL's"
)
MIGRATION = ("workflows", "0010_run_events_partitioned")


def month(shift: int) -> datetime:
    """The first instant (UTC) of the month ``shift`` months from this one."""
    now = timezone.now().astimezone(UTC)
    index = now.year * 12 + now.month - 1 + shift
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)


def run_created(at: datetime, status: str = "succeeded", *, events: int = 2) -> Run:
    """A run created (and, if it ended, finished) at ``at``, with ``events`` events."""
    run = RunFactory(status=status)
    finished = at if status in ("succeeded", "failed", "cancelled") else None
    Run.objects.filter(pk=run.pk).update(created_at=at, started_at=at, finished_at=finished)
    for seq in range(1, events + 1):
        RunEventFactory(run=run, seq=seq, at=at)
    return run


def partition_of(run: Run) -> set[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT DISTINCT tableoid::regclass::text FROM run_events WHERE run_id = %s", [run.pk])
        return {name for (name,) in cursor.fetchall()}


def test_an_event_carries_its_runs_creation_time():
    run = run_created(month(-5) + timedelta(days=3))
    run.refresh_from_db()
    assert set(RunEvent.objects.filter(run=run).values_list("run_created_at", flat=True)) == {run.created_at}


@postgresql
def test_events_lie_in_their_runs_month_and_outside_any_month_in_the_default_partition():
    assert run_events_partitioned()
    names = [partition.name for partition in run_event_partitions()]
    assert names == [f"run_events_p{month(shift):%Y%m}" for shift in range(4)]
    this_month = run_created(timezone.now())
    # A run of a month without a partition (dated by hand here) still gets its events stored.
    long_ago = run_created(month(-7))
    assert partition_of(this_month) == {names[0]}
    assert partition_of(long_ago) == {"run_events_default"}
    # (run, seq) stays unique, the partition key being the same for all of a run's events.
    with pytest.raises(IntegrityError, match=r"\(run_id, seq, run_created_at\)"):
        RunEventFactory(run=this_month, seq=1)


@postgresql
def test_partitions_are_created_ahead_once_and_take_their_rows_from_the_default_partition():
    assert run_event_partitions_ensure() == []  # the migration made this month and three ahead
    waiting = run_created(month(-2) + timedelta(days=10), events=3)
    older = run_created(month(-4))
    created = run_event_partitions_ensure(now=month(-2), months_ahead=1)
    assert created == [f"run_events_p{month(-2):%Y%m}", f"run_events_p{month(-1):%Y%m}"]
    assert partition_of(waiting) == {created[0]}
    assert RunEvent.objects.filter(run=waiting).count() == 3
    assert partition_of(older) == {"run_events_default"}
    assert run_event_partitions_ensure(now=month(-2), months_ahead=1) == []


@postgresql
def test_the_purge_drops_a_month_whose_runs_all_go_and_keeps_one_with_a_run_that_stays():
    run_event_partitions_ensure(now=month(-3), months_ahead=1)
    gone = [run_created(month(-3) + timedelta(days=day)) for day in (1, 20)]
    busy_month = [run_created(month(-2) + timedelta(days=2)), run_created(month(-2) + timedelta(days=5), "running")]
    connection.check_constraints()  # as committed rows: no deferred check pending on the partition
    report = retention_purge()
    assert report.event_partitions == 1
    assert report.runs == 3
    assert f"run_events_p{month(-3):%Y%m}" not in {partition.name for partition in run_event_partitions()}
    assert not Run.objects.filter(pk__in=[run.pk for run in gone]).exists()
    # The month with a run still going keeps its partition; the finished run's events went with it, row by row.
    assert list(Run.objects.values_list("pk", flat=True)) == [busy_month[1].pk]
    assert RunEvent.objects.filter(run=busy_month[1]).count() == 2
    assert not RunEvent.objects.filter(run=busy_month[0]).exists()


@postgresql
def test_a_month_goes_only_once_it_ends_before_the_cutoff():
    run_event_partitions_ensure(now=month(-1), months_ahead=0)
    run = run_created(month(-1) + timedelta(days=2))
    ended = Q(status__in=RUN_FINAL_STATUSES)
    connection.check_constraints()
    assert run_event_partitions_drop(cutoff=month(0) - timedelta(seconds=1), purged=ended) == []
    assert partition_of(run) == {f"run_events_p{month(-1):%Y%m}"}
    assert run_event_partitions_drop(cutoff=month(0), purged=ended) == [f"run_events_p{month(-1):%Y%m}"]
    assert not RunEvent.objects.filter(run=run).exists()


def held(table: str):
    """Another connection reads ``table`` (only: not its partitions) in an open transaction."""

    def take() -> None:
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL lock_timeout = '5s'")
            cursor.execute(f"LOCK TABLE ONLY {table} IN ACCESS SHARE MODE")

    return held_in_another_transaction(take, wait_s=6)


@postgresql
def test_a_partition_whose_lock_is_not_had_in_time_is_left_for_the_next_turn(monkeypatch, caplog):
    monkeypatch.setattr(partitions, "LOCK_TIMEOUT_MS", 100)
    with held("run_events_default"):
        assert run_event_partitions_ensure(now=month(-5), months_ahead=0) == []
    assert f"run_events_p{month(-5):%Y%m}" not in {partition.name for partition in run_event_partitions()}
    run_event_partitions_ensure(now=month(-3), months_ahead=0)
    old = run_created(month(-3) + timedelta(days=1))
    connection.check_constraints()
    with held("run_events"):
        report = retention_purge()
    # The month stays; its runs went all the same, their events row by row.
    assert (report.runs, report.event_partitions) == (1, 0)
    assert f"run_events_p{month(-3):%Y%m}" in {partition.name for partition in run_event_partitions()}
    assert not RunEvent.objects.filter(run_id=old.pk).exists()
    assert [record.getMessage().split(" within")[0] for record in caplog.records] == [
        f"run_events partitions: could not create run_events_p{month(-5):%Y%m}",
        f"run_events partitions: could not drop run_events_p{month(-3):%Y%m}",
    ]


def test_without_partitions_nothing_is_created_or_dropped(settings):
    if connection.vendor == "postgresql":
        pytest.skip("the embedded mode's behaviour (SQLite)")
    run = run_created(timezone.now() - timedelta(days=90))
    assert run_event_partitions_ensure() == []
    report = retention_purge()
    assert (report.runs, report.event_partitions) == (1, 0)
    assert not RunEvent.objects.filter(run_id=run.pk).exists()


@postgresql
@pytest.mark.django_db(transaction=True)
def test_the_migration_keeps_every_event_both_ways():
    before = {partition.name for partition in run_event_partitions()}
    runs = [run_created(month(-1) + timedelta(days=4), events=3), run_created(timezone.now(), events=2)]
    ids = dict(RunEvent.objects.values_list("id", "run_id"))
    executor = MigrationExecutor(connection)
    previous = executor.loader.get_migration(*MIGRATION).dependencies
    try:
        executor.migrate(previous)
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*), to_regclass('run_events_default') FROM run_events")
            assert cursor.fetchone() == (5, None)
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())
        assert dict(RunEvent.objects.values_list("id", "run_id")) == ids
        assert partition_of(runs[0]) == {f"run_events_p{month(-1):%Y%m}"}
        assert partition_of(runs[1]) == {f"run_events_p{month(0):%Y%m}"}
        # The ids go on after the copied ones.
        assert RunEventFactory(run=runs[1], seq=3).pk > max(ids)
    finally:
        with connection.cursor() as cursor:
            for name in {partition.name for partition in run_event_partitions()} - before:
                cursor.execute(f"DROP TABLE {connection.ops.quote_name(name)}")
