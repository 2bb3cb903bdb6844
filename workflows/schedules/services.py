"""Writes to schedules: create/change/delete (with their beat PeriodicTask), fire ticks, keep results.

Exactly once per tick: a tick is the cron's latest fire time at or before now, in the schedule's
time zone, stored in UTC on the run (``Run.scheduled_tick``). The unique (schedule, scheduled_tick)
constraint turns a second firing — a second beat started by mistake, the embedded loop, a
redelivered task — into a no-op, whichever process gets there first.

Which version runs: the pinned ``flow``, else the latest released on the API channel, else the
draft (see ``selectors.schedule_flow_to_run``). A tick whose run cannot start (invalid graph,
inputs that no longer fit, an owner who lost the right to run) is recorded as a failed run, so
that it counts towards the automatic pause like a run that failed.

Results are derived from the schedule's runs, so any process may recompute them at any time:
``last_execution_*`` from the newest run, ``consecutive_failures`` from the failed runs that
finished after the last success and since the schedule took effect. Runs end in the execution
layer; the results follow on the next ``schedules_results_sync`` (the fire task, the embedded
loop and the ``workflows.schedules_sync`` beat task call it).
"""

import json
import logging
from datetime import datetime
from functools import cache
from zoneinfo import ZoneInfo, available_timezones

from celery.schedules import ParseException, crontab
from croniter import CroniterBadDateError, croniter
from django.db import IntegrityError, transaction
from django.utils import timezone
from django_celery_beat.models import CrontabSchedule, PeriodicTask

from config.errors import Forbidden, InvalidInput, NotFound, RateLimited
from history.services import audit_log_record
from workflows.execution.services import run_start
from workflows.models import (
    Flow,
    Run,
    RunEvent,
    RunStatus,
    RunTrigger,
    ScheduledWorkflow,
    ScheduledWorkflowExecutionStatus,
    ScheduledWorkflowStatus,
    Workflow,
)
from workflows.permissions import CAN_RUN
from workflows.selectors import schedule_can_change, workflow_graph, workflow_role_for_user
from workflows.services import json_has_nul

from .selectors import (
    cron_iter,
    schedule_flow_to_run,
    schedule_in_effect_since,
    schedule_runs_counted,
    schedule_tick_due,
    schedules_active,
    schedules_with_recent_runs,
)

logger = logging.getLogger(__name__)

FIRE_TASK = "workflows.schedule_fire"
CRON_FIELDS = ("minute", "hour", "day_of_month", "month_of_year", "day_of_week")
EXECUTION_STATUS = {
    RunStatus.PENDING: ScheduledWorkflowExecutionStatus.RUNNING,
    RunStatus.RUNNING: ScheduledWorkflowExecutionStatus.RUNNING,
    RunStatus.SUCCEEDED: ScheduledWorkflowExecutionStatus.SUCCEEDED,
    RunStatus.FAILED: ScheduledWorkflowExecutionStatus.FAILED,
}
_UNSET = object()


# --- Checking what a schedule is made of -------------------------------------------------------
@cache
def _timezones() -> frozenset[str]:
    return frozenset(available_timezones())


def _short(value) -> str:
    text = str(value)
    return text if len(text) <= 64 else f"{text[:61]}..."


def cron_check(expression: str) -> str:
    """A five-field cron expression that both beat and croniter read alike and that fires; normalised.

    Else InvalidInput on ``cron``.
    """
    fields = expression.split() if isinstance(expression, str) else []
    if len(fields) != 5:
        raise InvalidInput(
            "Use five fields: minute hour day-of-month month day-of-week (e.g. '*/5 * * * *').", field="cron"
        )
    normalised = " ".join(fields)
    if not croniter.is_valid(normalised):
        raise InvalidInput(f"Not a valid cron expression: {_short(normalised)}.", field="cron")
    parts = dict(zip(CRON_FIELDS, fields, strict=True))
    for name, value in parts.items():
        limit = CrontabSchedule._meta.get_field(name).max_length
        if len(value) > limit:
            raise InvalidInput(f"The {name.replace('_', '-')} field is longer than {limit} characters.", field="cron")
    try:
        crontab(**parts)
    except (ValueError, ParseException) as error:
        raise InvalidInput(
            f"Not a cron expression the scheduler reads: {_short(error)} (days of the week are 0-6 or sun-sat).",
            field="cron",
        ) from None
    try:
        cron_iter(expression=normalised, start=timezone.now()).get_next()
    except CroniterBadDateError:
        raise InvalidInput("This cron expression never fires.", field="cron") from None
    return normalised


