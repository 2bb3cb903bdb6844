"""Retry from the failure (POST /api/v1/runs/<id>/retry/): a new run linked to the failed one that reuses
what succeeded. A loopback server counts the requests of the http_request nodes, so a node with
effects that succeeded is seen not to be called again."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest

from history.models import AuditLog, UsageMetric
from tests.engine.conftest import chain, edge, end, node, start
from tests.factories import RunFactory, UserFactory, WorkflowMemberFactory
from workflows.execution.services import run_wait
from workflows.models import Run, Task
from workflows.services import workflow_create
from workflows.usage import usage_record_for_run

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("embedded")]

WAIT_S = 30


class CountingServer:
    """Counts the requests to each path. ``/flaky`` answers 500 while ``failing``; any other path 200."""

    def __init__(self):
        self.counts: dict[str, int] = {}
        self.failing = True
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}{path}"

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format, *args):
                return

            def _handle(self):
                path = urlsplit(self.path).path
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                with server._lock:
                    server.counts[path] = server.counts.get(path, 0) + 1
                failed = path == "/flaky" and server.failing
                body = json.dumps({"path": path, "ok": not failed}).encode()
                self.send_response(500 if failed else 200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _handle

        return Handler

    def __enter__(self) -> "CountingServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def counting(allow_loopback):
    with CountingServer() as server:
        yield server


def effectful_graph(server: CountingServer) -> dict:
    """start → charge and note (POSTs: effects) → confirm (fails while the server says so) → end."""
    graph = chain(
        start("order"),
        node(
            "charge",
            "http_request",
            {"method": "POST", "url": server.url("/charge"), "json": {"o": "{{ start.order }}"}},
        ),
        node("confirm", "http_request", {"url": server.url("/flaky")}),
        end(charged="{{ charge.status }}", confirmed="{{ confirm.json.ok }}", noted="{{ note.status }}"),
    )
    graph["nodes"].insert(1, node("note", "http_request", {"method": "POST", "url": server.url("/note")}))
    graph["edges"] += [edge("start", "note"), edge("note", "confirm")]
    return graph


def started(client, workflow, inputs: dict) -> Run:
    response = client.post(f"/api/v1/workflows/{workflow.pk}/runs/", {"inputs": inputs}, format="json")
    assert response.status_code == 202, response.json()
    return run_wait(run=Run.objects.get(pk=response.json()["id"]), timeout=WAIT_S)


def retried(client, run: Run, **body):
    return client.post(f"/api/v1/runs/{run.pk}/retry/", body, format="json")


@pytest.fixture
def failed_run(user, user_client, counting):
    workflow = workflow_create(owner=user, name="Order", graph=effectful_graph(counting))
    run = started(user_client, workflow, {"order": "42"})
    assert run.status == "failed", run.error
    assert counting.counts == {"/charge": 1, "/note": 1, "/flaky": 1}
    return run


def test_a_retry_reuses_the_succeeded_nodes_and_calls_no_effect_again(user_client, failed_run, counting):
    counting.failing = False

    response = retried(user_client, failed_run)

    assert response.status_code == 202, response.json()
    body = response.json()
    assert body["retry_of"] == str(failed_run.pk)
    assert body["url"].endswith(f"/api/v1/runs/{body['id']}/")
    retry = run_wait(run=Run.objects.get(pk=body["id"]), timeout=WAIT_S)
    assert retry.status == "succeeded", retry.error
    assert retry.outputs == {"charged": 200, "confirmed": True, "noted": 200}
    # The nodes that succeeded were not called again; the failed one was, once.
    assert counting.counts == {"/charge": 1, "/note": 1, "/flaky": 2}
    assert (retry.retry_of_id, retry.graph, retry.inputs) == (failed_run.pk, failed_run.graph, failed_run.inputs)
    tasks = {task.node_id: task for task in Task.objects.filter(run=retry)}
    original = {task.node_id: task for task in Task.objects.filter(run=failed_run)}
    assert {node_id: task.status for node_id, task in tasks.items()} == dict.fromkeys(
        ["start", "charge", "note", "confirm", "end"], "succeeded"
    )
    assert tasks["charge"].output_data == original["charge"].output_data
    assert "Reused from run" in tasks["charge"].description
    assert tasks["confirm"].description == ""
    shown = user_client.get(f"/api/v1/runs/{retry.pk}/").json()
    assert shown["retry_of"] == str(failed_run.pk)
    assert user_client.get(f"/api/v1/runs/{failed_run.pk}/").json()["retry_of"] is None
    # Metered for what ran again (confirm and end), not for the nodes it reused.
    usage_record_for_run(run_id=retry.pk)
    assert UsageMetric.objects.get(run=retry).node_count == 2


def test_a_retry_that_fails_again_can_be_retried_in_turn(user_client, failed_run, counting):
    again = run_wait(run=Run.objects.get(pk=retried(user_client, failed_run).json()["id"]), timeout=WAIT_S)
    assert again.status == "failed"
    counting.failing = False
    last = run_wait(run=Run.objects.get(pk=retried(user_client, again).json()["id"]), timeout=WAIT_S)
    assert last.status == "succeeded", last.error
    assert last.retry_of_id == again.pk
    assert counting.counts == {"/charge": 1, "/note": 1, "/flaky": 3}


def test_a_retry_on_the_current_draft_runs_its_changed_failed_node(user_client, failed_run, counting):
    workflow = failed_run.workflow
    workflow.nodes.filter(key="confirm").update(config={"url": counting.url("/confirmed")})

    response = retried(user_client, failed_run, graph="current")

    assert response.status_code == 202, response.json()
    retry = run_wait(run=Run.objects.get(pk=response.json()["id"]), timeout=WAIT_S)
    assert retry.status == "succeeded", retry.error
    assert counting.counts == {"/charge": 1, "/note": 1, "/flaky": 1, "/confirmed": 1}
    confirm = next(n for n in retry.graph["nodes"] if n["id"] == "confirm")
    assert confirm["config"] == {"url": counting.url("/confirmed")}


def test_a_retry_on_a_draft_where_a_succeeded_node_changed_is_a_409_naming_it(user_client, failed_run, counting):
    workflow = failed_run.workflow
    workflow.nodes.filter(key="charge").update(config={"method": "POST", "url": counting.url("/charge-twice")})
    workflow.nodes.filter(key="note").delete()  # gone: changed too
    workflow.nodes.filter(key="end").update(config={"outputs": {"charged": "{{ charge.status }}"}})
    runs = Run.objects.count()

    response = retried(user_client, failed_run, graph="current")

    assert response.status_code == 409, response.json()
    body = response.json()
    assert (body["code"], body["nodes"], body["field"]) == ("retry_graph_changed", ["charge", "note"], "graph")
    assert "charge" in body["detail"]
    assert Run.objects.count() == runs
    # The same graph still retries.
    assert retried(user_client, failed_run, graph="same").status_code == 202


def test_the_items_of_an_iteration_that_succeeded_are_not_run_again(user, user_client, counting):
    base = counting.url("")
    inner = chain(
        node("in", "start"),
        node("call", "http_request", {"method": "POST", "url": base + "/{{ item }}"}),
        end(status="{{ call.status }}"),
    )
    graph = chain(
        start(items="array"),
        node("each", "iteration", {"items": "{{ start.items }}", "concurrency": 1, "graph": inner}),
        end(results="{{ each.results }}"),
    )
    workflow = workflow_create(owner=user, name="Each", graph=graph)
    run = started(user_client, workflow, {"items": ["charge", "flaky"]})
    assert run.status == "failed"
    assert counting.counts == {"/charge": 1, "/flaky": 1}
    counting.failing = False

    retry = run_wait(run=Run.objects.get(pk=retried(user_client, run).json()["id"]), timeout=WAIT_S)

    assert retry.status == "succeeded", retry.error
    assert retry.outputs == {"results": [{"status": 200}, {"status": 200}]}
    assert counting.counts == {"/charge": 1, "/flaky": 2}


def test_a_node_of_an_iteration_is_named_by_its_path_when_it_changed():
    from workflows.execution.retry import _changed_nodes

    def graph(template: str) -> dict:
        inner = chain(node("in", "start"), node("say", "template", {"template": template}), end(line="{{ say.text }}"))
        return chain(start(), node("each", "iteration", {"items": "{{ start.items }}", "graph": inner}), end())

    tasks = [{"node_id": "say", "scope": "each[0]"}, {"node_id": "say", "scope": "each[1]"}]
    assert _changed_nodes(original=graph("{{ item }}"), current=graph("{{ item }}"), tasks=tasks) == []
    assert _changed_nodes(original=graph("{{ item }}"), current=graph("{{ index }}"), tasks=tasks) == ["each/say"]


@pytest.mark.parametrize("status", ["succeeded", "running", "pending"])
def test_only_a_failed_or_cancelled_run_is_retried(user_client, user, status):
    workflow = workflow_create(owner=user, name="Done", graph=chain(start(), end()))
    run = RunFactory(workflow=workflow, graph=chain(start(), end()), inputs={}, status=status)

    response = retried(user_client, run)

    assert response.status_code == 409
    assert response.json()["code"] == "run_not_retryable"


def test_a_cancelled_run_is_retried(user_client, user):
    graph = chain(start(), node("greet", "template", {"template": "hi"}), end(text="{{ greet.text }}"))
    workflow = workflow_create(owner=user, name="Cancelled", graph=graph)
    run = RunFactory(workflow=workflow, graph=graph, inputs={}, status="cancelled")

    response = retried(user_client, run)

    assert response.status_code == 202, response.json()
    retry = run_wait(run=Run.objects.get(pk=response.json()["id"]), timeout=WAIT_S)
    assert (retry.status, retry.outputs) == ("succeeded", {"text": "hi"})


def test_who_may_retry(user, client_for, other_user, failed_run):
    assert retried(client_for(other_user), failed_run).status_code == 404
    member = WorkflowMemberFactory(workflow=failed_run.workflow, user=other_user, role="viewer")
    assert retried(client_for(other_user), failed_run).status_code == 403
    member.role = "executor"
    member.save()
    response = retried(client_for(other_user), failed_run)
    assert response.status_code == 202
    assert Run.objects.get(pk=response.json()["id"]).triggered_by == other_user


@pytest.mark.parametrize(("body", "field"), [({"graph": "latest"}, "graph"), ({"speed": 1}, "speed")])
def test_a_bad_body_is_a_400_naming_the_field(user_client, failed_run, body, field):
    response = retried(user_client, failed_run, **body)
    assert response.status_code == 400
    assert field in json.dumps(response.json())


def test_an_operator_switches_retries_off_in_the_admin_and_on_again(user_client, client, failed_run, counting):
    operator = UserFactory(is_staff=True, is_superuser=True)
    client.force_login(operator)
    workflow = failed_run.workflow

    client.post("/admin/workflows/workflow/", {"action": "retries_disable", "_selected_action": [workflow.pk]})

    refused = retried(user_client, failed_run)
    assert refused.status_code == 403
    assert refused.json()["code"] == "retries_disabled"
    assert not Run.objects.filter(retry_of=failed_run).exists()
    assert AuditLog.objects.filter(action="workflow.retries_disable", actor=operator).count() == 1

    client.post("/admin/workflows/workflow/", {"action": "retries_enable", "_selected_action": [workflow.pk]})
    counting.failing = False
    assert retried(user_client, failed_run).status_code == 202
