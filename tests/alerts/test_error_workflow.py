"""A failed run starts its workflow's error workflow, once, with the failed run's details; a failure of
the error workflow's own run starts nothing more."""

import copy

import pytest

from alerts.models import ErrorWorkflowRun
from alerts.services import policy_set, run_end_handle
from tests.alerts.conftest import FAILING_GRAPH, runs_settle
from tests.factories import UserFactory
from workflows.execution.services import run_start, run_wait
from workflows.models import Run, WorkflowMember
from workflows.services import workflow_create

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("embedded")]


def test_the_error_workflow_receives_the_failed_runs_details(user, failing_workflow, handler_workflow):
    policy_set(workflow=failing_workflow, user=user, error_workflow=handler_workflow)

    failed = run_start(workflow=failing_workflow, user=user, inputs={"city": "Lyon"})
    runs_settle()
    failed.refresh_from_db()
    assert failed.status == "failed"

    start = ErrorWorkflowRun.objects.get(failed_run=failed)
    assert start.error_workflow == handler_workflow
    assert start.not_started_reason == ""
    handled = run_wait(run=start.error_run, timeout=30)
    assert handled.workflow == handler_workflow
    assert handled.triggered_by == user
    assert handled.status == "succeeded", handled.error
    failure = handled.inputs["failure"]
    assert failure["run_id"] == str(failed.pk)
    assert failure["workflow_id"] == str(failing_workflow.pk)
    assert failure["failed_node"] == "boom"
    assert failure["inputs"] == {"city": "Lyon"}
    assert failed.error
    assert failure["error"] == failed.error
    assert handled.outputs["report"] == f"{failed.pk}|boom|Lyon|{failed.error}"


def test_it_starts_once_however_often_the_runs_end_is_handled(user, failing_workflow, handler_workflow):
    policy_set(workflow=failing_workflow, user=user, error_workflow=handler_workflow)
    failed = run_start(workflow=failing_workflow, user=user, inputs={})
    runs_settle()

    run_end_handle(run_id=failed.pk)  # a redelivered task, a second worker
    run_end_handle(run_id=failed.pk)
    runs_settle()

    assert ErrorWorkflowRun.objects.filter(failed_run=failed).count() == 1
    assert Run.objects.filter(workflow=handler_workflow).count() == 1


def test_a_failing_error_workflow_starts_nothing_more_even_in_a_loop(user):
    first = workflow_create(owner=user, name="First", graph=copy.deepcopy(FAILING_GRAPH))
    second = workflow_create(owner=user, name="Second", graph=copy.deepcopy(FAILING_GRAPH))
    policy_set(workflow=first, user=user, error_workflow=second)
    policy_set(workflow=second, user=user, error_workflow=first)  # each the other's error workflow

    failed = run_start(workflow=first, user=user, inputs={})
    runs_settle()
    start = ErrorWorkflowRun.objects.get(failed_run=failed)
    handled = run_wait(run=start.error_run, timeout=30)
    runs_settle()

    assert handled.status == "failed"
    assert not ErrorWorkflowRun.objects.filter(failed_run=handled).exists()
    assert Run.objects.filter(workflow=first).count() == 1
    assert Run.objects.filter(workflow=second).count() == 1


def test_a_succeeded_run_starts_no_error_workflow(user, greeter, handler_workflow):
    policy_set(workflow=greeter, user=user, error_workflow=handler_workflow)
    run = run_start(workflow=greeter, user=user, inputs={"city": "Nice"})
    runs_settle()
    run.refresh_from_db()

    assert run.status == "succeeded"
    assert not ErrorWorkflowRun.objects.exists()
    assert not Run.objects.filter(workflow=handler_workflow).exists()


def test_an_owner_who_lost_the_right_to_run_it_gets_the_reason_recorded(user, failing_workflow):
    someone = UserFactory()
    theirs = workflow_create(owner=someone, name="Theirs", graph=copy.deepcopy(FAILING_GRAPH))
    member = WorkflowMember.objects.create(workflow=theirs, user=user, role="executor")
    policy_set(workflow=failing_workflow, user=user, error_workflow=theirs)
    member.delete()

    failed = run_start(workflow=failing_workflow, user=user, inputs={})
    runs_settle()

    start = ErrorWorkflowRun.objects.get(failed_run=failed)
    assert start.error_run is None
    assert "may no longer run" in start.not_started_reason
    assert not Run.objects.filter(workflow=theirs).exists()


def test_a_switched_off_policy_starts_nothing(user, failing_workflow, handler_workflow):
    policy_set(workflow=failing_workflow, user=user, error_workflow=handler_workflow, enabled=False)
    failed = run_start(workflow=failing_workflow, user=user, inputs={})
    runs_settle()
    failed.refresh_from_db()

    assert failed.status == "failed"
    assert not ErrorWorkflowRun.objects.exists()
