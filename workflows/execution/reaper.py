"""The reaper: recovers the runs whose worker is gone, and the dispatches that were lost.

Every REAPER_INTERVAL_S: a Celery beat task with Redis (``workflows.runs_reap``), the server's
run loop in embedded mode.
"""

from datetime import timedelta

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from config.conf import weft_settings
from workflows.models import Run, RunStatus
from workflows.quotas import runs_over_duration

from .dispatch import run_dispatch
from .ending import run_close


def runs_reap(*, now=None) -> dict[str, int]:
    """Recover runs whose worker is gone: resume them elsewhere, or end them once their attempts are spent.

    A running run with an expired lease is cancelled if a cancel was requested, failed with a
    reason after MAX_DISPATCH_ATTEMPTS claims, else released and dispatched again. A pending run
    held by a worker whose hold expired (the worker died with its message, workflows.execution.holds)
    is dispatched again, as is a run still pending long after its last update (its dispatch was
    lost). A run running for longer than its user's quota allows is failed (its worker sees it and
    stops).
    """
    now = now or timezone.now()
    counts = {"resumed": 0, "failed": 0, "cancelled": 0, "redispatched": 0}
    for run_id, error in runs_over_duration(now=now):
        with transaction.atomic():
            running = Q(status=RunStatus.RUNNING)
            counts["failed"] += run_close(run_id=run_id, guard=running, status=RunStatus.FAILED, error=error, now=now)
    expired = Q(status=RunStatus.RUNNING) & (Q(lease_expires_at__lt=now) | Q(lease_expires_at__isnull=True))
    grace = timedelta(seconds=weft_settings.REDISPATCH_GRACE_S)
    for run_id, attempts, cancel in Run.objects.filter(expired).values_list(
        "pk", "dispatch_attempts", "cancel_requested"
    ):
        with transaction.atomic():
            if cancel:
                counts["cancelled"] += run_close(run_id=run_id, guard=expired, status=RunStatus.CANCELLED, now=now)
            elif attempts >= weft_settings.MAX_DISPATCH_ATTEMPTS:
                error = f"The run's worker was lost {attempts} times; it was not resumed again."
                counts["failed"] += run_close(
                    run_id=run_id, guard=expired, status=RunStatus.FAILED, error=error, now=now
                )
            elif Run.objects.filter(expired, pk=run_id).update(
                lease_owner="", lease_expires_at=now + grace, updated_at=now
            ):
                counts["resumed"] += 1
                transaction.on_commit(lambda run_id=run_id: run_dispatch(run_id=run_id), robust=True)
    counts["redispatched"] += _runs_held_by_the_dead_redispatch(now=now)
    stale = now - timedelta(seconds=weft_settings.PENDING_REDISPATCH_S)
    for run_id in Run.objects.filter(status=RunStatus.PENDING, updated_at__lt=stale).values_list("pk", flat=True):
        with transaction.atomic():
            if Run.objects.filter(pk=run_id, status=RunStatus.PENDING, updated_at__lt=stale).update(updated_at=now):
                counts["redispatched"] += 1
                transaction.on_commit(lambda run_id=run_id: run_dispatch(run_id=run_id), robust=True)
    return counts


def _runs_held_by_the_dead_redispatch(*, now) -> int:
    """Dispatch again the pending runs whose worker's hold expired; how many."""
    dead = Q(status=RunStatus.PENDING, lease_expires_at__lt=now) & ~Q(lease_owner="")
    count = 0
    for run_id in Run.objects.filter(dead).values_list("pk", flat=True):
        with transaction.atomic():
            if Run.objects.filter(dead, pk=run_id).update(lease_owner="", lease_expires_at=None, updated_at=now):
                count += 1
                transaction.on_commit(lambda run_id=run_id: run_dispatch(run_id=run_id), robust=True)
    return count
