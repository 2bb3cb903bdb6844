"""Writes of the alerts app: set a workflow's failure policy, act on a run's end, send its notifications.

A run's end (``workflows.execution.signals.run_ended``) reaches :func:`run_end_handle`, through a
Celery task (``alerts.run_end_handle``), or in-process in embedded mode. It may be called more than
once for the same run (two workers, a redelivered task): each effect is claimed in the database
first, so each happens once:

- the error workflow: an ``ErrorWorkflowRun`` row, unique per failed run, inserted in the transaction
  that starts the error run. A run that an error workflow started starts none when it fails.
- each notification: a ``Delivery`` row, unique per (run, channel, target), inserted before anything
  is sent, then claimed by a conditional update (``pending`` and due -> ``sending``) that one caller
  wins. A failed attempt worth retrying goes back to ``pending`` with its ``next_attempt_at``
  (exponential backoff) and a task for then; the ``alerts.deliveries_sweep`` task picks up what is
  due and whatever a dead worker left ``sending``.
"""

import json
import logging
import threading
from datetime import timedelta

from celery import current_app
from django.conf import settings
from django.db import IntegrityError, close_old_connections, transaction
from django.db.models import F
from django.utils import timezone

from config.errors import InvalidInput, WeftError
from config.generations import generation_move
from history.services import audit_log_record
from workflows.execution.services import run_start
from workflows.models import RUN_FINAL_STATUSES, Run, RunStatus, RunTrigger, Task, TaskStatus, Workflow
from workflows.permissions import CAN_RUN
from workflows.selectors import workflow_graph, workflow_role_for_user

from .models import Delivery, DeliveryChannel, DeliveryStatus, ErrorWorkflowRun, FailurePolicy
from .selectors import POLICIES, deliveries_due, run_is_an_error_workflow_run
from .sending import SendFailed, email_send, webhook_post

logger = logging.getLogger(__name__)

#: The Celery tasks (alerts.tasks), sent by name.
RUN_END_HANDLE_TASK = "alerts.run_end_handle"
DELIVERY_SEND_TASK = "alerts.delivery_send"

#: The one input an error workflow's start node declares (type object): the failed run's details.
FAILURE_INPUT = "failure"
#: Attempts of one delivery before it is failed for good.
MAX_ATTEMPTS = 6
#: The wait after the first failed attempt, doubled after each next one, up to BACKOFF_MAX_S.
BACKOFF_INITIAL_S = 10.0
BACKOFF_MAX_S = 600.0
#: How long a claim (``sending``) holds before the sweep may send the delivery again.
CLAIM_S = 120.0
#: Kept of an error message on a delivery.
ERROR_MAX_CHARS = 1000


# --- The policy ---------------------------------------------------------------------------------
def policy_set(
    *,
    workflow: Workflow,
    user,
    error_workflow: Workflow | None = None,
    on_failed: bool = True,
    on_succeeded: bool = False,
    on_cancelled: bool = False,
    webhook_url: str = "",
    webhook_secret: str | None = None,
    emails: list[str] | None = None,
    enabled: bool = True,
) -> FailurePolicy:
    """Create or replace the workflow's failure policy (the caller has checked the user may edit it).

    ``webhook_secret`` None keeps the stored one; a webhook needs a secret, given now or before.
    """
    if error_workflow is not None:
        error_workflow_check(workflow=workflow, error_workflow=error_workflow)
    with transaction.atomic():
        policy = FailurePolicy.objects.select_for_update().filter(workflow=workflow).first()
        before = policy_summary(policy) if policy is not None else None
        if policy is None:
            policy = FailurePolicy(workflow=workflow)
        if webhook_secret is not None:
            policy.webhook_secret = webhook_secret
        if webhook_url and not policy.webhook_secret:
            raise InvalidInput("A webhook needs a secret to sign its deliveries.", field="webhook_secret")
        policy.error_workflow = error_workflow
        policy.on_failed, policy.on_succeeded, policy.on_cancelled = on_failed, on_succeeded, on_cancelled
        policy.webhook_url = webhook_url
        policy.emails = list(emails or [])
        policy.enabled = enabled
        policy.updated_by = user
        policy.save()
        audit_log_record(
            actor=user,
            action="failure_policy.set",
            target=workflow,
            before=before,
            after={**policy_summary(policy), "webhook_secret_changed": webhook_secret is not None},
        )
        generation_move(POLICIES)
    return policy


