"""The retention purge's figures on PostgreSQL: a month of run events deleted row by row, or dropped whole.

A month long past gets ``EVENTS`` events of ``RUNS`` finished runs (generated in the database by
``INSERT ... SELECT generate_series``), in its own ``run_events`` partition. ``events_purge_delete_s``
is how long the DELETE that removed them before partitioning takes (``DELETE ... WHERE run_id =
ANY(...)``, as deleting the runs cascades to their events, ``RETENTION_BATCH_SIZE`` runs a
statement), committed; it also leaves that many dead rows for autovacuum. The same rows are
generated again and ``events_purge_drop_s`` is how long ``run_event_partitions_drop`` takes to
check the month's runs and drop its partition. The runs themselves then go as the purge deletes
them, in both cases alike, and are not timed.
"""

import time
from datetime import UTC, datetime

from django.db import connection
from django.db.models import Q

from config.conf import weft_settings
from workflows.models import Run, RunEvent, RunStatus, Workflow
from workflows.partitions import run_event_partitions_drop, run_event_partitions_ensure, run_events_partitioned

ORDER = 60
RUNS = 1_000
EVENTS = 1_000_000
MONTH = datetime(2001, 1, 1, tzinfo=UTC)
MONTH_END = datetime(2001, 2, 1, tzinfo=UTC)


def run(ctx) -> list[dict]:
    if not run_events_partitioned():
        ctx.warn("the partition purge is measured on PostgreSQL only")
        return [ctx.result("events_purge_drop_s", None, "s", note="needs PostgreSQL (partitioned run_events)")]
    workflow = Workflow.objects.create(owner=ctx.user, name="bench: partitions")
    try:
        run_ids = _runs(workflow)
        run_event_partitions_ensure(now=MONTH, months_ahead=0)
        _events(workflow)
        began = time.perf_counter()
        batch = weft_settings.RETENTION_BATCH_SIZE
        for start in range(0, len(run_ids), batch):
            with connection.cursor() as cursor:
                cursor.execute("DELETE FROM run_events WHERE run_id = ANY(%s)", [run_ids[start : start + batch]])
        deleted = time.perf_counter() - began
        _events(workflow)
        began = time.perf_counter()
        dropped = run_event_partitions_drop(cutoff=MONTH_END, purged=Q(workflow=workflow))
        drop = time.perf_counter() - began
        if not dropped:
            ctx.warn("the bench's month partition was not dropped")
            drop = None
    finally:
        run_event_partitions_drop(cutoff=MONTH_END, purged=Q(workflow=workflow))
        RunEvent.objects.filter(run__workflow=workflow).delete()
        workflow.delete()
    note = f"a month of {EVENTS:,} events of {RUNS:,} runs"
    return [
        ctx.result("events_purge_delete_s", deleted, "s", note=f"{note}: DELETE by run, committed (before)"),
        ctx.result("events_purge_drop_s", drop, "s", note=f"{note}: its partition dropped (now)"),
    ]


def _runs(workflow: Workflow) -> list:
    runs = Run.objects.bulk_create(
        Run(workflow=workflow, triggered_by=workflow.owner, status=RunStatus.SUCCEEDED) for _ in range(RUNS)
    )
    Run.objects.filter(workflow=workflow).update(created_at=MONTH, started_at=MONTH, finished_at=MONTH)
    return [run.pk for run in runs]


def _events(workflow: Workflow) -> None:
    """EVENTS events spread over the workflow's runs, as the journal stores a node's success."""
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO run_events (run_id, run_created_at, seq, type, node_id, data, at)"
            " SELECT r.id, r.created_at, s.seq, 'node.succeeded', 'n' || s.seq,"
            " jsonb_build_object('output', jsonb_build_object('text', 'hello')), r.created_at + s.seq * interval '1 ms'"
            " FROM runs r CROSS JOIN generate_series(1, %s) AS s(seq) WHERE r.workflow_id = %s",
            [EVENTS // RUNS, workflow.pk],
        )
