import pytest
from django.urls import reverse

from history.models import AuditLog
from tests.factories import (
    EdgeFactory,
    RunEventFactory,
    RunFactory,
    ScheduledWorkflowFactory,
    TaskFactory,
    UserFactory,
    WorkflowFactory,
    WorkflowMemberFactory,
    WorkflowSnapshotFactory,
    WorkflowVersionFactory,
)
from workflows.models import Run, ScheduledWorkflow, Task, WorkflowMember


@pytest.fixture
def admin_client(client, staff_user):
    client.force_login(staff_user)
    return client


@pytest.fixture
def run_with_tasks(db):
    run = RunFactory(status=Run.Status.FAILED, error="greet failed")
    TaskFactory(run=run, node_id="start", status=Task.Status.SUCCEEDED, output_data={"city": "Lyon"})
    TaskFactory(run=run, node_id="greet", status=Task.Status.FAILED, error="template exploded")
    RunEventFactory(run=run, seq=1)
    return run


@pytest.mark.parametrize(
    "model", ["workflow", "workflowversion", "run", "scheduledworkflow", "workflowsnapshot", "runevent"]
)
def test_every_changelist_renders(admin_client, run_with_tasks, model):
    EdgeFactory(workflow=run_with_tasks.workflow)
    WorkflowVersionFactory(workflow=run_with_tasks.workflow)
    ScheduledWorkflowFactory(workflow=run_with_tasks.workflow)
    WorkflowSnapshotFactory(workflow=run_with_tasks.workflow)

    response = admin_client.get(reverse(f"admin:workflows_{model}_changelist"))

    assert response.status_code == 200
    searched = admin_client.get(reverse(f"admin:workflows_{model}_changelist"), {"q": "not-a-uuid"})
    assert searched.status_code == 200


def test_a_run_shows_its_tasks_read_only(admin_client, run_with_tasks):
    response = admin_client.get(reverse("admin:workflows_run_change", args=[run_with_tasks.pk]))

    assert response.status_code == 200
    page = response.content.decode()
    assert "template exploded" in page
    assert "greet" in page
    assert 'name="tasks-0-node_id"' not in page  # shown, not editable
    assert 'name="status"' not in page
    assert admin_client.get(reverse("admin:workflows_run_add")).status_code == 403
    admin_client.post(reverse("admin:workflows_run_change", args=[run_with_tasks.pk]), {"status": "succeeded"})
    run_with_tasks.refresh_from_db()
    assert run_with_tasks.status == Run.Status.FAILED


def test_a_workflow_page_shows_its_graph_and_members(admin_client):
    edge = EdgeFactory()
    member = WorkflowMemberFactory(workflow=edge.workflow)

    response = admin_client.get(reverse("admin:workflows_workflow_change", args=[edge.workflow.pk]))

    assert response.status_code == 200
    page = response.content.decode()
    assert edge.source_node.key in page
    assert edge.target_node.key in page
    assert member.user.username in page or str(member.user.pk) in page


def _workflow_form(workflow, members: list[dict]) -> dict:
    data = {
        "name": workflow.name,
        "description": workflow.description,
        "owner": workflow.owner_id,
        "status": workflow.status,
        "source": workflow.source,
        "source_id": "",
        "source_template": "",
        "members-TOTAL_FORMS": len(members),
        "members-INITIAL_FORMS": sum(1 for member in members if member.get("id")),
        "members-MIN_NUM_FORMS": 0,
        "members-MAX_NUM_FORMS": 1000,
    }
    for prefix in ("nodes", "edges"):
        data.update({f"{prefix}-TOTAL_FORMS": 0, f"{prefix}-INITIAL_FORMS": 0})
        data.update({f"{prefix}-MIN_NUM_FORMS": 0, f"{prefix}-MAX_NUM_FORMS": 0})
    for index, member in enumerate(members):
        data.update({f"members-{index}-{key}": value for key, value in member.items()})
    return data


def test_an_operator_changes_members_with_audit_rows(admin_client, staff_user):
    workflow = WorkflowFactory()
    viewer = WorkflowMemberFactory(workflow=workflow, role=WorkflowMember.Role.VIEWER)
    newcomer = UserFactory()
    url = reverse("admin:workflows_workflow_change", args=[workflow.pk])

    response = admin_client.post(
        url,
        _workflow_form(
            workflow,
            [
                {"id": viewer.pk, "workflow": workflow.pk, "user": viewer.user_id, "role": "editor"},
                {"workflow": workflow.pk, "user": newcomer.pk, "role": "executor"},
            ],
        ),
    )

    assert response.status_code == 302, response.context["errors"] if response.context else response
    roles = dict(WorkflowMember.objects.filter(workflow=workflow).values_list("user_id", "role"))
    assert roles == {viewer.user_id: "editor", newcomer.pk: "executor"}
    actions = sorted(AuditLog.objects.filter(actor=staff_user).values_list("action", flat=True))
    assert actions == ["workflow.member_add", "workflow.member_role_change"]


def test_the_admin_refuses_the_owner_as_a_member(admin_client):
    workflow = WorkflowFactory()

    response = admin_client.post(
        reverse("admin:workflows_workflow_change", args=[workflow.pk]),
        _workflow_form(workflow, [{"workflow": workflow.pk, "user": workflow.owner_id, "role": "viewer"}]),
    )

    assert response.status_code == 200
    assert not WorkflowMember.objects.exists()


def test_the_schedule_form_refuses_a_bad_cron(admin_client):
    schedule = ScheduledWorkflowFactory()
    url = reverse("admin:workflows_scheduledworkflow_change", args=[schedule.pk])
    data = {
        "workflow": schedule.workflow_id,
        "owner": schedule.owner_id,
        "name": "",
        "cron_expression": "every minute",
        "timezone": "Nowhere/Land",
        "inputs": "{}",
        "status": "active",
        "pause_reason": "",
        "max_retries": 3,
    }

    response = admin_client.post(url, data)

    assert response.status_code == 200
    assert set(response.context["adminform"].form.errors) == {"cron_expression", "timezone"}
    response = admin_client.post(url, {**data, "cron_expression": "0 9 * * *", "timezone": "Europe/Paris"})
    assert response.status_code == 302
    schedule.refresh_from_db()
    assert (schedule.cron_expression, schedule.timezone) == ("0 9 * * *", "Europe/Paris")
    assert ScheduledWorkflow.objects.count() == 1