def policy_delete(*, workflow: Workflow, user) -> bool:
    """Remove the workflow's policy (its deliveries go with it); whether there was one."""
    with transaction.atomic():
        policy = FailurePolicy.objects.filter(workflow=workflow).first()
        if policy is None:
            return False
        audit_log_record(actor=user, action="failure_policy.delete", target=workflow, before=policy_summary(policy))
        policy.delete()
        generation_move(POLICIES)
    return True


def policies_enabled_set(*, policy_ids, enabled: bool, actor) -> int:
    """Switch policies on or off (an operator, in the admin); how many changed."""
    with transaction.atomic():
        changed = list(
            FailurePolicy.objects.filter(pk__in=policy_ids).exclude(enabled=enabled).select_related("workflow")
        )
        FailurePolicy.objects.filter(pk__in=[policy.pk for policy in changed]).update(
            enabled=enabled, updated_at=timezone.now()
        )
        for policy in changed:
            audit_log_record(
                actor=actor,
                action="failure_policy.enable" if enabled else "failure_policy.disable",
                target=policy.workflow,
                after={"enabled": enabled},
            )
        generation_move(POLICIES)
    return len(changed)


def policy_summary(policy: FailurePolicy) -> dict:
    """The policy for the audit log: no secret."""
    return {
        "enabled": policy.enabled,
        "error_workflow": str(policy.error_workflow_id) if policy.error_workflow_id else None,
        "on_failed": policy.on_failed,
        "on_succeeded": policy.on_succeeded,
        "on_cancelled": policy.on_cancelled,
        "webhook_url": policy.webhook_url,
        "emails": list(policy.emails),
    }


def error_workflow_check(*, workflow: Workflow, error_workflow: Workflow) -> None:
    """InvalidInput naming ``error_workflow`` unless it may handle ``workflow``'s failures: another
    workflow, that the owner of ``workflow`` may run, whose start node takes the ``failure`` object."""
    if error_workflow.pk == workflow.pk:
        raise InvalidInput("A workflow cannot be its own error workflow.", field="error_workflow")
    if workflow_role_for_user(workflow=error_workflow, user=workflow.owner) not in CAN_RUN:
        raise InvalidInput("The workflow's owner may not run this workflow.", field="error_workflow")
    graph = workflow_graph(workflow=error_workflow)
    start = next((node for node in graph["nodes"] if node.get("type") == "start"), None)
    specs = {spec.get("name"): spec for spec in ((start or {}).get("config") or {}).get("inputs", [])}
    spec = specs.get(FAILURE_INPUT)
    if spec is None or spec.get("type") != "object":
        raise InvalidInput(
            f"The error workflow's start node must declare an input {FAILURE_INPUT!r} of type object.",
            field="error_workflow",
        )
    others = sorted(name for name, spec in specs.items() if name != FAILURE_INPUT and spec.get("required"))
    if others:
        raise InvalidInput(
            f"The error workflow's start node requires inputs it would not get: {', '.join(others)}.",
            field="error_workflow",
        )


# --- A run's end --------------------------------------------------------------------------------
def run_end_queue(*, run_id) -> None:
    """Have :func:`run_end_handle` called for the run: a Celery task, or now in embedded mode."""
    if settings.EMBEDDED:
        try:
            run_end_handle(run_id=run_id)
        except Exception:
            logger.exception("Could not act on the end of run %s.", run_id)
        return
    transaction.on_commit(lambda: current_app.send_task(RUN_END_HANDLE_TASK, args=[str(run_id)]), robust=True)


def run_end_handle(*, run_id, now=None) -> list[Delivery]:
    """Act on the end of run ``run_id`` by its workflow's policy: start the error workflow (a failed
    run), send the notifications; the deliveries made for it. Safe to call again, from anywhere."""
    now = now or timezone.now()
    run = Run.objects.select_related("workflow__owner").filter(pk=run_id, status__in=RUN_FINAL_STATUSES).first()
    if run is None:
        return []
    policy = FailurePolicy.objects.select_related("error_workflow").filter(workflow_id=run.workflow_id).first()
    if policy is None or not policy.enabled:
        return []
    if run.status == RunStatus.FAILED and policy.error_workflow is not None:
        error_workflow_start(policy=policy, run=run)
    if run.status not in policy.notified_statuses:
        return []
    targets = [(DeliveryChannel.WEBHOOK, policy.webhook_url)] if policy.webhook_url else []
    targets += [(DeliveryChannel.EMAIL, address) for address in policy.emails]
    Delivery.objects.bulk_create(
        [
            Delivery(policy=policy, run=run, event=run.status, channel=channel, target=target, next_attempt_at=now)
            for channel, target in targets
        ],
        ignore_conflicts=True,
    )
    deliveries = Delivery.objects.filter(run=run, policy=policy).order_by("created_at", "pk")
    for delivery_id in list(deliveries.values_list("pk", flat=True)):
        delivery_send(delivery_id=delivery_id, now=now)
    return list(deliveries)