def timezone_check(name: str) -> str:
    if name not in _timezones():
        raise InvalidInput(f"Unknown time zone: {_short(name)} (use an IANA name like Europe/Paris).", field="timezone")
    return name


def _inputs_check(inputs) -> None:
    if inputs is not None and not isinstance(inputs, dict):
        raise InvalidInput("Must be an object.", field="inputs")
    if json_has_nul(inputs):
        raise InvalidInput("Must not contain NUL characters.", field="inputs")


def _flow_for_version(*, workflow: Workflow, version: str | None) -> Flow | None:
    if version is None:
        return None
    flow = Flow.objects.filter(workflow=workflow, version=version).first()
    if flow is None:
        raise InvalidInput(f"The workflow has no version {_short(version)}.", field="version")
    return flow


def _require_run_role(*, workflow: Workflow, user) -> None:
    role = workflow_role_for_user(workflow=workflow, user=user)
    if role is None:
        raise NotFound("No such workflow.")
    if role not in CAN_RUN:
        raise Forbidden(f"Your role ({role}) does not allow running this workflow.")


def _require_change(*, schedule: ScheduledWorkflow, user, as_operator: bool) -> None:
    if not as_operator and not schedule_can_change(schedule=schedule, user=user):
        raise Forbidden("Only whoever made this schedule or the workflow's owner may change it.")


# --- The beat entry ----------------------------------------------------------------------------
def periodic_task_name(schedule_id) -> str:
    return f"weft-schedule-{schedule_id}"


def schedule_periodic_task_sync(*, schedule: ScheduledWorkflow, effective_from: datetime | None = None) -> PeriodicTask:
    """Create or update the schedule's beat entry: its cron in its time zone, enabled iff active.

    ``effective_from`` (creation, resume, a new cron) becomes the entry's ``start_time``: neither
    beat nor the embedded loop fires a tick before it. Call inside the schedule's transaction.
    """
    parts = dict(zip(CRON_FIELDS, schedule.cron_expression.split(), strict=True))
    zone = ZoneInfo(schedule.timezone)
    cron = CrontabSchedule.objects.filter(**parts, timezone=zone).order_by("pk").first()
    if cron is None:
        cron = CrontabSchedule.objects.create(**parts, timezone=zone)
    task = None
    if schedule.periodic_task_id is not None:
        task = PeriodicTask.objects.select_for_update().filter(pk=schedule.periodic_task_id).first()
    if task is None:
        task = PeriodicTask.objects.filter(name=periodic_task_name(schedule.pk)).first() or PeriodicTask(
            name=periodic_task_name(schedule.pk), start_time=effective_from or schedule.created_at
        )
    task.task = FIRE_TASK
    task.crontab = cron
    task.interval = task.solar = task.clocked = None
    task.args = json.dumps([str(schedule.pk)])
    task.kwargs = "{}"
    task.one_off = False
    task.enabled = schedule.status == ScheduledWorkflowStatus.ACTIVE
    task.description = f"Fires schedule {schedule.pk} of workflow {schedule.workflow_id}."
    if effective_from is not None:
        task.start_time = effective_from
        task.last_run_at = None
    task.save()
    if schedule.periodic_task_id != task.pk:
        schedule.periodic_task = task
        ScheduledWorkflow.objects.filter(pk=schedule.pk).update(periodic_task=task)
    return task


