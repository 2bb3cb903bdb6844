"""Runs executed by real Celery workers, watched over a real websocket, through kill -9 and cancel.

Everything goes through the processes a deployment runs (see conftest): runs are started and
cancelled over HTTP on daphne, executed by ``celery -A config worker`` subprocesses, streamed
through channels_redis to a ``websockets`` client. The test process plays beat (it calls the
reaper) and the outside world (loopback HTTP servers the workflows call).
"""

import asyncio
import json
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from django.db import connection
from knox.models import AuthToken
from websockets.asyncio.client import connect

from history.models import UsageMetric
from tests.engine.conftest import edge, end, node, start
from tests.factories import UserFactory
from tests.integration.conftest import wait_for
from workflows.execution.reaper import runs_reap
from workflows.models import Run, RunEvent, Task
from workflows.services import workflow_create

pytestmark = [pytest.mark.services, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

FINAL_EVENTS = {"run.succeeded", "run.failed", "run.cancelled"}


@pytest.fixture
def owner():
    user = UserFactory()
    _, token = AuthToken.objects.create(user=user)
    return user, token


def api(cluster, token: str, method: str, path: str, body: dict | None = None) -> httpx.Response:
    return httpx.request(
        method, f"{cluster.http_url}{path}", json=body, headers={"Authorization": f"Token {token}"}, timeout=10
    )


def run_start(cluster, owner, graph: dict, inputs: dict | None = None) -> dict:
    """Create a workflow with ``graph`` and start it through the API: the 202 body."""
    user, token = owner
    workflow = workflow_create(owner=user, name="Integration", graph=graph)
    response = api(cluster, token, "POST", f"/api/v1/workflows/{workflow.pk}/runs/", {"inputs": inputs or {}})
    assert response.status_code == 202, f"{response.text[:500]}\n{cluster.server.output()[-3000:]}"
    return response.json()


def run_finished(run_id, timeout: float = 20) -> Run:
    return wait_for(
        lambda: Run.objects.filter(pk=run_id, status__in=("succeeded", "failed", "cancelled")).first(),
        timeout=timeout,
        what=f"run {run_id} to finish",
    )


def task_running(run_id, node_id: str, timeout: float = 15) -> Task:
    return wait_for(
        lambda: Task.objects.filter(run_id=run_id, node_id=node_id, status="running").first(),
        timeout=timeout,
        what=f"node {node_id} of run {run_id} to run",
    )


def metered(run_id) -> bool:
    """The run's usage was recorded once it ended (after the run's own commit, so maybe a moment later)."""
    return bool(wait_for(lambda: UsageMetric.objects.filter(run_id=run_id).exists(), timeout=5, what="usage rows"))


def stored_events(run_id) -> list[dict]:
    return list(RunEvent.objects.filter(run_id=run_id).order_by("seq").values("seq", "type", "node_id", "data"))


def lease_holder(cluster, run_id):
    """The worker process holding the run's lease (its owner is ``host:pid:nonce``)."""
    owner = Run.objects.filter(pk=run_id).values_list("lease_owner", flat=True).get()
    assert owner, f"run {run_id} is not held by any worker"
    return cluster.worker_by_pid(int(owner.split(":")[1]))


def reap_until(run_id, outcome: str, *, timeout: float = 15) -> None:
    """Play beat: call the reaper until it resumed (or failed, ...) this run."""

    def reaped() -> bool:
        counts = runs_reap()
        return counts[outcome] > 0

    wait_for(reaped, timeout=timeout, what=f"the reaper to see run {run_id} {outcome}", pause=0.2)


async def ws_read(url: str, origin: str, token: str, *, timeout: float = 20, linger: float = 0.5) -> list[dict]:
    """Every message of a websocket until the run's final event, then anything sent within ``linger``."""
    messages: list[dict] = []
    deadline = time.monotonic() + timeout
    headers = {"Authorization": f"Token {token}"}
    async with connect(url, origin=origin, additional_headers=headers, open_timeout=5) as ws:
        while True:
            ended = any(message["type"] in FINAL_EVENTS for message in messages)
            wait = linger if ended else deadline - time.monotonic()
            if wait <= 0:
                raise AssertionError(f"no final event within {timeout} s: {messages}")
            try:
                raw = await asyncio.wait_for(ws.recv(), timeout=wait)
            except TimeoutError:
                if ended:
                    return messages
                raise
            messages.append(json.loads(raw))


# --- A run with a condition, two parallel branches and a join, watched live --------------------

BRANCHES = {
    "nodes": [
        start(n="number"),
        node(
            "route",
            "condition",
            {"cases": [{"id": "big", "conditions": [{"variable": "{{ start.n }}", "operator": "gt", "value": 5}]}]},
        ),
        node("small", "template", {"template": "small {{ start.n }}"}),
        node("left", "http_request", {"url": "URL/drip?n=6&every=0.05"}),
        node("right", "template", {"template": "right {{ start.n }}"}),
        node("join", "template", {"template": "{{ left.body }}|{{ right.text }}"}),
        end(text="{{ join.text }}"),
    ],
    "edges": [
        edge("start", "route"),
        edge("route", "small", "else"),
        edge("route", "left", "big"),
        edge("route", "right", "big"),
        edge("small", "join"),
        edge("left", "join"),
        edge("right", "join"),
        edge("join", "end"),
    ],
}


def with_url(graph: dict, url: str) -> dict:
    return json.loads(json.dumps(graph).replace("URL/", f"{url}/"))


def test_a_websocket_client_sees_every_event_of_a_branching_run_in_order(cluster_settings, owner, fake_http):
    cluster = cluster_settings
    started = run_start(cluster, owner, with_url(BRANCHES, fake_http.url("")), {"n": 7})
    _, token = owner
    assert started["ws_url"] == f"ws://127.0.0.1:{cluster.port}/ws/runs/{started['id']}/"
    ws_url = f"{started['ws_url']}?after=0"

    messages = asyncio.run(ws_read(ws_url, cluster.ws_origin, token))

    snapshot, events = messages[0], messages[1:]
    assert snapshot["type"] == "snapshot"
    assert [event["seq"] for event in events] == list(range(1, len(events) + 1))  # gapless, in order, once each
    run = Run.objects.get(pk=started["id"])
    assert run.status == "succeeded"
    assert run.outputs == {"text": "xxxxxx|right 7"}
    assert [(e["seq"], e["type"], e["node"] or "") for e in events] == [
        (e["seq"], e["type"], e["node_id"]) for e in stored_events(run.pk)
    ]
    order = [(event["type"], event["node"]) for event in events]
    assert order[0] == ("run.started", None)
    assert order[-1] == ("run.succeeded", None)
    assert ("node.skipped", "small") in order
    assert metered(run.pk)
    assert ("node.started", "small") not in order
    for node_id in ("start", "route", "left", "right", "join", "end"):
        assert order.index(("node.started", node_id)) < order.index(("node.succeeded", node_id))
    assert order.index(("node.succeeded", "route")) < order.index(("node.started", "left"))
    assert order.index(("node.succeeded", "route")) < order.index(("node.started", "right"))
    assert order.index(("node.started", "join")) > max(
        order.index(("node.succeeded", "left")), order.index(("node.succeeded", "right"))
    )

    # Reconnecting after a seq replays exactly the rest.
    middle = len(events) // 2
    again = asyncio.run(ws_read(ws_url.replace("after=0", f"after={middle}"), cluster.ws_origin, token))
    assert again[0]["type"] == "snapshot"
    assert again[0]["seq"] == len(events)
    assert again[1:] == events[middle:]


# --- kill -9 of the worker mid-run -----------------------------------------------------------


def slow_chain(url: str, slow_s: float) -> dict:
    """Two fast calls, a slow one, a fast one: each node's request is logged by the fake server."""
    steps = int(slow_s / 0.1)
    nodes = [
        start(),
        node("a", "http_request", {"url": f"{url}/json?node=a"}),
        node("b", "http_request", {"url": f"{url}/json?node=b"}),
        node("slow", "http_request", {"url": f"{url}/drip?n={steps}&every=0.1", "timeout_s": 60}),
        node("c", "http_request", {"url": f"{url}/json?node=c"}),
        end(status="{{ c.status }}"),
    ]
    return {"nodes": nodes, "edges": [edge(x["id"], y["id"]) for x, y in zip(nodes, nodes[1:], strict=False)]}


def requests_to(fake_http, path: str, node_id: str | None = None) -> int:
    return sum(
        1
        for request in fake_http.requests
        if request["path"] == path and (node_id is None or request["query"].get("node") == node_id)
    )


def kill_holder_and_replace(cluster, run_id):
    """kill -9 the worker holding the run; start a replacement so that the pool keeps two."""
    holder = lease_holder(cluster, run_id)
    holder.kill()
    cluster.worker_start()
    return holder


def test_a_run_whose_worker_is_killed_is_finished_by_another_without_rerunning_what_succeeded(
    cluster_settings, owner, fake_http
):
    cluster = cluster_settings
    started = run_start(cluster, owner, slow_chain(fake_http.url(""), slow_s=1.5))
    run_id = started["id"]
    task_running(run_id, "slow")
    wait_for(lambda: requests_to(fake_http, "/drip") == 1, timeout=5, what="the slow request")

    killed = kill_holder_and_replace(cluster, run_id)
    assert Run.objects.get(pk=run_id).status == "running"
    reap_until(run_id, "resumed")
    run = run_finished(run_id)

    assert run.status == "succeeded", run.error
    assert run.outputs == {"status": 200}
    assert run.dispatch_attempts == 2
    assert not killed.alive()
    # Each node that had succeeded ran once; only the interrupted one ran again.
    assert [requests_to(fake_http, "/json", node_id) for node_id in "abc"] == [1, 1, 1]
    assert requests_to(fake_http, "/drip") == 2
    tasks = {task.node_id: task for task in Task.objects.filter(run_id=run_id)}
    assert {node_id: (task.status, task.attempt) for node_id, task in tasks.items()} == {
        "start": ("succeeded", 1),
        "a": ("succeeded", 1),
        "b": ("succeeded", 1),
        "slow": ("succeeded", 2),  # the interrupted attempt counts
        "c": ("succeeded", 1),
        "end": ("succeeded", 1),
    }
    events = stored_events(run_id)
    assert [event["seq"] for event in events] == list(range(1, len(events) + 1))
    started_nodes = [event["node_id"] for event in events if event["type"] == "node.started"]
    assert started_nodes.count("a") == started_nodes.count("b") == 1
    assert started_nodes.count("slow") == 2
    assert [event["data"] for event in events if event["type"] == "run.started"] == [{}, {"resumed": True}]
    assert metered(run_id)


def test_a_run_whose_workers_keep_dying_ends_failed_with_a_reason(cluster_settings, owner, fake_http):
    cluster = cluster_settings
    started = run_start(cluster, owner, slow_chain(fake_http.url(""), slow_s=30))
    run_id = started["id"]
    task_running(run_id, "slow")
    kill_holder_and_replace(cluster, run_id)
    reap_until(run_id, "resumed")
    # Taken again by another worker (its second and last dispatch attempt), which dies too.
    wait_for(
        lambda: Run.objects.filter(pk=run_id, dispatch_attempts=2).exclude(lease_owner="").exists(),
        timeout=15,
        what="the run to be claimed again",
    )
    task_running(run_id, "slow")
    kill_holder_and_replace(cluster, run_id)
    reap_until(run_id, "failed")

    run = Run.objects.get(pk=run_id)
    assert run.status == "failed"
    assert run.error == "The run's worker was lost 2 times; it was not resumed again."
    assert run.finished_at is not None
    events = stored_events(run_id)
    assert events[-1]["type"] == "run.failed"
    assert events[-1]["data"] == {"error": run.error}
    assert [event["seq"] for event in events] == list(range(1, len(events) + 1))
    assert not Task.objects.filter(run_id=run_id, status__in=("pending", "running", "retrying")).exists()
    assert runs_reap()["failed"] == 0  # and it stays failed
    assert metered(run_id)


# --- cancel while a node is stuck --------------------------------------------------------------

STUCK = {
    "http": lambda silent: node("stuck", "http_request", {"url": silent.url("/never"), "timeout_s": 120}),
    "code": lambda silent: node(
        "stuck", "code", {"code": "def main():\n    while True:\n        pass\n", "timeout_s": 120, "cpu_s": 120}
    ),
}


@pytest.mark.parametrize("kind", sorted(STUCK))
def test_cancelling_a_run_stuck_in_a_node_ends_it_within_seconds(cluster_settings, owner, silent_server, kind):
    cluster = cluster_settings
    nodes = [start(), STUCK[kind](silent_server), end()]
    graph = {"nodes": nodes, "edges": [edge("start", "stuck"), edge("stuck", "end")]}
    started = run_start(cluster, owner, graph)
    task_running(started["id"], "stuck")
    time.sleep(0.3)  # well inside the call or the loop

    response = api(cluster, owner[1], "POST", f"/api/v1/runs/{started['id']}/cancel/", {})
    assert response.status_code == 202, response.text
    # The call would never end by itself: the run ends because the cancel stopped it.
    run = run_finished(started["id"], timeout=30)

    assert run.status == "cancelled"
    assert Task.objects.get(run_id=run.pk, node_id="stuck").status == "cancelled"
    assert stored_events(run.pk)[-1]["type"] == "run.cancelled"
    assert metered(run.pk)


# --- the worker model: waiting runs share a worker ---------------------------------------------


def test_runs_waiting_for_a_retry_do_not_hold_up_other_runs(cluster_settings, owner, fake_http):
    """Six runs each wait 1.5 s before a retry, all at once, on two worker processes."""
    cluster = cluster_settings
    graph = {
        "nodes": [
            start(),
            node(
                "flaky",
                "http_request",
                {"url": fake_http.url("/status?code=503")},
                retry={"max_attempts": 2, "backoff": "fixed", "initial_s": 1.5, "jitter": False},
                on_failure="continue",
                default_output={"status": 0},
            ),
            end(status="{{ flaky.status }}"),
        ],
        "edges": [edge("start", "flaky"), edge("flaky", "end")],
    }
    for worker in cluster.alive_workers():
        cluster.worker_wait_ready(worker)
    began = time.monotonic()

    # Started side by side: one after the other, a loaded machine may take longer than the
    # retry's wait to start all six.
    def start_one(_) -> str:
        try:
            return run_start(cluster, owner, graph)["id"]
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=6) as starters:
        run_ids = list(starters.map(start_one, range(6)))
    runs = [run_finished(run_id) for run_id in run_ids]
    took = time.monotonic() - began

    assert [run.status for run in runs] == ["succeeded"] * 6
    assert [run.outputs for run in runs] == [{"status": 0}] * 6
    assert all(metered(run.pk) for run in runs)
    assert requests_to(fake_http, "/status") == 12
    # All six were waiting at the same moment: on two processes, at least three shared one. (No
    # bound on the wall time: how long six starts take depends on the machine and its load.)
    assert max(run.started_at for run in runs) < min(run.finished_at for run in runs), f"took {took:.1f} s"
