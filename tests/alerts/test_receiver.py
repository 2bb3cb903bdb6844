"""The run_ended receiver: cheap for workflows without a policy, and it sees a policy the moment it is set."""

import asyncio

import pytest
from django.core import mail

from alerts.models import Delivery, ErrorWorkflowRun
from alerts.selectors import policy_statuses_acted_on
from alerts.services import policies_enabled_set, policy_set
from tests.factories import RunFactory
from workflows.execution.runner import run_execute
from workflows.execution.signals import run_ended_send
from workflows.selectors import workflow_graph

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_workflow_without_a_policy_costs_one_lookup_then_none(greeter, django_assert_max_num_queries):
    with django_assert_max_num_queries(1):
        run_ended_send(run_id=RunFactory.build().pk, workflow_id=greeter.pk, status="failed")
    with django_assert_max_num_queries(0):
        run_ended_send(run_id=RunFactory.build().pk, workflow_id=greeter.pk, status="failed")


def test_a_policy_set_is_seen_at_once_and_a_switched_off_one_too(user, greeter):
    assert policy_statuses_acted_on(workflow_id=greeter.pk) == frozenset()  # kept in memory now

    policy = policy_set(workflow=greeter, user=user, emails=["ops@example.com"], on_cancelled=True)
    assert policy_statuses_acted_on(workflow_id=greeter.pk) == {"failed", "cancelled"}

    policies_enabled_set(policy_ids=[policy.pk], enabled=False, actor=user)
    assert policy_statuses_acted_on(workflow_id=greeter.pk) == frozenset()


def test_a_policy_with_nothing_to_send_acts_on_nothing(user, greeter):
    policy_set(workflow=greeter, user=user, on_succeeded=True)

    assert policy_statuses_acted_on(workflow_id=greeter.pk) == frozenset()


def test_a_run_executed_by_a_worker_notifies_in_embedded_mode(user, failing_workflow, settings, embedded):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    policy_set(workflow=failing_workflow, user=user, emails=["ops@example.com"])
    run = RunFactory(workflow=failing_workflow, graph=workflow_graph(workflow=failing_workflow), inputs={})

    assert asyncio.run(run_execute(run_id=run.pk)) == "failed"

    (delivery,) = Delivery.objects.filter(run=run)
    assert delivery.status == "delivered"
    assert len(mail.outbox) == 1
    assert not ErrorWorkflowRun.objects.exists()
