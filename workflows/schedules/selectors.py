"""Reads about schedules: when a tick is due, which version it runs.

croniter is the one cron parser: ``cron_check`` validates with it, and every tick is computed
with it. The tunables are ``MISFIRE_GRACE_S``, ``TICK_INTERVAL_S`` and ``RESULTS_LOOKBACK_S``
(config/conf.py).
"""

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from croniter import croniter
from django.db.models import Q, QuerySet

from config.conf import weft_settings
from workflows.models import ReleaseChannel, Run, RunStatus, ScheduledWorkflow, WorkflowVersion
from workflows.releases.selectors import flow_latest_released


def cron_iter(*, expression: str, start: datetime) -> croniter:
    """Iterate ``expression`` from ``start``.

    When both day-of-month and day-of-week are restricted, both must match (Celery's crontab
    semantics, which beat uses), not either of them as in Vixie cron.
    """
    return croniter(expression, start, day_or=False)


def schedule_tick_latest(*, schedule: ScheduledWorkflow, now: datetime) -> datetime:
    """The cron's most recent fire time at or before ``now``, in the schedule's time zone, as UTC."""
    local = now.astimezone(ZoneInfo(schedule.timezone)).replace(second=0, microsecond=0)
    # Fire times are whole minutes: the latest one <= now is the one before the next minute.
    tick = cron_iter(expression=schedule.cron_expression, start=local + timedelta(minutes=1)).get_prev(datetime)
    return tick.astimezone(UTC)


def schedule_tick_after(*, schedule: ScheduledWorkflow, moment: datetime) -> datetime:
    """The cron's first fire time strictly after ``moment``, in the schedule's time zone, as UTC."""
    local = moment.astimezone(ZoneInfo(schedule.timezone))
    return cron_iter(expression=schedule.cron_expression, start=local).get_next(datetime).astimezone(UTC)


def schedule_tick_due(*, schedule: ScheduledWorkflow, now: datetime) -> datetime | None:
    """The tick to fire now, or None: the latest tick, if it is recent and the schedule was in effect."""
    tick = schedule_tick_latest(schedule=schedule, now=now)
    if tick < schedule.effective_from:
        return None
    if now - tick > timedelta(seconds=weft_settings.MISFIRE_GRACE_S):
        return None
    return tick


def schedule_flow_to_run(*, schedule: ScheduledWorkflow) -> WorkflowVersion | None:
    """The version a schedule runs: the pinned one, else the latest released on the API channel.

    None means the draft: a workflow never released can be scheduled, as it can be run by hand.
    """
    if schedule.flow_id is not None:
        return schedule.flow
    return flow_latest_released(workflow_id=schedule.workflow_id, channel=ReleaseChannel.API)


def schedules_due(*, now: datetime) -> QuerySet[ScheduledWorkflow]:
    """Active schedules whose next tick has come (one indexed range read, whatever their number)."""
    return ScheduledWorkflow.objects.filter(status=ScheduledWorkflow.Status.ACTIVE, next_fire_at__lte=now).order_by(
        "next_fire_at"
    )


def schedules_with_recent_runs(*, now: datetime) -> QuerySet[ScheduledWorkflow]:
    """Schedules whose results may have changed: a run started or ended lately, or one still running."""
    since = now - timedelta(seconds=weft_settings.RESULTS_LOOKBACK_S)
    recent = Run.objects.filter(Q(created_at__gte=since) | Q(finished_at__gte=since), schedule__isnull=False)
    return ScheduledWorkflow.objects.filter(
        Q(pk__in=recent.values("schedule_id")) | Q(last_execution_status=ScheduledWorkflow.ExecutionStatus.RUNNING)
    )


def schedule_runs_counted(*, schedule: ScheduledWorkflow) -> QuerySet[Run]:
    """The runs that make a schedule's results: cancelled ones count neither as success nor failure."""
    return Run.objects.filter(schedule=schedule).exclude(status=RunStatus.CANCELLED)
