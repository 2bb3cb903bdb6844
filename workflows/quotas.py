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
a Redis key when there is Redis, checked and incremented by one script, or a ``quota_counters``
row in the same transaction in embedded mode. A refused start takes nothing. A run start is
checked once its run is created, at the end of its transaction: the lock is held from the checks
to the commit only. A run start's checks cost one round trip to the database and one to Redis.

The checks live beside the runs and workflows they count; the overrides and the day counters are
rows of ``accounts``, which knows nothing of workflows.
"""

import contextlib
import functools
import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from django.conf import settings
from django.core.cache import cache
from django.db import connection, transaction
from django.db.models import Min
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
    return QuotaLimits(**{name: _or_default(name, overrides.get(name)) for name in QUOTAS})


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
    """Check the quotas of one new run of ``workflow`` started by ``user`` (None: a client app), created in the block.

    Use it in the atomic block that creates the run, around the creation. The checks come after
    the block, so that the lock they take on the user's row is held only from then until the
    caller commits: starts of one user wait for each other that long, not for a whole start. The
    run created in the block is pending (or running, when the web process executes it itself), so
    it is among the runs in flight counted then. Raises
    QuotaExceeded, naming the quota, when there is no place (the caller's atomic block rolls the
    run back). It costs two round trips, one to the database and one to Redis (embedded mode: both
    to the database).
    """
    user_id = getattr(user, "pk", None) if getattr(user, "is_authenticated", False) else None
    user_id = user_id or workflow.owner_id
    # No savepoint of its own: a refusal rolls back the caller's atomic block with it.
    with transaction.atomic(savepoint=False):
        yield
        state = _run_quota_state(user_id=user_id, owner_id=workflow.owner_id)
        if state.in_flight > state.concurrent_runs:
            raise QuotaExceeded(
                f"{state.concurrent_runs} runs are pending or running, the most allowed at once "
                "(quota concurrent_runs); start this one when one of them has ended.",
                quota="concurrent_runs",
                limit=state.concurrent_runs,
                retry_after=CONCURRENT_RETRY_AFTER_S,
            )
        today = timezone.now().astimezone(UTC).date()
        day_quotas = {
            f"runs_per_day:user:{user_id}": ("runs_per_day", state.runs_per_day, "runs per user"),
            f"workflow_runs_per_day:workflow:{workflow.pk}": (
                "workflow_runs_per_day",
                state.workflow_runs_per_day,
                "runs of this workflow",
            ),
        }
        full = _day_counters().take(limits={key: limit for key, (_, limit, _) in day_quotas.items()}, day=today)
        if full is not None:
            quota, limit, what = day_quotas[full]
            raise _day_quota_exceeded(quota=quota, limit=limit, what=what, day=today)


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


@dataclass(frozen=True)
class _RunQuotaState:
    """What a run start is checked against: the starting user's limits, the workflow owner's
    ``workflow_runs_per_day``, and the user's runs in flight."""

    concurrent_runs: int
    runs_per_day: int
    workflow_runs_per_day: int
    in_flight: int


def _table(model) -> str:
    return connection.ops.quote_name(model._meta.db_table)


def _column(model, field: str) -> str:
    return connection.ops.quote_name(model._meta.get_field(field).column)


@functools.cache
def _run_quota_state_sql(vendor: str) -> str:
    """The overrides of the user and of the workflow's owner (NULL: the default), and the user's runs
    in flight: pending or running, started by them or by an app on a workflow they own. Scalar
    subqueries, so that a user without a UserQuota row still gives one row. Names from the models.

    On PostgreSQL it is preceded by the lock on the user's row (as ``_user_lock``), as a statement
    of its own: in READ COMMITTED each statement reads from a snapshot taken when it starts, so the
    count must come from a statement that starts once the lock is held. Before both, a setting for
    the count's scan (below).
    """
    quotas, runs, workflows, users = _table(UserQuota), _table(Run), _table(Workflow), _table(User)
    quota_user = _column(UserQuota, "user")
    triggered_by, status = f"{runs}.{_column(Run, 'triggered_by')}", f"{runs}.{_column(Run, 'status')}"
    state = f"""
SELECT
    (SELECT {_column(UserQuota, "concurrent_runs")} FROM {quotas} WHERE {quota_user} = %(user)s),
    (SELECT {_column(UserQuota, "runs_per_day")} FROM {quotas} WHERE {quota_user} = %(user)s),
    (SELECT {_column(UserQuota, "workflow_runs_per_day")} FROM {quotas} WHERE {quota_user} = %(owner)s),
    (SELECT COUNT(*) FROM {runs} INNER JOIN {workflows}
        ON {runs}.{_column(Run, "workflow")} = {workflows}.{_column(Workflow, "id")}
     WHERE {status} IN (%(pending)s, %(running)s)
       AND ({triggered_by} = %(user)s
            OR ({triggered_by} IS NULL AND {workflows}.{_column(Workflow, "owner")} = %(user)s)))
"""  # noqa: S608 - names from the models' _meta, quoted; the values are parameters
    if vendor != "postgresql":
        return state
    user_id = _column(User, "id")
    lock = f"SELECT {user_id} FROM {users} WHERE {user_id} = %(user)s FOR NO KEY UPDATE"  # noqa: S608
    # The count walks idx_runs_in_flight, which also holds the versions of ended runs until a vacuum
    # (a run's row changes its status as it ends). A bitmap scan visits each of them on every start;
    # an index scan marks those dead to everyone as it passes, so the next start skips them: under
    # a steady load of starts the count stays a few entries long instead of growing between vacuums
    # (measured: 0.23 ms at 662 ended runs, and growing, against 0.014 ms). Until the commit only.
    return f"SET LOCAL enable_bitmapscan = off;{lock};{state}"


