"""``run_events``' partitions on PostgreSQL: one table per month of the runs' creation (docs/partitions.md).

Each event carries its run's ``created_at`` (``run_created_at``), the partition key, so all of a
run's events lie in its month's partition ``run_events_pYYYYMM`` (UTC months). A beat task
(``workflows.run_event_partitions_ensure``) creates the partitions of this month and the
:data:`MONTHS_AHEAD` after it; the migration created them up to three months ahead of its day.
An event whose month has no partition (beat stopped for months, a run dated by hand) lands in
the DEFAULT partition, so no insert ever fails; creating its month's partition later moves such
rows into it. Retention drops a month's partition whole, once every run created in it is one
the purge deletes (:func:`run_event_partitions_drop`), instead of deleting its events row by row.

Creating or dropping a partition takes a short exclusive lock (dropping one: on ``run_events``,
so writers wait for it). Each waits at most :data:`LOCK_TIMEOUT_MS` for it, not queuing every
writer behind a long transaction: a partition that could not be had is left for the next turn.

On another database (SQLite: the embedded mode) the table is not partitioned and all of this
does nothing.
"""

import functools
import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime

from django.db import OperationalError, connection, transaction
from django.db.models import Q
from django.utils import timezone

from workflows.models import Run, RunEvent

logger = logging.getLogger(__name__)

#: Months whose partitions exist ahead of the current one.
MONTHS_AHEAD = 3
#: How long creating or dropping a partition waits for its lock before leaving it for the next turn.
LOCK_TIMEOUT_MS = 2000
_TABLE = RunEvent._meta.db_table
_DEFAULT = f"{_TABLE}_default"
_MONTHLY = re.compile(rf"^{_TABLE}_p(\d{{4}})(\d{{2}})$")
_LOCK_NOT_AVAILABLE = "55P03"


@dataclass(frozen=True)
class Partition:
    """A month's partition: events of runs created in [start, end)."""

    name: str
    start: datetime
    end: datetime


def run_events_partitioned() -> bool:
    """Whether ``run_events`` is partitioned here (PostgreSQL, once migrated)."""
    if connection.vendor != "postgresql":
        return False
    with connection.cursor() as cursor:
        cursor.execute("SELECT EXISTS (SELECT 1 FROM pg_partitioned_table WHERE partrelid = to_regclass(%s))", [_TABLE])
        return cursor.fetchone()[0]


def run_event_partitions() -> list[Partition]:
    """The monthly partitions, oldest first (the DEFAULT partition is not one)."""
    if not run_events_partitioned():
        return []
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = to_regclass(%s)",
            [_TABLE],
        )
        names = [name for (name,) in cursor.fetchall()]
    months = []
    for name in names:
        match = _MONTHLY.match(name)
        if match:
            start = datetime(int(match[1]), int(match[2]), 1, tzinfo=UTC)
            months.append(Partition(name=name, start=start, end=_month_after(start)))
    return sorted(months, key=lambda partition: partition.start)


def run_event_partitions_ensure(*, now: datetime | None = None, months_ahead: int = MONTHS_AHEAD) -> list[str]:
    """Create the missing partitions of the month of ``now`` and the ``months_ahead`` after it: their names.

    The rows of such a month that wait in the DEFAULT partition move into the new one, in the
    same transaction (the DEFAULT partition is then locked for as long as that takes).
    """
    if not run_events_partitioned():
        return []
    start = _month_of(now or timezone.now())
    created = []
    for _ in range(months_ahead + 1):
        end = _month_after(start)
        name = f"{_TABLE}_p{start:%Y%m}"
        if _locked_and_done(f"create {name}", functools.partial(_create, name, start, end)):
            created.append(name)
        start = end
    return created


def run_event_partitions_drop(*, cutoff: datetime, purged: Q) -> list[str]:
    """Drop the monthly partitions that end by ``cutoff`` and whose every run is ``purged``: their names.

    ``purged`` is the retention purge's condition on runs: a partition holding an event of a run
    that stays (not ended, or ended after the cutoff) is kept whole. The events of the runs of a
    dropped month are gone before those runs are, which the purge deletes next.
    """
    dropped = []
    for partition in run_event_partitions():
        if partition.end > cutoff:
            break
        in_month = Run.objects.filter(created_at__gte=partition.start, created_at__lt=partition.end)
        if in_month.exclude(purged).exists():
            continue
        if _locked_and_done(f"drop {partition.name}", functools.partial(_drop, partition.name)):
            dropped.append(partition.name)
    return dropped


def _create(name: str, start: datetime, end: datetime) -> str:
    """Attach a new table as the partition ``name`` with the DEFAULT partition's rows of its month; "" if it exists.

    ATTACH locks ``run_events`` only against other schema changes (writers go on), and the DEFAULT
    partition exclusively while it checks that none of its rows belongs to the new month.
    """
    quote = connection.ops.quote_name
    columns = ", ".join(quote(field.column) for field in RunEvent._meta.concrete_fields)
    bounds = f"FROM ('{start.isoformat()}') TO ('{end.isoformat()}')"
    with connection.cursor() as cursor:
        # One creator at a time, so a partition is created once however many beats run.
        cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [f"{_TABLE} partitions"])
        cursor.execute("SELECT to_regclass(%s) IS NOT NULL", [name])
        if cursor.fetchone()[0]:
            return ""
        # Names from the model and this module; the bounds are datetimes rendered here.
        cursor.execute(f"CREATE TABLE {quote(name)} (LIKE {quote(_TABLE)} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)")
        cursor.execute(
            f"WITH moved AS (DELETE FROM {quote(_DEFAULT)} WHERE run_created_at >= %s AND run_created_at < %s"  # noqa: S608
            f" RETURNING {columns}) INSERT INTO {quote(name)} ({columns}) SELECT {columns} FROM moved",
            [start, end],
        )
        cursor.execute(f"ALTER TABLE {quote(_TABLE)} ATTACH PARTITION {quote(name)} FOR VALUES {bounds}")
    return name


def _drop(name: str) -> str:
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE {connection.ops.quote_name(name)}")
    return name


def _locked_and_done(what: str, change) -> str | None:
    """``change()`` in a transaction that waits at most LOCK_TIMEOUT_MS for a lock; None if it did not get one."""
    try:
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute("SELECT set_config('lock_timeout', %s, true)", [f"{LOCK_TIMEOUT_MS}ms"])
            return change()
    except OperationalError as exc:
        if getattr(exc.__cause__, "sqlstate", None) != _LOCK_NOT_AVAILABLE:
            raise
        logger.warning("run_events partitions: could not %s within %s ms; next turn", what, LOCK_TIMEOUT_MS)
        return None


def _month_of(moment: datetime) -> datetime:
    moment = moment.astimezone(UTC)
    return datetime(moment.year, moment.month, 1, tzinfo=UTC)


def _month_after(start: datetime) -> datetime:
    return datetime(start.year + start.month // 12, start.month % 12 + 1, 1, tzinfo=UTC)
