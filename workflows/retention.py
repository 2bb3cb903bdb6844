"""Retention: finished runs (with their tasks and events) and node history older than the window go.

The window is ``WEFT_RETENTION_DAYS`` (30 by default, seed 001; ``None`` keeps
everything). Deletion goes in batches of ``RETENTION_BATCH_SIZE`` ids, each in a short
transaction of its own, so that no table is locked and runs being written meanwhile wait for
nothing. Only runs that have ended (succeeded, failed, cancelled) go, with the outputs they kept in
object storage (deleted once their batch commits); ``usage_metrics`` rows stay
(their ``run`` becomes null) and so does the audit trail. A run that was never metered (its worker
died first) is metered just before it is deleted.

On PostgreSQL the events of runs go by month (workflows.partitions): a month's ``run_events``
partition that ends before the cutoff, all of whose runs the purge deletes, is dropped whole
first; the runs' deletes then find none of their events to delete. The events of other runs (a
month with a run still going, the DEFAULT partition, SQLite) go row by row with their runs.

A beat task (``history.retention_purge``, see :mod:`workflows.tasks`) calls
:func:`retention_purge`; in embedded mode the engine's periodic loop calls
:func:`retention_purge_if_due`, which purges at most once per ``RETENTION_INTERVAL_S``.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.core.cache import cache
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from config.conf import weft_settings
from history.models import WorkflowNodeHistory
from workflows.models import RUN_FINAL_STATUSES, Run

from .execution.large_outputs import stored_outputs_delete_on_commit
from .partitions import run_event_partitions_drop
from .usage import usage_record_missing, usage_sweep

DUE_KEY = "weft:history:retention-purge-due"


@dataclass(frozen=True)
class PurgeReport:
    runs: int = 0
    node_history: int = 0
    batches: int = 0
    #: Months of run_events dropped whole (PostgreSQL), their events with them.
    event_partitions: int = 0


def retention_cutoff(*, now: datetime | None = None) -> datetime | None:
    """Rows older than this go; None when retention is off."""
    days = weft_settings.RETENTION_DAYS
    if days is None:
        return None
    if isinstance(days, bool) or not isinstance(days, int) or days < 1:
        raise ImproperlyConfigured('WEFT["RETENTION_DAYS"] must be a whole number of days, at least 1, or None.')
    return (now or timezone.now()) - timedelta(days=days)


def retention_purge(*, now: datetime | None = None, batch_size: int | None = None) -> PurgeReport:
    """Delete the finished runs and the node history older than the retention window, batch by batch."""
    cutoff = retention_cutoff(now=now)
    if cutoff is None:
        return PurgeReport()
    batch_size = batch_size or weft_settings.RETENTION_BATCH_SIZE
    # Finished before the cutoff (so created before it too: the created_at index finds them).
    purged = Q(status__in=RUN_FINAL_STATUSES, created_at__lt=cutoff, finished_at__lt=cutoff)
    event_partitions = len(run_event_partitions_drop(cutoff=cutoff, purged=purged))
    old_runs = Run.objects.filter(purged)
    runs, run_batches = _purge_in_batches(
        old_runs, order="created_at", batch_size=batch_size, before_delete=_before_runs_deleted
    )
    old_history = WorkflowNodeHistory.objects.filter(create_time__lt=cutoff)
    history, history_batches = _purge_in_batches(old_history, order="pk", batch_size=batch_size)
    return PurgeReport(
        runs=runs, node_history=history, batches=run_batches + history_batches, event_partitions=event_partitions
    )


def _before_runs_deleted(ids: list) -> None:
    """Meter the runs never metered; their stored outputs go once their rows have (on commit)."""
    usage_record_missing(run_ids=ids)
    stored_outputs_delete_on_commit(run_ids=ids)


def retention_purge_if_due(*, now: datetime | None = None) -> PurgeReport | None:
    """Meter unmetered runs, then purge; at most once per RETENTION_INTERVAL_S in processes sharing the cache."""
    if not cache.add(DUE_KEY, True, timeout=weft_settings.RETENTION_INTERVAL_S):
        return None
    usage_sweep(now=now, lookback_s=None)
    return retention_purge(now=now)


def _purge_in_batches(queryset, *, order: str, batch_size: int, before_delete=None) -> tuple[int, int]:
    """Delete the rows of ``queryset`` (and what cascades from them), oldest first, ``batch_size`` at a time.

    ``order`` is an indexed column, so that each batch reads its ids off an index.
    ``before_delete(ids)`` runs in each batch's transaction, with the rows locked.
    """
    deleted = batches = 0
    model = queryset.model
    while True:
        with transaction.atomic():
            # Rows another transaction holds are left for the next purge instead of waited for.
            ids = list(
                queryset.select_for_update(skip_locked=True).order_by(order).values_list("pk", flat=True)[:batch_size]
            )
            if not ids:
                return deleted, batches
            if before_delete is not None:
                before_delete(ids)
            model.objects.filter(pk__in=ids).delete()
        deleted += len(ids)
        batches += 1
