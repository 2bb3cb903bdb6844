"""Trying one node of a draft: POST /api/v1/workflows/<id>/nodes/<node_id>/try/."""

import os

import pytest

from accounts.models import UserQuota
from history.models import AuditLog
from tests.factories import RunFactory, WorkflowMemberFactory
from workflows.models import Node, Run, RunEvent, RunStatus, Task, WorkflowMember
from workflows.services import workflow_create
from workflows.trial import NODE_TRY_ACTION

pytestmark = pytest.mark.services

CODE = """
import os
def main(n):
    return {'double': n * 2, 'pid': os.getpid(), 'ppid': os.getppid(), 'uid': os.getuid()}
"""

GRAPH = {
    "nodes": [
        {
            "id": "start",
            "type": "start",
            "config": {
                "inputs": [{"name": "city", "type": "string", "default": "Porto"}, {"name": "n", "type": "number"}]
            },
        },
        {"id": "summary", "type": "template", "config": {"template": "Sunny"}},
        {"id": "greet", "type": "template", "config": {"template": "{{ summary.text }} in {{ start.city }}"}},
        {"id": "calc", "type": "code", "config": {"code": CODE, "inputs": {"n": "{{ start.n }}"}}},
        {
            "id": "check",
            "type": "condition",
            "config": {"cases": [{"id": "long", "expression": "{{ greet.text | length > 10 }}"}]},
        },
        {"id": "end", "type": "end", "config": {"outputs": {"text": "{{ greet.text }}"}}},
    ],
    "edges": [
        {"source": "start", "target": "summary"},
        {"source": "summary", "target": "greet"},
        {"source": "start", "target": "calc"},
        {"source": "greet", "target": "check"},
        {"source": "check", "target": "end", "source_handle": "long"},
        {"source": "check", "target": "end", "source_handle": "else"},
        {"source": "calc", "target": "end"},
    ],
}


@pytest.fixture
def workflow(user):
    return workflow_create(owner=user, name="Trip", graph=GRAPH)


def try_url(workflow, node_id: str) -> str:
    return f"/api/v1/workflows/{workflow.pk}/nodes/{node_id}/try/"


def test_a_template_node_renders_the_given_inputs(user_client, workflow):
    inputs = {"start": {"city": "Lisbon"}, "summary": {"text": "Sunny"}}

    response = user_client.post(try_url(workflow, "greet"), {"inputs": inputs}, format="json")

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["node"] == "greet"
    assert body["type"] == "template"
    assert body["status"] == "succeeded"
    assert body["output"] == {"text": "Sunny in Lisbon"}
    assert body["error"] is None
    assert body["duration_ms"] >= 0


def test_the_start_inputs_get_their_defaults_as_in_a_run(user_client, workflow):
    response = user_client.post(try_url(workflow, "greet"), {"inputs": {"summary": {"text": "Rain"}}}, format="json")

    assert response.json()["output"] == {"text": "Rain in Porto"}


def test_a_node_sees_only_the_ancestors_given_a_left_out_one_is_undefined(user_client, workflow):
    response = user_client.post(try_url(workflow, "greet"), {"inputs": {"start": {"city": "Lisbon"}}}, format="json")

    body = response.json()
    assert response.status_code == 200
    assert body["status"] == "failed"
    assert body["output"] is None
    assert body["error"]["code"] == "node_failed"
    assert "summary" in body["error"]["detail"]


def test_a_condition_node_says_which_case_it_takes(user_client, workflow):
    response = user_client.post(
        try_url(workflow, "check"), {"inputs": {"greet": {"text": "Sunny in Lisbon"}}}, format="json"
    )

    assert response.json()["output"] == {"case": "long"}