# --- Create, change, delete --------------------------------------------------------------------
def schedule_create(
    *,
    user,
    workflow: Workflow,
    cron: str,
    timezone_name: str = "UTC",
    name: str = "",
    inputs: dict | None = None,
    max_retries: int = 3,
    version: str | None = None,
) -> ScheduledWorkflow:
    """Schedule runs of a workflow the user can run (of ``version``, or of the latest release)."""
    _require_run_role(workflow=workflow, user=user)
    _inputs_check(inputs)
    schedule = ScheduledWorkflow(
        workflow=workflow,
        owner=user,
        flow=_flow_for_version(workflow=workflow, version=version),
        name=name,
        cron_expression=cron_check(cron),
        timezone=timezone_check(timezone_name),
        inputs=inputs or {},
        max_retries=max_retries,
    )
    schedule.full_clean(exclude=["workflow", "owner", "flow", "periodic_task"], validate_constraints=False)
    with transaction.atomic():
        schedule.save()
        schedule_periodic_task_sync(schedule=schedule, effective_from=timezone.now())
    return schedule


def schedule_update(
    *,
    schedule: ScheduledWorkflow,
    user,
    workflow: Workflow = _UNSET,
    cron: str = _UNSET,
    timezone_name: str = _UNSET,
    name: str = _UNSET,
    inputs: dict = _UNSET,
    max_retries: int = _UNSET,
    version: str | None = _UNSET,
) -> ScheduledWorkflow:
    """Change the given fields of a schedule; its maker or the workflow's owner may do it.

    A new workflow, cron or time zone takes effect now: ticks before the change are not fired.
    """
    _require_change(schedule=schedule, user=user, as_operator=False)
    changes = {}
    if workflow is not _UNSET:
        _require_run_role(workflow=workflow, user=user)
        changes["workflow"] = workflow
    if cron is not _UNSET:
        changes["cron_expression"] = cron_check(cron)
    if timezone_name is not _UNSET:
        changes["timezone"] = timezone_check(timezone_name)
    if inputs is not _UNSET:
        _inputs_check(inputs)
    if version is not _UNSET or "workflow" in changes:
        # A pinned version belongs to one workflow: moving the schedule unpins it unless a version is given.
        target = changes.get("workflow", schedule.workflow)
        changes["flow"] = _flow_for_version(workflow=target, version=None if version is _UNSET else version)
    for field, value in (("name", name), ("inputs", inputs), ("max_retries", max_retries)):
        if value is not _UNSET:
            changes[field] = value
    timing = {"workflow", "cron_expression", "timezone"} & {
        field for field, value in changes.items() if getattr(schedule, field) != value
    }
    for field, value in changes.items():
        setattr(schedule, field, value)
    schedule.full_clean(exclude=["workflow", "owner", "flow", "periodic_task"], validate_constraints=False)
    with transaction.atomic():
        schedule.save(update_fields=[*changes, "updated_at"])
        schedule_periodic_task_sync(schedule=schedule, effective_from=timezone.now() if timing else None)
    return schedule


def schedule_delete(*, schedule: ScheduledWorkflow, user) -> None:
    _require_change(schedule=schedule, user=user, as_operator=False)
    with transaction.atomic():
        PeriodicTask.objects.filter(name=periodic_task_name(schedule.pk)).delete()
        schedule.delete()


# --- Pause, resume, run now --------------------------------------------------------------------
def schedule_pause(
    *, schedule: ScheduledWorkflow, user, reason: str = "", as_operator: bool = False
) -> ScheduledWorkflow:
    """Stop firing ticks; a paused schedule stays paused (no audit row for a no-op)."""
    _require_change(schedule=schedule, user=user, as_operator=as_operator)
    reason = reason or f"Paused by {user}."
    with transaction.atomic():
        locked = ScheduledWorkflow.objects.select_for_update().get(pk=schedule.pk)
        if locked.status == ScheduledWorkflowStatus.ACTIVE:
            locked.status = ScheduledWorkflowStatus.PAUSED
            locked.pause_reason = reason
            locked.save(update_fields=["status", "pause_reason", "updated_at"])
            schedule_periodic_task_sync(schedule=locked)
            audit_log_record(
                actor=user,
                action="schedule.pause",
                target=locked,
                before={"status": ScheduledWorkflowStatus.ACTIVE.value},
                after={"status": locked.status, "pause_reason": reason},
            )
    schedule.refresh_from_db()
    return schedule


