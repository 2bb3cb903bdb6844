"""The engine's growth in a deployment: a plugin node, a cached node and a large output, across
two servers and three workers.

One workflow holds the three paths: ``reverse`` is the example plugin's node type (enabled on
every process), ``blob`` is a code node with a result cache that returns more than the large-output
threshold, and the end node passes both on, so the run's outputs are stored as an object too. Runs
are started on one server and read on the other; the workers that execute them share the
object storage (a folder, as on one host) and the cache (Redis).
"""

import time

import httpx
import pytest
from knox.models import AuthToken

from tests.factories import UserFactory
from workflows.models import Run, RunEvent, RunStatus, Task

from .cluster import Deployment

pytestmark = [pytest.mark.services, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

BLOB_CHARS = 300_000  # above OUTPUT_STORE_ABOVE_BYTES (256 KiB)
BLOB_CODE = f"def main(text):\n    return {{'blob': (text + '.') * ({BLOB_CHARS} // (len(text) + 1))}}"
GRAPH = {
    "nodes": [
        {"id": "start", "type": "start", "config": {"inputs": [{"name": "text", "type": "string"}]}},
        {"id": "reverse", "type": "example_reverse", "config": {"text": "{{ start.text }}"}},
        {
            "id": "blob",
            "type": "code",
            "config": {"code": BLOB_CODE, "inputs": {"text": "{{ reverse.text }}"}, "timeout_s": 10},
            "cache": {"ttl_s": 600},
        },
        {
            "id": "end",
            "type": "end",
            "config": {"outputs": {"reversed": "{{ reverse.text }}", "blob": "{{ blob.blob }}"}},
        },
    ],
    "edges": [
        {"source": "start", "target": "reverse"},
        {"source": "reverse", "target": "blob"},
        {"source": "blob", "target": "end"},
    ],
}
SETTLE_TIMEOUT_S = 60


@pytest.fixture
def growing_deployment(transactional_db, tmp_path_factory):
    deployment = Deployment(logs=tmp_path_factory.mktemp("growth"), parked=False)
    deployment.env["WEFT_ENGINE_PLUGINS"] = "weft-plugin-example"
    try:
        deployment.start()
        yield deployment
    finally:
        deployment.stop()


def run_finished(run_id: str) -> Run:
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while time.monotonic() < deadline:
        run = Run.objects.get(pk=run_id)
        if run.status in (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED):
            return run
        time.sleep(0.1)
    raise AssertionError(f"run {run_id} did not end within {SETTLE_TIMEOUT_S} s")


def blob_of(text: str) -> str:
    reversed_text = text[::-1]
    return (reversed_text + ".") * (BLOB_CHARS // (len(reversed_text) + 1))


def test_a_plugin_node_a_cached_node_and_a_large_output_across_servers_and_workers(growing_deployment):
    first, second = growing_deployment.servers
    user = UserFactory()
    headers = {"Authorization": f"Token {AuthToken.objects.create(user)[1]}"}
    with httpx.Client(headers=headers, timeout=30) as client:
        created = client.post(f"{first.url}/api/v1/workflows/", json={"name": "Growth", "graph": GRAPH})
        assert created.status_code == 201, created.text
        workflow_id = created.json()["id"]

        def start(server, text: str) -> str:
            response = client.post(
                f"{server.url}/api/v1/workflows/{workflow_id}/runs/", json={"inputs": {"text": text}}
            )
            assert response.status_code == 202, response.text
            return response.json()["id"]

        # One after the other, so that the second finds what the first stored.
        runs = []
        for server, text in ((first, "weft"), (second, "weft"), (first, "loom")):
            runs.append(run_id := start(server, text))
            run = run_finished(run_id)
            assert run.status == RunStatus.SUCCEEDED, run.error

        for run_id, text, server in zip(runs, ("weft", "weft", "loom"), (second, first, second), strict=True):
            answer = client.get(f"{server.url}/api/v1/runs/{run_id}/")
            assert answer.status_code == 200, answer.text
            body = answer.json()
            # The plugin's node ran on a worker; the run's outputs, over the threshold, come back inlined.
            assert body["outputs"] == {"reversed": text[::-1], "blob": blob_of(text)}
            blob_task = next(task for task in body["tasks"] if task["node_id"] == "blob")
            assert blob_task["output"] == {"blob": blob_of(text)}

        # In the database the large values are references to objects, which either server serves.
        stored = Task.objects.get(run_id=runs[0], node_id="blob").output_data
        assert set(stored) >= {"$stored"}, "the large output was kept in the row"
        download = client.get(f"{second.url}{stored['$stored']['url']}")
        assert download.status_code == 200
        assert download.json() == {"blob": blob_of("weft")}

    # The second run with the same input reused the first run's result; the third (another input) did not.
    cached = {
        run_id: RunEvent.objects.get(run_id=run_id, node_id="blob", type="node.succeeded").data.get("cached", False)
        for run_id in runs
    }
    assert cached == {runs[0]: False, runs[1]: True, runs[2]: False}
    started = RunEvent.objects.filter(run_id__in=runs, node_id="blob", type="node.started")
    assert sorted(str(run_id) for run_id in started.values_list("run_id", flat=True)) == sorted([runs[0], runs[2]])
