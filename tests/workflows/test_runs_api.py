import pytest
from django.utils import timezone

from tests.factories import RunFactory, TaskFactory, WorkflowFactory, WorkflowMemberFactory
from workflows.models import Run, Task, WorkflowMember

LIST_URL = "/api/v1/runs/"


def test_a_run_has_the_contract_shape_with_its_tasks(user, user_client):
    workflow = WorkflowFactory(owner=user)
    now = timezone.now()
    run = RunFactory(
        workflow=workflow,
        status=Run.Status.SUCCEEDED,
        outputs={"text": "hi"},
        version="1.0.0",
        started_at=now,
        finished_at=now,
    )
    TaskFactory(run=run, node_id="start", status=Task.Status.SUCCEEDED, attempt=1, output_data={"city": "Lyon"})
    TaskFactory(run=run, node_id="greet", status=Task.Status.FAILED, attempt=3, error="boom")

    response = user_client.get(f"{LIST_URL}{run.pk}/")

    assert response.status_code == 200
    body = response.json()
    contract = {"id", "workflow", "status", "inputs", "outputs", "error", "tasks", "created_at", "started_at"}
    assert contract | {"finished_at", "version"} <= set(body)
    assert body["workflow"] == str(workflow.pk)
    assert body["status"] == "succeeded"
    assert body["inputs"] == {"city": "Lyon"}
    assert body["outputs"] == {"text": "hi"}
    assert body["version"] == "1.0.0"
    tasks = {task["node_id"]: task for task in body["tasks"]}
    assert set(tasks) == {"start", "greet"}
    assert {"node_id", "status", "attempt", "output", "error", "started_at", "finished_at"} <= set(tasks["start"])
    assert tasks["start"]["output"] == {"city": "Lyon"}
    assert tasks["greet"] == {**tasks["greet"], "status": "failed", "attempt": 3, "error": "boom"}


def test_runs_are_listed_for_workflows_the_user_sees(user, user_client, other_user):
    mine = RunFactory(workflow=WorkflowFactory(owner=user))
    shared_workflow = WorkflowFactory(owner=other_user)
    WorkflowMemberFactory(workflow=shared_workflow, user=user, role=WorkflowMember.Role.VIEWER)
    shared = RunFactory(workflow=shared_workflow)
    theirs = RunFactory(workflow=WorkflowFactory(owner=other_user))

    listed = {item["id"] for item in user_client.get(LIST_URL).json()["results"]}

    assert listed == {str(mine.pk), str(shared.pk)}
    assert user_client.get(f"{LIST_URL}{theirs.pk}/").status_code == 404
    assert user_client.get(f"{LIST_URL}{shared.pk}/").status_code == 200


def test_runs_are_read_only_here(user, user_client):
    run = RunFactory(workflow=WorkflowFactory(owner=user))

    assert user_client.post(LIST_URL, {"workflow": str(run.workflow_id)}).status_code == 405
    assert user_client.patch(f"{LIST_URL}{run.pk}/", {"status": "failed"}).status_code == 405
    assert user_client.delete(f"{LIST_URL}{run.pk}/").status_code == 405


def test_runs_filter_by_workflow_and_status(user, user_client):
    first, second = WorkflowFactory(owner=user), WorkflowFactory(owner=user)
    failed = RunFactory(workflow=first, status=Run.Status.FAILED)
    RunFactory(workflow=first, status=Run.Status.SUCCEEDED)
    RunFactory(workflow=second, status=Run.Status.FAILED)

    response = user_client.get(f"{LIST_URL}?workflow={first.pk}&status=failed")

    assert [item["id"] for item in response.json()["results"]] == [str(failed.pk)]


@pytest.mark.parametrize(("query", "field"), [("status=exploded", "status"), ("workflow=not-a-uuid", "workflow")])
def test_a_bad_run_filter_is_a_400(user_client, query, field):
    response = user_client.get(f"{LIST_URL}?{query}")

    assert response.status_code == 400
    assert field in response.json()


def test_the_run_list_does_not_query_per_run(user, user_client, django_assert_max_num_queries):
    workflow = WorkflowFactory(owner=user)
    for _ in range(6):
        run = RunFactory(workflow=workflow)
        TaskFactory.create_batch(3, run=run)

    with django_assert_max_num_queries(4):
        response = user_client.get(LIST_URL)

    assert response.json()["count"] == 6
    assert all(len(item["tasks"]) == 3 for item in response.json()["results"])
