"""A run of computing nodes started by a request executes in the web process serving it, whether the request
waits for it or not (workflows.execution.dispatch): claimed, journaled and metered as on a worker,
with no broker between it and its answer. A run with
a node that leaves the process (sandbox, network, model) goes to a worker, and so does any run past
WEFT_ENGINE_RUNS_HERE_MAX. No Celery worker runs in these tests: a run sent to one stays pending.
"""

import json
import time

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.renderers import JSONRenderer

from history.models import UsageMetric
from tests.engine.conftest import chain, edge, end, node, start
from workflows.execution.dispatch import runs_here
from workflows.models import Run, RunEvent
from workflows.serializers import RunSerializer
from workflows.services import workflow_create

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.services]

GREETING = chain(
    start("city"),
    node("greet", "template", {"template": "Weather for {{ start.city }}"}),
    node("shout", "template", {"template": "{{ greet.text | upper }}"}),
    end(text="{{ shout.text }}"),
)


@pytest.fixture(autouse=True)
def with_workers(settings, engine_settings):
    """Redis and workers, as the Procfile deploys: not embedded. A run sent to a worker is not awaited long."""
    settings.EMBEDDED = False
    engine_settings(WAIT_TIMEOUT_S=1.0)


def start_waiting(client, workflow, inputs: dict):
    return client.post(f"/api/v1/workflows/{workflow.pk}/runs/", {"inputs": inputs, "wait": True}, format="json")


def test_a_waited_run_of_computing_nodes_is_answered_by_the_web_process_and_stored(user_client, user):
    workflow = workflow_create(owner=user, name="Greeter", graph=GREETING)

    response = start_waiting(user_client, workflow, {"city": "Oslo"})

    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["outputs"] == {"text": "WEATHER FOR OSLO"}
    assert [task["node_id"] for task in body["tasks"]] == ["start", "greet", "shout", "end"]
    # As durable as a worker's run: its end, its events and its usage are in the database.
    run = Run.objects.get(pk=body["id"])
    assert (run.status, run.lease_owner, run.dispatch_attempts) == ("succeeded", "", 1)
    assert RunEvent.objects.filter(run=run).order_by("-seq").values_list("type", flat=True).first() == "run.succeeded"
    # A run that used no model is metered by the statement that ends it: the row is there with the answer.
    usage = UsageMetric.objects.get(run=run)
    assert (usage.user_id, usage.workflow_id, usage.node_count, usage.tokens_in) == (user.pk, workflow.pk, 4, 0)
    assert usage.duration_ms == int((run.finished_at - run.started_at).total_seconds() * 1000)


@pytest.mark.parametrize(
    ("graph", "why"),
    [
        (chain(start(), node("run_code", "code", {"code": "def main():\n    return {}"}), end()), "sandbox"),
        (chain(start(), node("fetch", "http_request", {"url": "http://127.0.0.1:9/"}), end()), "network"),
    ],
)
def test_a_run_with_a_node_that_leaves_the_process_goes_to_a_worker(user_client, user, graph, why):
    workflow = workflow_create(owner=user, name=f"Needs a {why}", graph=graph)

    response = start_waiting(user_client, workflow, {})

    assert response.status_code == 202, response.json()
    assert response.json()["status"] == "pending"  # sent to a worker; none runs here
    assert Run.objects.get(pk=response.json()["id"]).dispatch_attempts == 0


def test_past_the_bound_a_waited_run_goes_to_a_worker(user_client, user, engine_settings):
    engine_settings(WAIT_TIMEOUT_S=1.0, RUNS_HERE_MAX=0)
    workflow = workflow_create(owner=user, name="Greeter", graph=GREETING)

    response = start_waiting(user_client, workflow, {"city": "Oslo"})

    assert response.status_code == 202
    assert Run.objects.get(pk=response.json()["id"]).status == "pending"


def test_a_run_not_waited_for_is_answered_at_once_and_executed_here_too(user_client, user):
    workflow = workflow_create(owner=user, name="Greeter", graph=GREETING)

    response = user_client.post(f"/api/v1/workflows/{workflow.pk}/runs/", {"inputs": {"city": "x"}}, format="json")

    assert response.status_code == 202
    # No worker runs in these tests: the web process executed it, with no broker between.
    deadline = time.monotonic() + 10
    run = Run.objects.get(pk=response.json()["id"])
    while run.status != "succeeded" and time.monotonic() < deadline:
        time.sleep(0.02)
        run.refresh_from_db()
    assert (run.status, run.outputs, run.dispatch_attempts) == ("succeeded", {"text": "WEATHER FOR X"}, 1)


