"""run_events partitioned by month of its run's creation (PostgreSQL), its rows kept (docs/partitions.md).

Every event gets a copy of its run's ``created_at`` (``run_created_at``), the partition key. On
PostgreSQL the table is then rebuilt in this migration's one transaction: the old table renamed,
the partitioned one created like it (a partition per month of the runs' and for this month and the
three after it, and a DEFAULT partition), the rows copied with their run's creation time, the old table
dropped, and the keys and indexes added under the names Django gave them (the primary key and the
unique key with the partition key in them, as PostgreSQL requires). On an empty table (a fresh
install, a test database) it takes milliseconds. Elsewhere (SQLite) the table stays as it is, with
the new column filled. Reversible: backwards, the table is rebuilt unpartitioned the same way.
"""

import datetime

from django.db import migrations, models

EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
#: Months created ahead of the current one (workflows.partitions goes on creating them, by beat).
MONTHS_AHEAD = 3
COLUMNS = "id, seq, type, node_id, data, at, run_id, run_created_at"
OLD = "run_events_rebuilt"


def _month(moment: datetime.datetime) -> int:
    """Months since year 0 (UTC): consecutive months are consecutive numbers."""
    moment = moment.astimezone(datetime.UTC)
    return moment.year * 12 + moment.month - 1


def _month_start(month: int) -> str:
    return f"{month // 12:04d}-{month % 12 + 1:02d}-01 00:00+00"


def _months(cursor) -> list[int]:
    """The months of the runs (a scan of ``runs``, smaller than the copy's), this one and MONTHS_AHEAD after it."""
    cursor.execute("SELECT DISTINCT date_trunc('month', created_at, 'UTC') FROM runs")
    months = {_month(start) for (start,) in cursor.fetchall()}
    cursor.execute("SELECT now()")
    now = _month(cursor.fetchone()[0])
    return sorted(months | set(range(now, now + MONTHS_AHEAD + 1)))


def _sequence(cursor) -> str:
    cursor.execute("SELECT pg_get_serial_sequence('run_events', 'id')")
    return cursor.fetchone()[0]


def _rebuild(cursor, *, partitioned: bool) -> None:
    """Rename the table, create it anew (partitioned or not) like the old, copy, drop the old, add the keys."""
    cursor.execute(f"SELECT last_value, is_called FROM {_sequence(cursor)}")  # noqa: S608
    last_value, is_called = cursor.fetchone()
    cursor.execute(f"ALTER TABLE run_events RENAME TO {OLD}")
    partitioning = " PARTITION BY RANGE (run_created_at)" if partitioned else ""
    cursor.execute(
        f"CREATE TABLE run_events (LIKE {OLD} INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING IDENTITY)"
        f"{partitioning}"
    )
    if partitioned:
        for month in _months(cursor):
            cursor.execute(
                f"CREATE TABLE run_events_p{month // 12:04d}{month % 12 + 1:02d} PARTITION OF run_events"
                f" FOR VALUES FROM ('{_month_start(month)}') TO ('{_month_start(month + 1)}')"
            )
        cursor.execute("CREATE TABLE run_events_default PARTITION OF run_events DEFAULT")
        source = (
            f"SELECT e.id, e.seq, e.type, e.node_id, e.data, e.at, e.run_id, r.created_at"  # noqa: S608
            f" FROM {OLD} e JOIN runs r ON r.id = e.run_id"
        )
    else:
        source = f"SELECT {COLUMNS} FROM {OLD}"  # noqa: S608
    cursor.execute(f"INSERT INTO run_events ({COLUMNS}) {source}")
    cursor.execute(f"DROP TABLE {OLD}")
    # The ids go on from where they were, in a sequence of the old name.
    sequence = _sequence(cursor)
    cursor.execute(f"SELECT setval('{sequence}', %s, %s)", [last_value, is_called])
    if sequence.split(".")[-1] != "run_events_id_seq":
        cursor.execute(f"ALTER SEQUENCE {sequence} RENAME TO run_events_id_seq")
    key = ", run_created_at" if partitioned else ""
    cursor.execute(f"ALTER TABLE run_events ADD CONSTRAINT run_events_pkey PRIMARY KEY (id{key})")
    cursor.execute(f"ALTER TABLE run_events ADD CONSTRAINT run_events_run_seq_unique UNIQUE (run_id, seq{key})")
    cursor.execute("CREATE INDEX run_events_run_id_f873bc13 ON run_events (run_id)")
    cursor.execute(
        "ALTER TABLE run_events ADD CONSTRAINT run_events_run_id_f873bc13_fk_runs_id"
        " FOREIGN KEY (run_id) REFERENCES runs (id) DEFERRABLE INITIALLY DEFERRED"
    )


def partition(apps, schema_editor):
    with schema_editor.connection.cursor() as cursor:
        if schema_editor.connection.vendor == "postgresql":
            _rebuild(cursor, partitioned=True)
        else:
            cursor.execute(
                "UPDATE run_events SET run_created_at = (SELECT created_at FROM runs WHERE runs.id = run_events.run_id)"
            )


def unpartition(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        with schema_editor.connection.cursor() as cursor:
            _rebuild(cursor, partitioned=False)


class Migration(migrations.Migration):
    dependencies = [
        ("workflows", "0009_large_outputs"),
    ]

    operations = [
        # Metadata only on PostgreSQL (a constant default, dropped at once); the copy fills it.
        migrations.AddField(
            model_name="runevent",
            name="run_created_at",
            field=models.DateTimeField(default=EPOCH, editable=False),
            preserve_default=False,
        ),
        migrations.RunPython(partition, unpartition, elidable=False),
    ]