def schedule_resume(*, schedule: ScheduledWorkflow, user, as_operator: bool = False) -> ScheduledWorkflow:
    """Fire ticks again from now on (missed ticks are not replayed), with the failure count at zero."""
    _require_change(schedule=schedule, user=user, as_operator=as_operator)
    with transaction.atomic():
        locked = ScheduledWorkflow.objects.select_for_update().get(pk=schedule.pk)
        if locked.status == ScheduledWorkflowStatus.PAUSED:
            before = {"status": locked.status, "pause_reason": locked.pause_reason}
            locked.status = ScheduledWorkflowStatus.ACTIVE
            locked.pause_reason = ""
            locked.consecutive_failures = 0
            locked.save(update_fields=["status", "pause_reason", "consecutive_failures", "updated_at"])
            schedule_periodic_task_sync(schedule=locked, effective_from=timezone.now())
            audit_log_record(
                actor=user, action="schedule.resume", target=locked, before=before, after={"status": locked.status}
            )
    schedule.refresh_from_db()
    return schedule


def schedule_run_now(*, schedule: ScheduledWorkflow, user) -> Run:
    """Start a run of the schedule (its version and inputs) now, outside its ticks, paused or not."""
    _require_run_role(workflow=schedule.workflow, user=user)
    return run_start(
        workflow=schedule.workflow,
        user=user,
        inputs=schedule.inputs,
        trigger=RunTrigger.SCHEDULE,
        flow=schedule_flow_to_run(schedule=schedule),
        schedule=schedule,
    )


# --- Firing ticks ------------------------------------------------------------------------------
def schedule_fire(*, schedule_id, now: datetime | None = None) -> Run | None:
    """Fire the schedule's due tick (beat calls this); None if nothing was due or it already fired.

    A beat entry whose schedule is gone (deleted with its workflow or owner) is removed.
    """
    now = now or timezone.now()
    schedule = (
        ScheduledWorkflow.objects.select_related("workflow", "owner", "flow", "periodic_task")
        .filter(pk=schedule_id)
        .first()
    )
    if schedule is None:
        PeriodicTask.objects.filter(name=periodic_task_name(schedule_id)).delete()
        return None
    schedule_results_sync(schedule=schedule, now=now)
    return _schedule_fire_due(schedule=schedule, now=now)


def schedules_fire_due(*, now: datetime | None = None) -> list[Run]:
    """Record results, then fire every active schedule's latest due tick not fired yet (idempotent)."""
    now = now or timezone.now()
    schedules_results_sync(now=now)
    return [run for schedule in schedules_active() if (run := _schedule_fire_due(schedule=schedule, now=now))]


def _schedule_fire_due(*, schedule: ScheduledWorkflow, now: datetime) -> Run | None:
    if schedule.status != ScheduledWorkflowStatus.ACTIVE:
        return None
    tick = schedule_tick_due(schedule=schedule, now=now)
    if tick is None or Run.objects.filter(schedule=schedule, scheduled_tick=tick).exists():
        return None
    flow = schedule_flow_to_run(schedule=schedule)
    try:
        with transaction.atomic():
            _require_run_role(workflow=schedule.workflow, user=schedule.owner)
            return run_start(
                workflow=schedule.workflow,
                user=schedule.owner,
                inputs=schedule.inputs,
                trigger=RunTrigger.SCHEDULE,
                flow=flow,
                schedule=schedule,
                scheduled_tick=tick,
            )
    except IntegrityError:
        if Run.objects.filter(schedule=schedule, scheduled_tick=tick).exists():
            return None  # another process fired this tick first
        raise
    except (InvalidInput, Forbidden, NotFound, RateLimited) as error:  # RateLimited: a quota is used up
        return _run_record_unstartable(schedule=schedule, flow=flow, tick=tick, message=error.message, now=now)