@pytest.mark.parametrize(
    ("graph", "here"),
    [
        (GREETING, True),
        (chain(start(), node("pick", "condition", {"cases": []}), end()), True),
        (chain(start(), node("ask", "llm", {"provider": "p", "prompt": "hi"}), end()), False),
        (
            chain(start("items"), node("each", "iteration", {"items": "{{ start.items }}", "graph": GREETING}), end()),
            False,
        ),
    ],
)
def test_which_graphs_may_run_in_the_web_process(graph, here):
    assert runs_here(graph) is here


TRIP = {
    "nodes": [
        start("city", temperature="number"),
        node("summary", "template", {"template": "{{ start.city }}: {{ start.temperature }} degrees."}),
        node(
            "check",
            "condition",
            {
                "cases": [
                    {
                        "id": "warm",
                        "conditions": [{"variable": "{{ start.temperature }}", "operator": "ge", "value": 20}],
                    }
                ]
            },
        ),
        node("warm", "template", {"template": "Pack light for {{ start.city }}."}),
        node("cold", "template", {"template": "Bring a coat to {{ start.city }}."}),
        node("advice", "aggregator", {"variables": ["{{ warm.text }}", "{{ cold.text }}"], "mode": "first"}),
        end(summary="{{ summary.text }}", advice="{{ advice.output }}"),
    ],
    "edges": [
        edge("start", "summary"),
        edge("start", "check"),
        edge("check", "warm", "warm"),
        edge("check", "cold", "else"),
        edge("warm", "advice"),
        edge("cold", "advice"),
        edge("summary", "end"),
        edge("advice", "end"),
    ],
}
FAILING = chain(
    start(n="number"),
    node("ratio", "template", {"template": "{{ 10 / start.n }}"}),
    node("shout", "template", {"template": "{{ ratio.text | upper }}"}),
    end(text="{{ shout.text }}"),
)
TOLERANT = chain(
    start(n="number"),
    node("ratio", "template", {"template": "{{ 10 / start.n }}"}, on_failure="continue"),
    end(text="done"),
)


def stored_answer(run_id) -> dict:
    """The run as the API shows it, read from the database."""
    run = Run.objects.prefetch_related("tasks").get(pk=run_id)
    return json.loads(JSONRenderer().render(RunSerializer(run).data))


@pytest.mark.parametrize(
    ("graph", "inputs", "status"),
    [
        (GREETING, {"city": "Oslo"}, "succeeded"),
        (TRIP, {"city": "Lisbon", "temperature": 25}, "succeeded"),
        (TRIP, {"city": "Oslo", "temperature": -3}, "succeeded"),
        (FAILING, {"n": 0}, "failed"),
        (TOLERANT, {"n": 0}, "succeeded"),
    ],
    ids=["chain", "warm-branch", "cold-branch", "failed", "failure-continued"],
)
def test_the_answer_of_a_run_executed_here_is_what_was_stored_without_reading_it_back(
    user_client, user, graph, inputs, status
):
    workflow = workflow_create(owner=user, name="Compared", graph=graph)

    with CaptureQueriesContext(connection) as queries:
        response = start_waiting(user_client, workflow, inputs)

    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["status"] == status
    # Answered from the journal's record: the request read neither the run nor its tasks back.
    assert not [
        q["sql"]
        for q in queries.captured_queries
        if q["sql"].lstrip().upper().startswith("SELECT") and '"tasks"' in q["sql"]
    ]
    stored = stored_answer(body["id"])
    by_node = lambda tasks: sorted(tasks, key=lambda task: (task["scope"], task["node_id"]))  # noqa: E731
    assert {**body, "tasks": by_node(body["tasks"])} == {**stored, "tasks": by_node(stored["tasks"])}
    # In the order the nodes started (a skipped node never did).
    started = [task["started_at"] for task in body["tasks"] if task["started_at"] is not None]
    assert started == sorted(started)
