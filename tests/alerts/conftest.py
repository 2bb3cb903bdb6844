import copy
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.factories import SIMPLE_GRAPH
from tests.integration.conftest import cluster, cluster_settings  # noqa: F401 (fixtures of test_cluster.py)
from workflows.execution.run_loop import server_run_loop
from workflows.services import workflow_create

#: A workflow whose one working node always fails; its start takes an optional ``failure`` object, so
#: that it can be an error workflow too.
FAILING_GRAPH = {
    "nodes": [
        {"id": "start", "type": "start", "config": {"inputs": [{"name": "failure", "type": "object"}]}},
        {
            "id": "boom",
            "type": "template",
            "config": {"template": "{{ 1 / 0 }}"},
            "error_policy": {"on_failure": "fail"},
        },
        {"id": "end", "type": "end", "config": {"outputs": {"text": "{{ boom.text }}"}}},
    ],
    "edges": [{"source": "start", "target": "boom"}, {"source": "boom", "target": "end"}],
}

#: An error workflow: it reports what it was given about the failed run.
HANDLER_GRAPH = {
    "nodes": [
        {
            "id": "start",
            "type": "start",
            "config": {"inputs": [{"name": "failure", "type": "object", "required": True}]},
        },
        {
            "id": "report",
            "type": "template",
            "config": {
                "template": "{{ start.failure.run_id }}|{{ start.failure.failed_node }}|"
                "{{ start.failure.inputs.city }}|{{ start.failure.error }}"
            },
        },
        {"id": "end", "type": "end", "config": {"outputs": {"report": "{{ report.text }}"}}},
    ],
    "edges": [{"source": "start", "target": "report"}, {"source": "report", "target": "end"}],
}

#: Fails, with a ``city`` input (to see the inputs reach the error workflow).
FAILING_WITH_CITY = copy.deepcopy(FAILING_GRAPH)
FAILING_WITH_CITY["nodes"][0]["config"]["inputs"] = [{"name": "city", "type": "string"}]


@pytest.fixture
def failing_workflow(user):
    return workflow_create(owner=user, name="Broken", graph=copy.deepcopy(FAILING_WITH_CITY))


@pytest.fixture
def handler_workflow(user):
    return workflow_create(owner=user, name="On failure", graph=copy.deepcopy(HANDLER_GRAPH))


@pytest.fixture
def greeter(user):
    return workflow_create(owner=user, name="Greeter", graph=copy.deepcopy(SIMPLE_GRAPH))


@pytest.fixture
def embedded(settings):
    """Runs execute in this process (the server's run loop) and run ends are acted on here too."""
    settings.EMBEDDED = True


def runs_settle() -> None:
    """Wait until the server's run loop executes nothing (a run it ends may start another)."""
    for _ in range(4):
        assert server_run_loop.wait_idle(timeout=30)


class Receiver:
    """A loopback webhook receiver: answers the scripted statuses in turn (then 200), records each request."""

    def __init__(self, statuses=()):
        self.statuses = list(statuses)
        self.requests: list[dict] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}{path}"

    def _handler(self):
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format, *args):
                return

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver._lock:
                    receiver.requests.append({"headers": {k.lower(): v for k, v in self.headers.items()}, "body": body})
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                answer = json.dumps({"ok": status < 300}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

        return Handler

    def start(self) -> "Receiver":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def receiver():
    server = Receiver().start()
    yield server
    server.stop()
