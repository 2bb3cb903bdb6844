"""Quotas: what one user may own and run, checked where workflows are created and runs start.

Each quota has a default in ``settings.WEFT["QUOTAS"]`` (``WEFT_QUOTA_*``, read through
``config.conf.weft_settings``), which a ``UserQuota`` row (the user's page in the admin) overrides:

- ``max_workflows``: workflows the user owns. Reaching it is a 403; it frees up when one is deleted.
- ``concurrent_runs``: the user's runs pending or running. A 429 until one of them ends.
- ``runs_per_day``: runs the user started this UTC day. A 429 until midnight UTC.
- ``workflow_runs_per_day``: runs of one workflow this UTC day, whoever started them, by the
  quota of the workflow's owner. A 429 until midnight UTC.
- ``max_run_duration_s``: a run still running after this long is failed by the reaper
  (``runs_reap``, every ``REAPER_INTERVAL_S``), with an error naming the quota.

A run counts for the user who started it or, when nobody signed in did (a client app), for the
workflow's owner. The checks are atomic across processes: each runs under a lock on that user's
row, and counts what is in the database (workflows owned, runs in flight) or in a day counter:
a Redis INCR when there is Redis, a ``quota_counters`` row in the same transaction in embedded
mode. A start that is refused or fails gives its increments back.

The checks live beside the runs and workflows they count; the overrides and the day counters are
rows of ``accounts``, which knows nothing of workflows.
"""

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.db.models import Case, F, Min, Q, QuerySet, Value, When
from django.db.models.functions import Coalesce
from django.utils import timezone

from accounts.models import QUOTAS, QuotaCounter, User, UserQuota
from config.conf import weft_settings
from config.errors import QuotaExceeded, QuotaLimitReached
from config.redis_connection import redis_client

from .models import Run, RunStatus, Workflow

#: What a caller refused for too many runs at once is told to wait before trying again (seconds).
CONCURRENT_RETRY_AFTER_S = 5
#: Day counters in Redis outlive their day by this much, then expire.
DAY_COUNTER_TTL_S = 2 * 86400


@dataclass(frozen=True)
class QuotaLimits:
    max_workflows: int
    runs_per_day: int
    concurrent_runs: int
    max_run_duration_s: int
    workflow_runs_per_day: int


def quota_limits(*, user_id: int) -> QuotaLimits:
    """The user's limits: the defaults from settings, overridden by the fields set in their UserQuota."""
    overrides = UserQuota.objects.filter(user_id=user_id).values(*QUOTAS).first() or {}
    return QuotaLimits(
        **{
            name: getattr(weft_settings, name.upper()) if overrides.get(name) is None else overrides[name]
            for name in QUOTAS
        }
    )


def runs_in_flight(*, user_id: int) -> QuerySet[Run]:
    """The runs pending or running that count for the user (started by them, or by an app on their workflow)."""
    return Run.objects.filter(status__in=(RunStatus.PENDING, RunStatus.RUNNING)).filter(
        Q(triggered_by_id=user_id) | Q(triggered_by__isnull=True, workflow__owner_id=user_id)
    )


def workflow_quota_check(*, owner: User) -> None:
    """Raise QuotaLimitReached if ``owner`` already owns as many workflows as they may.

    Call it in the transaction that creates the workflow: the lock it takes on the owner's row
    lasts until that commits, so concurrent creations are counted one after the other.
    """
    limit = quota_limits(user_id=owner.pk).max_workflows
    with transaction.atomic():
        _user_lock(user_id=owner.pk)
        if Workflow.objects.filter(owner_id=owner.pk).count() >= limit:
            raise QuotaLimitReached(
                f"You own {limit} workflows, the most allowed (quota max_workflows); delete one to create another.",
                quota="max_workflows",
                limit=limit,
            )


@contextlib.contextmanager
def run_quota_reserve(*, workflow: Workflow, user) -> Iterator[None]:
    """Hold a place for one new run of ``workflow`` started by ``user`` (None: a client app) during the block.

    Raises QuotaExceeded, naming the quota, when there is none. Use it in the transaction that
    creates the run, around the creation: the place is given back if the block raises.
    """
    user_id = getattr(user, "pk", None) if getattr(user, "is_authenticated", False) else None
    user_id = user_id or workflow.owner_id
    limits = quota_limits(user_id=user_id)
    owner_limits = limits if workflow.owner_id == user_id else quota_limits(user_id=workflow.owner_id)
    with transaction.atomic():
        _user_lock(user_id=user_id)
        if runs_in_flight(user_id=user_id).count() >= limits.concurrent_runs:
            raise QuotaExceeded(
                f"{limits.concurrent_runs} runs are pending or running, the most allowed at once "
                "(quota concurrent_runs); start this one when one of them has ended.",
                quota="concurrent_runs",
                limit=limits.concurrent_runs,
                retry_after=CONCURRENT_RETRY_AFTER_S,
            )
        counters = _day_counters()
        today = timezone.now().astimezone(UTC).date()
        day_quotas = {
            f"runs_per_day:user:{user_id}": ("runs_per_day", limits.runs_per_day, "runs per user"),
            f"workflow_runs_per_day:workflow:{workflow.pk}": (
                "workflow_runs_per_day",
                owner_limits.workflow_runs_per_day,
                "runs of this workflow",
            ),
        }
        counts = counters.take(keys=list(day_quotas), day=today)
        try:
            for key, (quota, limit, what) in day_quotas.items():
                if counts[key] > limit:
                    raise _day_quota_exceeded(quota=quota, limit=limit, what=what, day=today)
            yield
        except BaseException:
            counters.give_back(keys=list(day_quotas), day=today)
            raise