def test_a_code_node_runs_in_the_sandbox(user_client, workflow):
    response = user_client.post(try_url(workflow, "calc"), {"inputs": {"start": {"n": 21}}}, format="json")

    assert response.status_code == 200, response.content
    output = response.json()["output"]
    assert output["double"] == 42
    # As in a run: an unprivileged process, PID 1's child in a PID namespace of its own, not this one.
    assert output["uid"] != 0
    assert output["ppid"] == 1
    assert output["pid"] != os.getpid()


def test_a_failing_node_is_a_200_with_a_coded_error_and_no_retry(user, user_client):
    code = "def main():\n    raise ValueError('no weather today')"
    graph = {
        "nodes": [
            {"id": "start", "type": "start"},
            {
                "id": "calc",
                "type": "code",
                "config": {"code": code},
                "error_policy": {"retry": {"max_attempts": 3}, "on_failure": "continue"},
            },
            {"id": "end", "type": "end"},
        ],
        "edges": [{"source": "start", "target": "calc"}, {"source": "calc", "target": "end"}],
    }
    workflow = workflow_create(owner=user, name="Failing", graph=graph)

    response = user_client.post(try_url(workflow, "calc"), {"inputs": {}}, format="json")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "failed"
    assert body["output"] is None  # on_failure does not apply to a try
    assert body["error"]["code"] == "node_failed"
    assert body["error"]["retryable"] is False  # a run does not retry an exception of the user's code
    assert "ValueError: no weather today" in body["error"]["detail"]
    assert body["duration_ms"] >= 0


def fetch_workflow(owner, url: str):
    graph = {
        "nodes": [
            {"id": "start", "type": "start"},
            {
                "id": "fetch",
                "type": "http_request",
                "config": {"url": url},
                # A run would wait ten minutes before its next attempt: a try does not.
                "error_policy": {"retry": {"max_attempts": 5, "backoff": "fixed", "initial_s": 600, "jitter": False}},
            },
            {"id": "end", "type": "end"},
        ],
        "edges": [{"source": "start", "target": "fetch"}, {"source": "fetch", "target": "end"}],
    }
    return workflow_create(owner=owner, name="Fetch", graph=graph)


def test_an_http_node_goes_through_the_outbound_guard(user, user_client, fake_http):
    workflow = fetch_workflow(user, fake_http.url("/echo"))

    body = user_client.post(try_url(workflow, "fetch"), {}, format="json").json()

    assert body["status"] == "failed"
    assert body["error"]["retryable"] is False
    assert not fake_http.requests  # refused before any connection: loopback is not allowed by default


def test_an_http_node_answers_with_the_response(user, user_client, fake_http, allow_loopback):
    workflow = fetch_workflow(user, fake_http.url("/echo?lang=en"))

    body = user_client.post(try_url(workflow, "fetch"), {}, format="json").json()

    assert body["status"] == "succeeded", body
    assert body["output"]["status"] == 200
    assert body["output"]["json"]["query"] == {"lang": "en"}


@pytest.mark.parametrize(("code", "retryable"), [(503, True), (404, False)])
def test_a_failure_says_whether_a_run_would_retry_and_is_tried_once(
    user, user_client, fake_http, allow_loopback, code, retryable
):
    workflow = fetch_workflow(user, fake_http.url(f"/status?code={code}"))

    body = user_client.post(try_url(workflow, "fetch"), {}, format="json").json()

    assert body["status"] == "failed"
    assert body["error"]["retryable"] is retryable
    assert f"answered {code}" in body["error"]["detail"]
    assert len(fake_http.requests) == 1


def test_the_nodes_timeout_bounds_the_try(user, user_client):
    graph = {
        "nodes": [
            {"id": "start", "type": "start"},
            {
                "id": "calc",
                "type": "code",
                "config": {"code": "import time\ndef main():\n    time.sleep(60)\n    return {}"},
                "error_policy": {"timeout_s": 0.5},
            },
            {"id": "end", "type": "end"},
        ],
        "edges": [{"source": "start", "target": "calc"}, {"source": "calc", "target": "end"}],
    }
    workflow = workflow_create(owner=user, name="Slow", graph=graph)

    body = user_client.post(try_url(workflow, "calc"), {}, format="json").json()

    assert body["status"] == "failed"
    assert "Timed out after 0.5 s" in body["error"]["detail"]
    assert body["error"]["retryable"] is True