def _run_quota_state(*, user_id: int, owner_id: int) -> _RunQuotaState:
    """The limits and runs in flight of ``user_id``, counted under the lock on their row, in one round trip.

    On PostgreSQL the setting, the lock and the count go as three statements in one query
    (psycopg's client-side binding cursor, Django's default, sends them together). SQLite has no row locks and needs
    none: its transactions (IMMEDIATE) hold the database's write lock from their start.
    """
    params = {"user": user_id, "owner": owner_id, "pending": RunStatus.PENDING, "running": RunStatus.RUNNING}
    with connection.cursor() as cursor:
        cursor.execute(_run_quota_state_sql(connection.vendor), params)
        if connection.vendor == "postgresql":
            cursor.nextset()  # past the SET
            cursor.nextset()  # past the lock's result
        concurrent_runs, runs_per_day, workflow_runs_per_day, in_flight = cursor.fetchone()
    return _RunQuotaState(
        concurrent_runs=_or_default("concurrent_runs", concurrent_runs),
        runs_per_day=_or_default("runs_per_day", runs_per_day),
        workflow_runs_per_day=_or_default("workflow_runs_per_day", workflow_runs_per_day),
        in_flight=in_flight,
    )


def _or_default(quota: str, override: int | None) -> int:
    return getattr(weft_settings, quota.upper()) if override is None else override


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


# KEYS: the day counters; ARGV[1]: their expiry (s), then each counter's limit. Counts one more in
# each counter, or, when one has reached its limit, in none: the number of that one (from 1), or 0.
_TAKE_SCRIPT = """
for i, key in ipairs(KEYS) do
    if tonumber(redis.call('GET', key) or '0') >= tonumber(ARGV[i + 1]) then
        return i
    end
end
for _, key in ipairs(KEYS) do
    redis.call('INCR', key)
    redis.call('EXPIRE', key, ARGV[1])
end
return 0
"""


class _RedisDayCounters:
    """A Redis key per quota, subject and day, checked and incremented atomically by one script;
    shared by every process."""

    def take(self, *, limits: dict[str, int], day: date) -> str | None:
        """Count one more for each key (in one round trip), or for none when one is full: that key."""
        take = redis_client().register_script(_TAKE_SCRIPT)
        full = take(keys=[self._name(key=key, day=day) for key in limits], args=[DAY_COUNTER_TTL_S, *limits.values()])
        return list(limits)[full - 1] if full else None

    @staticmethod
    def _name(*, key: str, day: date) -> str:
        # Prefixed like the cache's keys (its KEY_PREFIX), so that sites or test runs sharing one
        # Redis count apart.
        return cache.make_key(f"weft:quota:{key}:{day.isoformat()}")


@functools.cache
def _take_sql(rows: int) -> str:
    """One row per key, counting from 1 on a new day; PostgreSQL and SQLite (3.35+) both read it.

    Names from the model's _meta; the values are parameters.
    """
    table, key, day, count = _table(QuotaCounter), *(_column(QuotaCounter, name) for name in ("key", "day", "count"))
    values = ", ".join(["(%s, %s, 1)"] * rows)
    return f"""
INSERT INTO {table} ({key}, {day}, {count}) VALUES {values}
ON CONFLICT ({key}) DO UPDATE SET
    {count} = CASE WHEN {table}.{day} = excluded.{day} THEN {table}.{count} + 1 ELSE 1 END,
    {day} = excluded.{day}
RETURNING {key}, {count}
"""  # noqa: S608


class _DatabaseDayCounters:
    """``quota_counters`` rows, written in the caller's transaction: a start that is refused or
    fails rolls its increments back with it."""

    def take(self, *, limits: dict[str, int], day: date) -> str | None:
        """Count one more for each key (in one statement); the first key over its limit, if any.

        The rows stay locked until the transaction ends, so concurrent starts count one after the other.
        """
        with connection.cursor() as cursor:
            cursor.execute(_take_sql(len(limits)), [value for key in limits for value in (key, day.isoformat())])
            counts = dict(cursor.fetchall())
        return next((key for key, limit in limits.items() if counts[key] > limit), None)


def _day_counters() -> _RedisDayCounters | _DatabaseDayCounters:
    return _DatabaseDayCounters() if settings.EMBEDDED else _RedisDayCounters()
