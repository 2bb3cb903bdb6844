"""The run API: start (202, or 200 with wait), cancel, validate; inputs and permissions."""

import pytest

from tests.engine.conftest import chain, end, node, start
from tests.factories import NodeFactory, RunFactory, WorkflowFactory, WorkflowMemberFactory
from workflows.models import Run
from workflows.services import workflow_create

GRAPH = chain(
    start("city"),
    node("greet", "template", {"template": "Weather for {{ start.city }}"}),
    end(text="{{ greet.text }}"),
)


@pytest.fixture
def workflow(user):
    return workflow_create(owner=user, name="Weather", graph=GRAPH)


def runs_url(workflow) -> str:
    return f"/api/v1/workflows/{workflow.pk}/runs/"


@pytest.mark.django_db
def test_start_answers_202_with_the_run_links(user_client, workflow):
    response = user_client.post(runs_url(workflow), {"inputs": {"city": "Oslo"}}, format="json")
    assert response.status_code == 202, response.json()
    body = response.json()
    run = Run.objects.get(pk=body["id"])
    assert body["status"] in {"pending", "running"}  # a run of computing nodes runs in the web process
    assert body["url"].endswith(f"/api/v1/runs/{run.pk}/")
    assert body["ws_url"] == f"ws://testserver/ws/runs/{run.pk}/"
    assert run.inputs == {"city": "Oslo"}
    assert run.graph["nodes"][1]["id"] == "greet"  # frozen from the draft
    assert run.triggered_by == workflow.owner


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("inputs", "field"),
    [({}, "inputs.city"), ({"city": 3}, "inputs.city"), ({"city": "x", "country": "y"}, "inputs.country")],
)
def test_bad_inputs_are_a_400_naming_the_input(user_client, workflow, inputs, field):
    workflow.nodes.filter(key="start").update(config={"inputs": [{"name": "city", "type": "string", "required": True}]})
    response = user_client.post(runs_url(workflow), {"inputs": inputs}, format="json")
    assert response.status_code == 400
    assert response.json()["field"] == field
    assert not Run.objects.exists()


@pytest.mark.django_db
def test_unknown_body_fields_are_refused(user_client, workflow):
    response = user_client.post(runs_url(workflow), {"inputs": {}, "speed": "fast"}, format="json")
    assert response.status_code == 400
    assert "speed" in response.json()


@pytest.mark.django_db
def test_an_invalid_draft_is_a_400_with_every_issue(user_client, user):
    workflow = WorkflowFactory(owner=user)
    NodeFactory(workflow=workflow, key="lonely", type="teleport", config={})
    response = user_client.post(runs_url(workflow), {"inputs": {}}, format="json")
    assert response.status_code == 400
    fields = {(error["node"], error["field"]) for error in response.json()["errors"]}
    assert ("lonely", "type") in fields
    assert (None, "nodes") in fields


@pytest.mark.django_db
def test_another_users_workflow_is_a_404(other_client, workflow):
    assert other_client.post(runs_url(workflow), {"inputs": {"city": "x"}}, format="json").status_code == 404


@pytest.mark.django_db
def test_a_viewer_may_not_start_runs_but_an_executor_may(client_for, workflow, other_user):
    member = WorkflowMemberFactory(workflow=workflow, user=other_user, role="viewer")
    client = client_for(other_user)
    assert client.post(runs_url(workflow), {"inputs": {"city": "x"}}, format="json").status_code == 403
    member.role = "executor"
    member.save()
    assert client.post(runs_url(workflow), {"inputs": {"city": "x"}}, format="json").status_code == 202


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("embedded")
def test_wait_answers_200_with_the_finished_run(user_client, workflow):
    response = user_client.post(runs_url(workflow), {"inputs": {"city": "Oslo"}, "wait": True}, format="json")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["status"] == "succeeded"
    assert body["outputs"] == {"text": "Weather for Oslo"}
    assert {task["node_id"]: task["status"] for task in body["tasks"]} == {
        "start": "succeeded",
        "greet": "succeeded",
        "end": "succeeded",
    }


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("embedded")
def test_wait_answers_202_when_the_run_takes_longer(user_client, user, engine_settings):
    engine_settings(WAIT_TIMEOUT_S=0.2, CANCEL_POLL_S=0.05)
    workflow = workflow_create(
        owner=user, name="Slow", graph=chain(start(), node("nap", "test_sleep", {"seconds": 30}), end())
    )
    response = user_client.post(runs_url(workflow), {"inputs": {}, "wait": True}, format="json")
    assert response.status_code == 202
    run_id = response.json()["id"]
    assert user_client.post(f"/api/v1/runs/{run_id}/cancel/", {}, format="json").status_code == 202
    run = Run.objects.get(pk=run_id)
    from workflows.execution.services import run_wait

    assert run_wait(run=run, timeout=5).status == "cancelled"


@pytest.mark.django_db
def test_cancel_a_pending_run(user_client, workflow):
    run = RunFactory(workflow=workflow)
    response = user_client.post(f"/api/v1/runs/{run.pk}/cancel/", {}, format="json")
    assert response.status_code == 202
    assert response.json()["status"] == "cancelled"
    assert user_client.post(f"/api/v1/runs/{run.pk}/cancel/", {}, format="json").status_code == 202


@pytest.mark.django_db
def test_cancel_a_finished_run_is_a_409(user_client, workflow):
    run = RunFactory(workflow=workflow, status="succeeded")
    response = user_client.post(f"/api/v1/runs/{run.pk}/cancel/", {}, format="json")
    assert response.status_code == 409
    assert response.json()["code"] == "run_finished"


@pytest.mark.django_db
def test_cancel_another_users_run_is_a_404_and_a_viewers_a_403(other_client, client_for, workflow, other_user):
    run = RunFactory(workflow=workflow)
    assert other_client.post(f"/api/v1/runs/{run.pk}/cancel/", {}, format="json").status_code == 404
    WorkflowMemberFactory(workflow=workflow, user=other_user, role="viewer")
    assert client_for(other_user).post(f"/api/v1/runs/{run.pk}/cancel/", {}, format="json").status_code == 403
    run.refresh_from_db()
    assert run.status == "pending"


@pytest.mark.django_db
def test_validate_a_valid_draft(user_client, workflow):
    response = user_client.post(f"/api/v1/workflows/{workflow.pk}/validate/", {}, format="json")
    assert response.status_code == 200
    assert response.json() == {"valid": True}


@pytest.mark.django_db
def test_validate_a_given_graph_reports_every_issue(user_client, workflow):
    graph = chain(start(), node("a", "template", {"template": "{{ b.text }}"}), node("b", "teleport"))
    response = user_client.post(f"/api/v1/workflows/{workflow.pk}/validate/", {"graph": graph}, format="json")
    assert response.status_code == 400
    errors = response.json()["errors"]
    assert {(e["node"], e["field"]) for e in errors} >= {("b", "type"), (None, "nodes")}
    assert all(set(e) == {"node", "field", "message"} for e in errors)


@pytest.mark.django_db
def test_validate_another_users_workflow_is_a_404(other_client, workflow):
    assert other_client.post(f"/api/v1/workflows/{workflow.pk}/validate/", {}, format="json").status_code == 404
