"""The end of every run reaches :func:`run_ended_received`, in the hot path of the process that ended it:
one look at the workflow's policy (kept in memory, see ``selectors.policy_statuses_acted_on``), and a
task only when the policy acts on the run's status."""

from django.dispatch import receiver

from workflows.execution.signals import run_ended

from .selectors import policy_statuses_acted_on
from .services import run_end_queue


@receiver(run_ended, dispatch_uid="alerts.run_ended")
def run_ended_received(sender, *, run_id, workflow_id, status, **kwargs) -> None:
    if status in policy_statuses_acted_on(workflow_id=workflow_id):
        run_end_queue(run_id=run_id)
