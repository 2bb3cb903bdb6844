"""Writes to schedules: create/change/delete, fire ticks, keep results. The API and the admin both call these.

One firing path: :func:`schedules_fire_due`, which beat's one ``workflows.schedules_fire_due``
entry and the embedded ticker both call every ``TICK_INTERVAL_S``. A tick is the cron's latest
fire time at or before now, in the schedule's time zone, stored in UTC on the run
(``Run.scheduled_tick``). Each schedule keeps its ``next_fire_at``; a turn claims a due schedule
by moving it forward, from the value it read to the first tick after now, in the transaction that
starts the run: of two turns (two beats, beat and an embedded server, a redelivered task) one
moves it and fires, the other finds it moved and does nothing. The unique (schedule,
scheduled_tick) constraint stays behind it as a second guard.

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

import logging
import re
from datetime import datetime
from functools import cache
from zoneinfo import available_timezones

from croniter import CroniterBadDateError, croniter
from django.db import IntegrityError, transaction
from django.utils import timezone

from config.errors import Forbidden, InvalidInput, NotFound, RateLimited
from history.services import audit_log_record
from workflows.execution.services import run_start
from workflows.execution.signals import run_ended_send
from workflows.models import (
    Run,
    RunEvent,
    RunStatus,
    RunTrigger,
    ScheduledWorkflow,
    ScheduledWorkflowExecutionStatus,
    ScheduledWorkflowStatus,
    Workflow,
    WorkflowVersion,
)
from workflows.permissions import CAN_RUN
from workflows.selectors import schedule_can_change, workflow_graph, workflow_role_for_user
from workflows.services import json_has_nul

from .selectors import (
    cron_iter,
    schedule_flow_to_run,
    schedule_runs_counted,
    schedule_tick_after,
    schedule_tick_due,
    schedules_due,
    schedules_with_recent_runs,
)

logger = logging.getLogger(__name__)

#: One field of a five-field cron: lists of ``*``, numbers or three-letter names, ranges and steps.
#: No extensions (``L``, ``W``, ``#``, ``?``, ``H``): a schedule reads the same in any cron tool.
CRON_FIELD = re.compile(
    r"(\*|(\d+|[A-Za-z]{3})(-(\d+|[A-Za-z]{3}))?)(/\d+)?(,(\*|(\d+|[A-Za-z]{3})(-(\d+|[A-Za-z]{3}))?)(/\d+)?)*"
)
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
    """A five-field cron expression that croniter (the one parser) reads and that fires; normalised.

    Else InvalidInput on ``cron``.
    """
    fields = expression.split() if isinstance(expression, str) else []
    if len(fields) != 5:
        raise InvalidInput(
            "Use five fields: minute hour day-of-month month day-of-week (e.g. '*/5 * * * *').", field="cron"
        )
    normalised = " ".join(fields)
    if not all(CRON_FIELD.fullmatch(field) for field in fields) or not croniter.is_valid(normalised):
        raise InvalidInput(
            f"Not a valid cron expression: {_short(normalised)} (numbers, names, *, ranges, lists and steps).",
            field="cron",
        )
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


def _flow_for_version(*, workflow: Workflow, version: str | None) -> WorkflowVersion | None:
    if version is None:
        return None
    flow = WorkflowVersion.objects.filter(workflow=workflow, version=version).first()
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


# --- Taking effect ------------------------------------------------------------------------------
def _schedule_take_effect(schedule: ScheduledWorkflow) -> None:
    """From now on: ticks before now do not fire, and the next one does (creation, resume, a new cron)."""
    schedule.effective_from = timezone.now()
    schedule.next_fire_at = schedule_tick_after(schedule=schedule, moment=schedule.effective_from)


def _schedule_audit_values(schedule: ScheduledWorkflow) -> dict:
    """What a schedule's audit row shows of it: what runs, when, as whom (never its inputs' values)."""
    return {
        "workflow": str(schedule.workflow_id),
        "owner": schedule.owner_id,
        "version": schedule.flow.version if schedule.flow_id is not None else None,
        "name": schedule.name,
        "cron": schedule.cron_expression,
        "timezone": schedule.timezone,
        "max_retries": schedule.max_retries,
        "status": schedule.status,
    }


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
    actor=None,
) -> ScheduledWorkflow:
    """Schedule runs of a workflow the user can run (of ``version``, or of the latest release), as ``user``.

    ``actor`` is who made it when that is not the user: an operator in the admin, who makes a
    schedule that runs as its owner (``user``); the audit row names them.
    """
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
    schedule.full_clean(exclude=["workflow", "owner", "flow"], validate_constraints=False)
    _schedule_take_effect(schedule)
    with transaction.atomic():
        schedule.save()
        audit_log_record(
            actor=actor or user, action="schedule.create", target=schedule, after=_schedule_audit_values(schedule)
        )
    return schedule


def schedule_update(
    *,
    schedule: ScheduledWorkflow,
    user,
    workflow: Workflow = _UNSET,
    owner=_UNSET,
    cron: str = _UNSET,
    timezone_name: str = _UNSET,
    name: str = _UNSET,
    inputs: dict = _UNSET,
    max_retries: int = _UNSET,
    version: str | None = _UNSET,
    as_operator: bool = False,
) -> ScheduledWorkflow:
    """Change the given fields of a schedule; its maker or the workflow's owner may do it, or an operator.

    A new workflow, cron or time zone takes effect now: ticks before the change are not fired.
    Only an operator (``as_operator``) gives a schedule another ``owner``, who must be able to run
    its workflow: the schedule runs as them.
    """
    _require_change(schedule=schedule, user=user, as_operator=as_operator)
    changes = {}
    if owner is not _UNSET and owner != schedule.owner:
        if not as_operator:
            raise Forbidden("Only an operator may give a schedule another owner.")
        changes["owner"] = owner
    runs_as = changes.get("owner", user if not as_operator else schedule.owner)
    if workflow is not _UNSET:
        changes["workflow"] = workflow
    if {"workflow", "owner"} & set(changes):
        _require_run_role(workflow=changes.get("workflow", schedule.workflow), user=runs_as)
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
    changes = {field: value for field, value in changes.items() if getattr(schedule, field) != value}
    if not changes:
        return schedule
    before = _schedule_audit_values(schedule)
    for field, value in changes.items():
        setattr(schedule, field, value)
    schedule.full_clean(exclude=["workflow", "owner", "flow"], validate_constraints=False)
    fields = [*changes, "updated_at"]
    if {"workflow", "cron_expression", "timezone"} & set(changes):
        _schedule_take_effect(schedule)
        fields += ["effective_from", "next_fire_at"]
    with transaction.atomic():
        schedule.save(update_fields=fields)
        audit_log_record(
            actor=user,
            action="schedule.update",
            target=schedule,
            before=before,
            after=_schedule_audit_values(schedule),
            payload={"changed": sorted(changes)},
        )
    return schedule


def schedule_delete(*, schedule: ScheduledWorkflow, user, as_operator: bool = False) -> None:
    _require_change(schedule=schedule, user=user, as_operator=as_operator)
    with transaction.atomic():
        audit_log_record(actor=user, action="schedule.delete", target=schedule, before=_schedule_audit_values(schedule))
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
            _schedule_take_effect(locked)
            locked.save(
                update_fields=[
                    "status",
                    "pause_reason",
                    "consecutive_failures",
                    "effective_from",
                    "next_fire_at",
                    "updated_at",
                ]
            )
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
def schedules_fire_due(*, now: datetime | None = None) -> list[Run]:
    """Fire every active schedule whose next tick has come, once (beat's entry and the embedded ticker call it)."""
    now = now or timezone.now()
    due = list(schedules_due(now=now).values_list("pk", flat=True))
    return [run for schedule_id in due if (run := schedule_fire(schedule_id=schedule_id, now=now))]


def schedule_fire(*, schedule_id, now: datetime | None = None) -> Run | None:
    """Claim the schedule's due tick and fire it; None if nothing was due or another process claimed it.

    Its results are recorded first, so that a schedule over its failure limit pauses instead.
    """
    now = now or timezone.now()
    schedule = ScheduledWorkflow.objects.select_related("workflow", "owner", "flow").filter(pk=schedule_id).first()
    if schedule is None:
        return None
    schedule_results_sync(schedule=schedule, now=now)
    if (
        schedule.status != ScheduledWorkflowStatus.ACTIVE
        or schedule.next_fire_at is None
        or schedule.next_fire_at > now
    ):
        return None
    with transaction.atomic():
        if not _schedule_claim(schedule=schedule, now=now):
            return None  # another process claimed this tick first
        tick = schedule_tick_due(schedule=schedule, now=now)
        if tick is None:
            return None  # missed for longer than the grace: not replayed
        return _schedule_tick_fire(schedule=schedule, tick=tick, now=now)


def _schedule_claim(*, schedule: ScheduledWorkflow, now: datetime) -> bool:
    """Move ``next_fire_at`` from the value read to the first tick after now; False if it had moved already.

    Forward only: the new value is after now, the old one at or before it. The row stays locked
    until the caller's transaction ends; a second claimer skips it (SKIP LOCKED, on PostgreSQL) and
    fires the next schedule instead of waiting, and a later turn finds the value moved.
    """
    following = schedule_tick_after(schedule=schedule, moment=now)
    unclaimed = ScheduledWorkflow.objects.filter(
        pk=schedule.pk, status=ScheduledWorkflowStatus.ACTIVE, next_fire_at=schedule.next_fire_at
    )
    if not unclaimed.select_for_update(skip_locked=True).exists():
        return False
    claimed = unclaimed.update(next_fire_at=following)
    if claimed:
        schedule.next_fire_at = following
    return bool(claimed)


def _schedule_tick_fire(*, schedule: ScheduledWorkflow, tick: datetime, now: datetime) -> Run | None:
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
            return None  # fired already (the unique key behind the claim)
        raise
    except (InvalidInput, Forbidden, NotFound, RateLimited) as error:  # RateLimited: a quota is used up
        return _run_record_unstartable(schedule=schedule, flow=flow, tick=tick, message=error.message, now=now)


def _run_record_unstartable(
    *, schedule: ScheduledWorkflow, flow: WorkflowVersion | None, tick, message: str, now
) -> Run | None:
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
            transaction.on_commit(
                lambda: run_ended_send(run_id=run.pk, workflow_id=run.workflow_id, status=RunStatus.FAILED)
            )
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
    failures = runs.filter(status=RunStatus.FAILED, created_at__gte=schedule.effective_from)
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
        audit_log_record(
            actor=None,
            action="schedule.auto_pause",
            target=schedule,
            before={"status": ScheduledWorkflowStatus.ACTIVE.value},
            after={"status": schedule.status, "pause_reason": reason},
            payload={"consecutive_failures": failures, "max_retries": schedule.max_retries},
        )
    logger.warning("Schedule %s paused itself after %s consecutive failures.", schedule.pk, failures)