def runs_over_duration(*, now: datetime) -> list[tuple]:
    """Running runs older than their user's ``max_run_duration_s``: (run id, the error to end it with)."""
    default = weft_settings.MAX_RUN_DURATION_S
    shortest = UserQuota.objects.aggregate(shortest=Min("max_run_duration_s"))["shortest"]
    shortest = min(default, shortest) if shortest is not None else default
    candidates = list(
        Run.objects.filter(status=RunStatus.RUNNING, started_at__lte=now - timedelta(seconds=shortest))
        .annotate(user_id=Coalesce("triggered_by_id", "workflow__owner_id"))
        .values_list("pk", "started_at", "user_id")
    )
    if not candidates:
        return []
    overrides = dict(
        UserQuota.objects.filter(
            user_id__in={user_id for _, _, user_id in candidates}, max_run_duration_s__isnull=False
        ).values_list("user_id", "max_run_duration_s")
    )
    over = []
    for run_id, started_at, user_id in candidates:
        limit = overrides.get(user_id, default)
        if started_at + timedelta(seconds=limit) <= now:
            over.append((run_id, f"The run exceeded its maximum duration of {limit} s (quota max_run_duration_s)."))
    return over


def _user_lock(*, user_id: int) -> None:
    # FOR NO KEY UPDATE: quota checks of one user wait for each other, while inserts of rows that
    # refer to the user (its runs, its workflows) are not blocked by the lock.
    User.objects.select_for_update(no_key=True).filter(pk=user_id).values_list("pk").first()


def _day_quota_exceeded(*, quota: str, limit: int, what: str, day: date) -> QuotaExceeded:
    resets_at = datetime.combine(day + timedelta(days=1), time.min, tzinfo=UTC)
    retry_after = max(1, math.ceil((resets_at - timezone.now()).total_seconds()))
    return QuotaExceeded(
        f"The day's {limit} {what} have been started (quota {quota}); it resets at {resets_at.isoformat()}.",
        quota=quota,
        limit=limit,
        retry_after=retry_after,
        resets_at=resets_at,
    )


class _RedisDayCounters:
    """A Redis key per quota, subject and day, incremented atomically; shared by every process."""

    def take(self, *, keys: list[str], day: date) -> dict[str, int]:
        """Count one more for each key (in one round trip); the counts after it."""
        with redis_client().pipeline() as pipe:
            for key in keys:
                name = self._name(key=key, day=day)
                pipe.incr(name).expire(name, DAY_COUNTER_TTL_S)
            replies = pipe.execute()
        return dict(zip(keys, replies[::2], strict=True))

    def give_back(self, *, keys: list[str], day: date) -> None:
        with redis_client().pipeline() as pipe:
            for key in keys:
                pipe.decr(self._name(key=key, day=day))
            pipe.execute()

    @staticmethod
    def _name(*, key: str, day: date) -> str:
        # Prefixed like the cache's keys (its KEY_PREFIX), so that sites or test runs sharing one
        # Redis count apart.
        return cache.make_key(f"weft:quota:{key}:{day.isoformat()}")


class _DatabaseDayCounters:
    """``quota_counters`` rows, written in the caller's transaction: a start that is refused or
    fails rolls its increments back with it, so there is nothing to give back by hand."""

    def take(self, *, keys: list[str], day: date) -> dict[str, int]:
        """Count one more for each key; the counts after it. The rows stay locked until the transaction ends."""
        new_rows = [QuotaCounter(key=key, day=day, count=0) for key in keys]
        QuotaCounter.objects.bulk_create(new_rows, ignore_conflicts=True)
        rows = QuotaCounter.objects.filter(key__in=keys)
        rows.update(count=Case(When(day=day, then=F("count") + 1), default=Value(1)), day=day)
        return dict(rows.values_list("key", "count"))

    def give_back(self, *, keys: list[str], day: date) -> None:
        pass


def _day_counters() -> _RedisDayCounters | _DatabaseDayCounters:
    return _DatabaseDayCounters() if settings.EMBEDDED else _RedisDayCounters()