def test_a_try_waits_no_longer_than_a_request_waits_for_a_run(user, user_client, settings):
    settings.WEFT = {**settings.WEFT, "ENGINE": {**settings.WEFT.get("ENGINE", {}), "WAIT_TIMEOUT_S": 0.5}}
    graph = {
        "nodes": [
            {"id": "start", "type": "start"},
            {
                "id": "calc",
                "type": "code",
                "config": {"code": "import time\ndef main():\n    time.sleep(60)\n    return {}"},
            },
            {"id": "end", "type": "end"},
        ],
        "edges": [{"source": "start", "target": "calc"}, {"source": "calc", "target": "end"}],
    }
    workflow = workflow_create(owner=user, name="Slow", graph=graph)

    body = user_client.post(try_url(workflow, "calc"), {}, format="json").json()

    assert "Timed out after 0.5 s" in body["error"]["detail"]


def test_an_unknown_node_is_a_404_naming_it(user_client, workflow):
    response = user_client.post(try_url(workflow, "nowhere"), {"inputs": {}}, format="json")

    assert response.status_code == 404
    assert response.json()["field"] == "node_id"
    assert "nowhere" in response.json()["detail"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"inputs": {"end": {"text": "x"}}}, "inputs.end"),  # downstream: not what the node can read
        ({"inputs": {"calc": {"double": 2}}}, "inputs.calc"),  # on another branch
        ({"inputs": {"summary": "Sunny"}}, "inputs.summary"),  # an output is an object
        ({"inputs": {"start": ["Lisbon"]}}, "inputs.start"),
        ({"inputs": {"start": {"city": 3}}}, "inputs.start.city"),  # checked as a run's inputs are
        ({"inputs": {"start": {"town": "Lisbon"}}}, "inputs.start.town"),
    ],
)
def test_inputs_the_node_cannot_read_are_a_400_naming_the_field(user_client, workflow, body, field):
    response = user_client.post(try_url(workflow, "greet"), body, format="json")

    assert response.status_code == 400
    assert response.json()["field"] == field


@pytest.mark.parametrize("body", [{"inputs": "Lisbon"}, {"inputs": {}, "wait": True}])
def test_a_malformed_body_is_a_400_naming_the_field(user_client, workflow, body):
    response = user_client.post(try_url(workflow, "greet"), body, format="json")

    assert response.status_code == 400
    assert set(response.json()) & {"inputs", "wait"}


def test_a_node_that_no_longer_validates_is_a_400_with_its_issues(user_client, workflow):
    # A draft row written before a rule existed, or by hand: the try checks the node as a run would.
    Node.objects.filter(workflow=workflow, key="greet").update(config={"template": "{{ start.city "})

    response = user_client.post(try_url(workflow, "greet"), {"inputs": {}}, format="json")

    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "invalid_graph"
    assert [(issue["node"], issue["field"]) for issue in body["errors"]] == [("greet", "config.template")]


def test_the_day_quota_refuses_a_try_as_it_would_a_run(user, user_client, workflow):
    UserQuota.objects.create(user=user, runs_per_day=1)
    inputs = {"inputs": {"summary": {"text": "Sunny"}, "start": {"city": "Lisbon"}}}

    assert user_client.post(try_url(workflow, "greet"), inputs, format="json").status_code == 200
    response = user_client.post(try_url(workflow, "greet"), inputs, format="json")

    assert response.status_code == 429
    assert response.json()["quota"] == "runs_per_day"
    assert "Retry-After" in response


