"""Operators see policies, deliveries and error workflow runs in the admin, and switch policies off."""

import pytest
from django.urls import reverse

from alerts.models import Delivery, FailurePolicy
from alerts.selectors import policy_statuses_acted_on
from alerts.services import policy_set
from history.models import AuditLog
from tests.factories import RunFactory

pytestmark = pytest.mark.django_db

SECRET = "a-webhook-secret-of-some-length"


@pytest.fixture
def policy(user, failing_workflow):
    return policy_set(
        workflow=failing_workflow, user=user, webhook_url="https://hooks.example.com/x", webhook_secret=SECRET
    )


def test_the_pages_list_everything_and_never_show_the_secret(admin_client, policy, failing_workflow):
    run = RunFactory(workflow=failing_workflow, status="failed")
    delivery = Delivery.objects.create(
        policy=policy,
        run=run,
        event="failed",
        channel="webhook",
        target=policy.webhook_url,
        next_attempt_at=run.created_at,
    )
    pages = [
        reverse("admin:alerts_failurepolicy_changelist"),
        reverse("admin:alerts_failurepolicy_change", args=[policy.pk]),
        reverse("admin:alerts_delivery_changelist"),
        reverse("admin:alerts_delivery_change", args=[delivery.pk]),
        reverse("admin:alerts_errorworkflowrun_changelist"),
    ]
    for page in pages:
        answer = admin_client.get(page)
        assert answer.status_code == 200, page
        assert SECRET not in answer.content.decode()
    assert "hooks.example.com" in admin_client.get(pages[0]).content.decode()


def test_operators_switch_policies_off_and_on(admin_client, admin_user, policy, failing_workflow):
    url = reverse("admin:alerts_failurepolicy_changelist")
    assert policy_statuses_acted_on(workflow_id=failing_workflow.pk) == {"failed"}

    answer = admin_client.post(url, {"action": "switch_off", "_selected_action": [str(policy.pk)]})

    assert answer.status_code == 302
    assert FailurePolicy.objects.get(pk=policy.pk).enabled is False
    assert policy_statuses_acted_on(workflow_id=failing_workflow.pk) == frozenset()
    assert AuditLog.objects.filter(action="failure_policy.disable", actor=admin_user).exists()

    admin_client.post(url, {"action": "switch_on", "_selected_action": [str(policy.pk)]})
    assert FailurePolicy.objects.get(pk=policy.pk).enabled is True
    assert policy_statuses_acted_on(workflow_id=failing_workflow.pk) == {"failed"}


def test_operators_cancel_deliveries_waiting_for_a_retry(admin_client, policy, failing_workflow):
    run = RunFactory(workflow=failing_workflow, status="failed")
    waiting = Delivery.objects.create(
        policy=policy,
        run=run,
        event="failed",
        channel="webhook",
        target=policy.webhook_url,
        next_attempt_at=run.created_at,
        attempts=2,
    )

    admin_client.post(
        reverse("admin:alerts_delivery_changelist"), {"action": "cancel_pending", "_selected_action": [str(waiting.pk)]}
    )

    waiting.refresh_from_db()
    assert waiting.status == "cancelled"