def error_workflow_start(*, policy: FailurePolicy, run: Run) -> ErrorWorkflowRun | None:
    """Start the policy's error workflow for failed ``run``, once; None if it was started before, or if
    ``run`` is itself an error workflow's run (no chains, no loops). A start that is refused (the owner
    lost the right to run it, its graph or inputs no longer fit, a quota) is recorded with its reason."""
    if run_is_an_error_workflow_run(run_id=run.pk):
        return None
    error_workflow = policy.error_workflow
    owner = run.workflow.owner
    with transaction.atomic():
        try:
            with transaction.atomic():
                start = ErrorWorkflowRun.objects.create(failed_run=run, error_workflow=error_workflow)
        except IntegrityError:
            return None
        try:
            with transaction.atomic():
                if workflow_role_for_user(workflow=error_workflow, user=owner) not in CAN_RUN:
                    raise WeftError("The workflow's owner may no longer run the error workflow.")
                start.error_run = run_start(
                    workflow=error_workflow,
                    user=owner,
                    inputs={FAILURE_INPUT: failure_details(run=run)},
                    trigger=RunTrigger.ERROR_WORKFLOW,
                )
        except WeftError as exc:
            start.not_started_reason = str(exc)[:ERROR_MAX_CHARS]
            logger.warning("The error workflow of run %s did not start: %s", run.pk, exc)
        start.save(update_fields=["error_run", "not_started_reason"])
    return start


def failure_details(*, run: Run) -> dict:
    """The ``failure`` input of an error workflow's run (and the body of a notification)."""
    failed = (
        Task.objects.filter(run=run, status=TaskStatus.FAILED)
        .order_by("finished_at", "pk")
        .values("node_id", "error")
        .first()
    ) or {}
    return {
        "run_id": str(run.pk),
        "workflow_id": str(run.workflow_id),
        "workflow_name": run.workflow.name,
        "status": run.status,
        "error": run.error,
        "failed_node": failed.get("node_id", ""),
        "failed_node_error": failed.get("error", ""),
        "inputs": run.inputs,
        "trigger": run.trigger,
        "started_at": run.started_at.isoformat() if run.started_at else None,
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
    }


# --- Deliveries ---------------------------------------------------------------------------------
def delivery_send(*, delivery_id, now=None) -> Delivery | None:
    """Send the delivery if it is pending and due and this call claims it; the delivery as it is then,
    or None if another caller had it (or it is not due). A failure worth retrying is retried later."""
    now = now or timezone.now()
    claimed = Delivery.objects.filter(pk=delivery_id, status=DeliveryStatus.PENDING, next_attempt_at__lte=now).update(
        status=DeliveryStatus.SENDING,
        attempts=F("attempts") + 1,
        claimed_until=timezone.now() + timedelta(seconds=CLAIM_S),
        updated_at=timezone.now(),
    )
    if not claimed:
        return None
    delivery = Delivery.objects.select_related("policy", "run__workflow").get(pk=delivery_id)
    try:
        status = _send(delivery)
    except SendFailed as exc:
        return _attempt_failed(delivery, exc, now=now)
    except Exception as exc:  # a bug must not leave the row claimed until the sweep
        logger.exception("Sending delivery %s failed.", delivery_id)
        return _attempt_failed(delivery, SendFailed(f"Internal error ({type(exc).__name__}).", retryable=True), now=now)
    Delivery.objects.filter(pk=delivery.pk, status=DeliveryStatus.SENDING).update(
        status=DeliveryStatus.DELIVERED,
        delivered_at=timezone.now(),
        response_status=status,
        last_error="",
        claimed_until=None,
        updated_at=timezone.now(),
    )
    delivery.refresh_from_db()
    return delivery


