"""The database itself refuses bad rows, whatever code writes them."""

import pytest
from django.db import IntegrityError, transaction

from tests.factories import (
    NodeFactory,
    RunFactory,
    ScheduledWorkflowFactory,
    TaskFactory,
    WorkflowFactory,
    WorkflowMemberFactory,
)
from workflows.models import Run, ScheduledWorkflow, Task, Workflow, WorkflowMember


@pytest.mark.parametrize(
    ("factory", "model", "field"),
    [
        (WorkflowFactory, Workflow, "status"),
        (WorkflowFactory, Workflow, "source"),
        (RunFactory, Run, "status"),
        (RunFactory, Run, "trigger"),
        (TaskFactory, Task, "status"),
        (ScheduledWorkflowFactory, ScheduledWorkflow, "status"),
        (WorkflowMemberFactory, WorkflowMember, "role"),
    ],
)
def test_a_check_constraint_rejects_a_value_outside_the_choices(db, factory, model, field):
    row = factory()

    with pytest.raises(IntegrityError), transaction.atomic():
        model.objects.filter(pk=row.pk).update(**{field: "bogus"})

    assert model.objects.filter(pk=row.pk).exclude(**{field: "bogus"}).exists()


def test_node_keys_are_unique_within_a_workflow(db):
    node = NodeFactory(key="greet")

    with pytest.raises(IntegrityError), transaction.atomic():
        NodeFactory(workflow=node.workflow, key="greet")

    NodeFactory(key="greet")  # the same key in another workflow is fine


def test_a_user_is_a_member_of_a_workflow_once(db):
    member = WorkflowMemberFactory()

    with pytest.raises(IntegrityError), transaction.atomic():
        WorkflowMemberFactory(workflow=member.workflow, user=member.user, role=WorkflowMember.Role.EDITOR)