def test_a_try_has_no_place_while_the_users_runs_take_them_all(user, user_client, workflow):
    UserQuota.objects.create(user=user, concurrent_runs=1)
    RunFactory(workflow=workflow, status=RunStatus.RUNNING)

    response = user_client.post(try_url(workflow, "greet"), {"inputs": {}}, format="json")

    assert response.status_code == 429
    assert response.json()["quota"] == "concurrent_runs"


def test_a_try_is_stored_nowhere_but_an_audit_row(user, user_client, workflow):
    response = user_client.post(
        try_url(workflow, "greet"), {"inputs": {"start": {"city": "Lisbon"}, "summary": {"text": "S"}}}, format="json"
    )

    assert response.status_code == 200
    assert not Run.objects.exists()
    assert not Task.objects.exists()
    assert not RunEvent.objects.exists()
    audit = AuditLog.objects.get(action=NODE_TRY_ACTION)
    assert audit.actor == user
    assert (audit.target_type, audit.target_id) == ("workflows.workflow", str(workflow.pk))
    assert audit.payload["node"] == "greet"
    assert audit.payload["status"] == "succeeded"
    assert "Lisbon" not in str(audit.payload)  # what the node saw and made is not kept


def test_another_users_workflow_is_a_404(other_client, workflow):
    response = other_client.post(try_url(workflow, "greet"), {"inputs": {}}, format="json")

    assert response.status_code == 404
    assert not AuditLog.objects.filter(action=NODE_TRY_ACTION).exists()


def test_a_viewer_may_not_try_a_node(other_user, other_client, workflow):
    WorkflowMemberFactory(workflow=workflow, user=other_user, role=WorkflowMember.Role.VIEWER)

    response = other_client.post(try_url(workflow, "greet"), {"inputs": {}}, format="json")

    assert response.status_code == 403


def test_trying_needs_an_account(api_client, workflow):
    assert api_client.post(try_url(workflow, "greet"), {"inputs": {}}, format="json").status_code in (401, 403)


def test_an_iteration_node_runs_its_sub_graph_for_each_item(user, user_client):
    each = {
        "items": "{{ start.cities }}",
        "graph": {
            "nodes": [
                {"id": "in", "type": "start"},
                {"id": "say", "type": "template", "config": {"template": "{{ index }}: {{ item }} ({{ unit.text }})"}},
                {"id": "out", "type": "end", "config": {"outputs": {"line": "{{ say.text }}"}}},
            ],
            "edges": [{"source": "in", "target": "say"}, {"source": "say", "target": "out"}],
        },
    }
    graph = {
        "nodes": [
            {"id": "start", "type": "start", "config": {"inputs": [{"name": "cities", "type": "array"}]}},
            {"id": "unit", "type": "template", "config": {"template": "celsius"}},
            {"id": "each", "type": "iteration", "config": each},
            {"id": "end", "type": "end"},
        ],
        "edges": [
            {"source": "start", "target": "unit"},
            {"source": "unit", "target": "each"},
            {"source": "each", "target": "end"},
        ],
    }
    workflow = workflow_create(owner=user, name="Each", graph=graph)
    inputs = {"start": {"cities": ["Lisbon", "Oslo"]}, "unit": {"text": "C"}}

    body = user_client.post(try_url(workflow, "each"), {"inputs": inputs}, format="json").json()

    assert body["status"] == "succeeded", body
    assert body["output"] == {"results": [{"line": "0: Lisbon (C)"}, {"line": "1: Oslo (C)"}]}


def test_the_start_and_end_nodes_may_be_tried_too(user_client, workflow):
    started = user_client.post(try_url(workflow, "start"), {"inputs": {"start": {"city": "Oslo"}}}, format="json")
    ended = user_client.post(try_url(workflow, "end"), {"inputs": {"greet": {"text": "Hi"}}}, format="json")

    assert started.json()["output"] == {"city": "Oslo"}
    assert ended.json()["output"] == {"text": "Hi"}
