"""Reads about schedules: when a tick is due, which version it runs."""

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from croniter import croniter
from django.conf import settings
from django.db.models import Q, QuerySet

from workflows.models import Flow, ReleaseChannel, Run, RunStatus, ScheduledWorkflow
from workflows.releases.selectors import flow_latest_released

DEFAULTS = {
    # A tick older than this is not fired any more (a beat message stuck in the queue, a server
    # that was down): schedules do not replay what they missed.
    "MISFIRE_GRACE_S": 300.0,
    # Embedded mode: how often the in-process loop fires due ticks and records results.
    "EMBEDDED_INTERVAL_S": 20.0,
    # Results are recomputed for schedules whose runs started or finished this recently.
    "RESULTS_LOOKBACK_S": 3600.0,
}


def schedule_setting(name: str):
    """A schedules tunable: ``settings.WEFT["SCHEDULES"][name]`` over DEFAULTS."""
    return getattr(settings, "WEFT", {}).get("SCHEDULES", {}).get(name, DEFAULTS[name])


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


def schedule_in_effect_since(*, schedule: ScheduledWorkflow) -> datetime:
    """When the schedule last took effect: created, resumed, or its cron or time zone changed.

    Kept in its PeriodicTask's ``start_time``, which beat honours too; ticks before it are not fired.
    """
    task = schedule.periodic_task if schedule.periodic_task_id else None
    if task is not None and task.start_time is not None:
        return task.start_time
    return schedule.created_at


def schedule_tick_due(*, schedule: ScheduledWorkflow, now: datetime) -> datetime | None:
    """The tick to fire now, or None: the latest tick, if it is recent and the schedule was in effect."""
    tick = schedule_tick_latest(schedule=schedule, now=now)
    if tick < schedule_in_effect_since(schedule=schedule):
        return None
    if now - tick > timedelta(seconds=schedule_setting("MISFIRE_GRACE_S")):
        return None
    return tick


def schedule_flow_to_run(*, schedule: ScheduledWorkflow) -> Flow | None:
    """The version a schedule runs: the pinned one, else the latest released on the API channel.

    None means the draft: a workflow never released can be scheduled, as it can be run by hand.
    """
    if schedule.flow_id is not None:
        return schedule.flow
    return flow_latest_released(workflow_id=schedule.workflow_id, channel=ReleaseChannel.API)


def schedules_active() -> QuerySet[ScheduledWorkflow]:
    return ScheduledWorkflow.objects.filter(status=ScheduledWorkflow.Status.ACTIVE).select_related(
        "workflow", "owner", "flow", "periodic_task"
    )


def schedules_with_recent_runs(*, now: datetime) -> QuerySet[ScheduledWorkflow]:
    """Schedules whose results may have changed: a run started or ended lately, or one still running."""
    since = now - timedelta(seconds=schedule_setting("RESULTS_LOOKBACK_S"))
    recent = Run.objects.filter(Q(created_at__gte=since) | Q(finished_at__gte=since), schedule__isnull=False)
    return ScheduledWorkflow.objects.filter(
        Q(pk__in=recent.values("schedule_id")) | Q(last_execution_status=ScheduledWorkflow.ExecutionStatus.RUNNING)
    ).select_related("periodic_task")


def schedule_runs_counted(*, schedule: ScheduledWorkflow) -> QuerySet[Run]:
    """The runs that make a schedule's results: cancelled ones count neither as success nor failure."""
    return Run.objects.filter(schedule=schedule).exclude(status=RunStatus.CANCELLED)