def _send(delivery: Delivery) -> int | None:
    details = failure_details(run=delivery.run)
    if delivery.channel == DeliveryChannel.WEBHOOK:
        body = json.dumps(
            {"event": f"run.{delivery.event}", "delivery": str(delivery.pk), "run": details},
            sort_keys=True,
            separators=(",", ":"),
        ).encode()
        return webhook_post(
            url=delivery.target,
            body=body,
            secret=delivery.policy.webhook_secret,
            delivery_id=str(delivery.pk),
            event=f"run.{delivery.event}",
        )
    subject, text = _email_text(details)
    email_send(address=delivery.target, subject=subject, text=text)
    return None


def _email_text(details: dict) -> tuple[str, str]:
    subject = f"[Weft] Run {details['status']}: {details['workflow_name']}"[:200]
    lines = [
        f"A run of the workflow {details['workflow_name']} ({details['workflow_id']}) {details['status']}.",
        "",
        f"Run: {details['run_id']}",
        f"Finished at: {details['finished_at']}",
    ]
    if details["error"]:
        lines.append(f"Error: {details['error']}")
    if details["failed_node"]:
        lines.append(f"Failed node: {details['failed_node']}")
    return subject, "\n".join(lines) + "\n"


def _attempt_failed(delivery: Delivery, exc: SendFailed, *, now) -> Delivery:
    again = exc.retryable and delivery.attempts < MAX_ATTEMPTS
    fields = {
        "last_error": exc.message[:ERROR_MAX_CHARS],
        "response_status": exc.status,
        "claimed_until": None,
        "updated_at": timezone.now(),
    }
    if again:
        delay = delivery_backoff(attempts=delivery.attempts, retry_after=exc.retry_after)
        fields.update(status=DeliveryStatus.PENDING, next_attempt_at=now + timedelta(seconds=delay))
    else:
        fields.update(status=DeliveryStatus.FAILED)
    Delivery.objects.filter(pk=delivery.pk, status=DeliveryStatus.SENDING).update(**fields)
    if again:
        delivery_send_later(delivery_id=delivery.pk, countdown=delay)
    delivery.refresh_from_db()
    return delivery


def delivery_backoff(*, attempts: int, retry_after: float | None = None) -> float:
    """Seconds before the next attempt after ``attempts`` failed ones (a Retry-After, if longer, within the cap)."""
    delay = min(BACKOFF_INITIAL_S * 2 ** max(attempts - 1, 0), BACKOFF_MAX_S)
    if retry_after is not None:
        delay = min(max(delay, retry_after), BACKOFF_MAX_S)
    return delay


def delivery_send_later(*, delivery_id, countdown: float) -> None:
    """Try the delivery again in ``countdown`` seconds: a Celery task, or a timer thread in embedded mode
    (lost if the server stops first: the sweep sends it when the server is back)."""
    if settings.EMBEDDED:
        timer = threading.Timer(countdown, _delivery_send_in_thread, kwargs={"delivery_id": delivery_id})
        timer.daemon = True
        timer.start()
        return
    transaction.on_commit(
        lambda: current_app.send_task(DELIVERY_SEND_TASK, args=[str(delivery_id)], countdown=countdown), robust=True
    )


def _delivery_send_in_thread(*, delivery_id) -> None:
    try:
        delivery_send(delivery_id=delivery_id)
    except Exception:
        logger.exception("Could not send delivery %s.", delivery_id)
    finally:
        close_old_connections()


def deliveries_sweep(*, now=None) -> int:
    """Send what is due: deliveries pending past their time (their task lost) and those a dead worker
    left ``sending`` (sent again: a receiver drops a repeat by its ``X-Weft-Delivery`` id); how many sent."""
    now = now or timezone.now()
    lapsed = deliveries_due(now=now).filter(status=DeliveryStatus.SENDING)
    lapsed.update(status=DeliveryStatus.PENDING, claimed_until=None, updated_at=now)
    sent = 0
    for delivery_id in deliveries_due(now=now).values_list("pk", flat=True)[:500]:
        sent += delivery_send(delivery_id=delivery_id, now=now) is not None
    return sent


def deliveries_cancel(*, delivery_ids) -> int:
    """Stop deliveries still waiting for a (next) attempt (an operator, in the admin)."""
    return Delivery.objects.filter(pk__in=delivery_ids, status=DeliveryStatus.PENDING).update(
        status=DeliveryStatus.CANCELLED, updated_at=timezone.now()
    )
