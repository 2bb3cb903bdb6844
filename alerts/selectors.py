"""Reads of failure policies and their deliveries.

:func:`policy_statuses_acted_on` answers, for every run that ends, whether its workflow's policy
does anything for it. It runs in the hot path of whichever process ended the run, so each process
keeps the answers in memory under the ``alert_policies`` generation (``config.generations``: one
Redis read per call; a policy's change replaces the token and every process drops what it kept).
"""

from django.db.models import Q, QuerySet

from config.generations import GenerationCache

from .models import Delivery, ErrorWorkflowRun, FailurePolicy

#: The generation every change to a failure policy replaces (services call ``generation_move``).
POLICIES = "alert_policies"
#: The workflows a process keeps answers for; past it, it starts over.
KEPT_MAX = 10_000

_kept = GenerationCache(POLICIES, most=KEPT_MAX)


def policy_statuses_acted_on(*, workflow_id) -> frozenset[str]:
    """The run statuses the workflow's enabled policy acts on (none without a policy)."""

    def load() -> frozenset[str]:
        policy = (
            FailurePolicy.objects.filter(workflow_id=workflow_id)
            .only("enabled", "error_workflow", "on_failed", "on_succeeded", "on_cancelled", "webhook_url", "emails")
            .first()
        )
        return policy.acted_on_statuses if policy is not None else frozenset()

    return _kept.get(str(workflow_id), load, token=_kept.token())


def policy_for_workflow(*, workflow) -> FailurePolicy | None:
    return FailurePolicy.objects.filter(workflow=workflow).select_related("error_workflow").first()


def deliveries_for_workflow(*, workflow) -> QuerySet[Delivery]:
    """The notifications of the workflow's runs, newest first."""
    return Delivery.objects.filter(policy__workflow=workflow).order_by("-created_at", "pk")


def deliveries_due(*, now) -> QuerySet[Delivery]:
    """Deliveries to (re)try now: pending and due, or claimed by a worker whose claim lapsed."""
    return Delivery.objects.filter(
        Q(status=Delivery.Status.PENDING, next_attempt_at__lte=now)
        | Q(status=Delivery.Status.SENDING, claimed_until__lt=now)
    )


def run_is_an_error_workflow_run(*, run_id) -> bool:
    """Whether the run was started as an error workflow (its failure then starts nothing more)."""
    return ErrorWorkflowRun.objects.filter(error_run_id=run_id).exists()