def _run_record_unstartable(*, schedule: ScheduledWorkflow, flow: Flow | None, tick, message: str, now) -> Run | None:
    """A tick whose run could not start: a failed run with the reason, so the tick counts and is not retried."""
    error = f"The schedule could not start a run: {message}"
    graph = flow.release_data if flow is not None else workflow_graph(workflow=schedule.workflow)
    try:
        with transaction.atomic():
            run = Run.objects.create(
                workflow=schedule.workflow,
                flow=flow,
                version=flow.version if flow is not None else "",
                graph=graph,
                inputs=schedule.inputs,
                trigger=RunTrigger.SCHEDULE,
                triggered_by=schedule.owner,
                schedule=schedule,
                scheduled_tick=tick,
                status=RunStatus.FAILED,
                error=error,
                finished_at=now,
                last_seq=1,
            )
            RunEvent.objects.create(run=run, seq=1, type="run.failed", data={"error": error}, at=now)
    except IntegrityError:
        return None
    logger.warning("Schedule %s could not start its run for %s: %s", schedule.pk, tick, message)
    return run


# --- Results and the automatic pause -----------------------------------------------------------
def schedules_results_sync(*, now: datetime | None = None) -> int:
    """Recompute the results of schedules whose runs changed lately; the number of schedules looked at."""
    now = now or timezone.now()
    schedules = list(schedules_with_recent_runs(now=now))
    for schedule in schedules:
        schedule_results_sync(schedule=schedule, now=now)
    return len(schedules)


def schedule_results_sync(*, schedule: ScheduledWorkflow, now: datetime | None = None) -> ScheduledWorkflow:
    """Derive ``last_execution_*`` and ``consecutive_failures`` from the runs; pause after ``max_retries``."""
    now = now or timezone.now()
    runs = schedule_runs_counted(schedule=schedule)
    latest = runs.order_by("-created_at").values("created_at", "status", "error").first()
    if latest is None:
        return schedule
    last_success = (
        runs.filter(status=RunStatus.SUCCEEDED).order_by("-finished_at").values_list("finished_at", flat=True).first()
    )
    failures = runs.filter(status=RunStatus.FAILED, created_at__gte=schedule_in_effect_since(schedule=schedule))
    if last_success is not None:
        failures = failures.filter(finished_at__gt=last_success)
    values = {
        "last_execution_at": latest["created_at"],
        "last_execution_status": EXECUTION_STATUS[latest["status"]],
        "last_error_message": latest["error"] if latest["status"] == RunStatus.FAILED else "",
        "consecutive_failures": failures.count(),
    }
    changed = {field: value for field, value in values.items() if getattr(schedule, field) != value}
    if changed:
        ScheduledWorkflow.objects.filter(pk=schedule.pk).update(**changed, updated_at=now)
        for field, value in changed.items():
            setattr(schedule, field, value)
    if (
        schedule.status == ScheduledWorkflowStatus.ACTIVE
        and schedule.max_retries > 0
        and schedule.consecutive_failures >= schedule.max_retries
    ):
        _schedule_pause_automatically(schedule=schedule, now=now)
    return schedule


def _schedule_pause_automatically(*, schedule: ScheduledWorkflow, now: datetime) -> None:
    failures = schedule.consecutive_failures
    reason = f"Paused automatically after {failures} consecutive failed runs. Last error: {schedule.last_error_message}"
    reason = reason[:2000]
    with transaction.atomic():
        paused = ScheduledWorkflow.objects.filter(pk=schedule.pk, status=ScheduledWorkflowStatus.ACTIVE).update(
            status=ScheduledWorkflowStatus.PAUSED, pause_reason=reason, updated_at=now
        )
        if not paused:
            return  # another process paused it first
        schedule.status, schedule.pause_reason = ScheduledWorkflowStatus.PAUSED, reason
        schedule_periodic_task_sync(schedule=schedule)
        audit_log_record(
            actor=None,
            action="schedule.auto_pause",
            target=schedule,
            before={"status": ScheduledWorkflowStatus.ACTIVE.value},
            after={"status": schedule.status, "pause_reason": reason},
            payload={"consecutive_failures": failures, "max_retries": schedule.max_retries},
        )
    logger.warning("Schedule %s paused itself after %s consecutive failures.", schedule.pk, failures)
