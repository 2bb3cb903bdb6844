"""The deployment that grows: two servers, three workers and one beat, with a worker and a server killed.

Everything goes through what a deployment runs (tests/deployment/cluster.py): workflows are
created and runs started over the API of both daphne servers with a user's token, executed by
``celery -A config worker`` processes, recovered by the reaper that ``celery beat`` schedules,
and followed over websockets the way the console follows them. The test process is the
outside world: the API and websocket clients, and the HTTP service the workflow calls.

First it times two backlogs, one drained by one worker and one by three (runs/s, printed at
the end of the test run, not asserted: on two cores shared with PostgreSQL, Redis, the servers
and the rest of the suite, three workers were 0.9 to 1.7 times as fast as one). Then it
starts 100 runs, half on each server, and kills (SIGKILL) the worker holding the most of them
and, later, one of the servers. Its clients do what a client behind a load balancer does: a
start whose answer was lost is sent again to the other server, and a websocket that drops
reconnects there with ``?after=<last seq>``.
"""

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx
import pytest
from django.db.models import Max, Min
from django.utils import timezone
from knox.models import AuthToken
from websockets.asyncio.client import connect
from websockets.exceptions import WebSocketException

from tests.engine.conftest import chain, end, node, start
from tests.factories import UserFactory
from tests.integration.conftest import wait_for
from tests.threads import in_thread
from workflows.execution.fanout import CATCH_UP_S
from workflows.models import Run, RunEvent, RunStatus, Task, TaskStatus

from .cluster import FINAL_EVENTS, Deployment, Server, events_read
from .figures import FIGURES

pytestmark = [pytest.mark.services, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

THROUGHPUT_RUNS = 80
RUNS = 100
KILL_WORKER_AT = 30  # the worker is killed when this many runs have been started, the server later
KILL_SERVER_AT = 60
STARTS_IN_FLIGHT = 6
SETTLE_TIMEOUT_S = 45
# How long a websocket client waits for an event still missing once every run has ended: the
# server sends a silent client the stored events it lacks after CATCH_UP_S (an event committed
# by a worker killed before it could stream it is never streamed).
LIVE_GRACE_S = CATCH_UP_S + 1.5
# A busy server may let a websocket handshake time out (daphne gives a consumer 5 s to accept it).
CONNECT_RETRIES = 10
FINAL_STATUSES = (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED)
NODES = ("start", "call", "greet", "end")


def fast_graph(service_url: str) -> dict:
    """start → call (an outside service that answers at once) → greet → end. The call sends each run to a
    worker: a run of computing nodes only would be executed by the server that started it."""
    call = node("call", "http_request", {"url": f"{service_url}/drip?n=1&every=0"})
    greet = node("greet", "template", {"template": "run {{ start.n }}: {{ call.status }}"})
    return chain(start(n="number"), call, greet, end(text="{{ greet.text }}"))


def slow_graph(service_url: str) -> dict:
    """start → call (half a second on an outside service, which counts its calls per run) → greet → end."""
    call_config = {"url": f"{service_url}/drip?n=5&every=0.1", "query": {"run": "{{ sys.run_id }}"}}
    call = node("call", "http_request", call_config)
    greet = node("greet", "template", {"template": "run {{ start.n }}: {{ call.status }}"})
    return chain(start(n="number"), call, greet, end(text="{{ greet.text }}"))


class Api:
    def __init__(self, token: str):
        self.token = token
        self.headers = {"Authorization": f"Token {token}"}

    def workflow_create(self, server: Server, name: str, graph: dict) -> str:
        body = {"name": name, "graph": graph}
        response = httpx.post(f"{server.url}/api/v1/workflows/", json=body, headers=self.headers, timeout=10)
        assert response.status_code == 201, response.text
        return response.json()["id"]

    def ws_url(self, server: Server, run_id: str, after: int) -> str:
        return server.ws_url(f"/ws/runs/{run_id}/?after={after}")


async def runs_start(api: Api, servers: list[Server], workflow_id: str, count: int) -> list[str]:
    """Start ``count`` runs, alternating between the servers; their ids."""
    gate = asyncio.Semaphore(STARTS_IN_FLIGHT)
    async with httpx.AsyncClient(headers=api.headers, timeout=30) as client:

        async def one(n: int) -> str:
            async with gate:
                url = f"{servers[n % len(servers)].url}/api/v1/workflows/{workflow_id}/runs/"
                response = await client.post(url, json={"inputs": {"n": n}})
            assert response.status_code == 202, response.text
            return response.json()["id"]

        return await asyncio.gather(*(one(n) for n in range(count)))


def cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    with open("/proc/stat") as stat:
        fields = [int(value) for value in stat.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return sum(fields) - idle, sum(fields)


@dataclass
class Drain:
    rate: float  # runs/s
    cpu: float  # share of the machine's CPU time that was busy meanwhile (all processes)

    def __str__(self) -> str:
        return f"{self.rate:.1f} runs/s (CPU {self.cpu:.0%} busy)"


def drain(deployment: Deployment, workers, run_ids: list[str]) -> Drain:
    """Let ``workers`` take the queued runs; runs/s from then to the last one's end."""
    runs = Run.objects.filter(pk__in=run_ids)
    busy, total = cpu_times()
    began = timezone.now()
    deployment.consume(workers)
    wait_for(lambda: not runs.exclude(status__in=FINAL_STATUSES).exists(), timeout=30, what="the backlog to be drained")
    busy_after, total_after = cpu_times()
    assert set(runs.values_list("status", flat=True)) == {RunStatus.SUCCEEDED}
    first, last = runs.aggregate(first=Min("started_at"), last=Max("finished_at")).values()
    assert first >= began  # the backlog waited for these workers (no server executed it)
    return Drain(len(run_ids) / (last - began).total_seconds(), (busy_after - busy) / (total_after - total))


# --- 100 runs through a worker's and a server's death ------------------------------------------


@dataclass
class Follower:
    """A websocket client following one run: every event it was sent, and how it got them."""

    run_id: str
    server: Server
    events: list[dict] = field(default_factory=list)
    failovers: int = 0  # reconnections to the other server after its own died
    resyncs: int = 0  # reconnections to fetch an event the live stream did not bring
    retries: int = 0  # connections the server (still up) dropped or timed out, tried again
    duplicates: int = 0

    @property
    def last_seq(self) -> int:
        return self.events[-1]["seq"] if self.events else 0


class Chaos:
    def __init__(self, deployment: Deployment, api: Api, workflow_id: str):
        self.deployment = deployment
        self.api = api
        self.workflow_id = workflow_id
        self.survivor, self.doomed = deployment.servers
        self.down: set[int] = set()  # ports of the servers killed
        self.started: dict[int, str] = {}  # n → run id, from the 202s
        self.resent: list[int] = []  # starts whose answer died with the server, sent again
        self.followers: list[Follower] = []
        self.killed_worker = None
        self.settled = asyncio.Event()
        self.took = 0.0
        self.unfinished: list[Follower] = []  # clients still without their run's final event at the end

    async def run(self) -> None:
        began = time.monotonic()
        gate = asyncio.Semaphore(STARTS_IN_FLIGHT)
        following: dict[asyncio.Task, Follower] = {}
        async with httpx.AsyncClient(headers=self.api.headers, timeout=30) as client:

            async def one(n: int) -> None:
                async with gate:
                    if n == KILL_WORKER_AT:
                        await self.worker_kill()
                    if n == KILL_SERVER_AT:
                        self.server_kill()
                    follower = await self.run_start(client, n)
                following[asyncio.create_task(self.follow(follower))] = follower

            await asyncio.gather(*(one(n) for n in range(RUNS)))
        await self.settle()
        self.took = time.monotonic() - began
        done, pending = await asyncio.wait(following, timeout=30)
        for task in pending:
            task.cancel()
        self.unfinished = [following[task] for task in pending]
        for task in done:
            task.result()

    async def run_start(self, client: httpx.AsyncClient, n: int) -> Follower:
        server = self.doomed if n % 2 and self.doomed.port not in self.down else self.survivor
        path = f"/api/v1/workflows/{self.workflow_id}/runs/"
        try:
            response = await client.post(f"{server.url}{path}", json={"inputs": {"n": n}})
        except httpx.TransportError:
            assert server.port in self.down, f"{server.process.name} failed a start while up"
            self.resent.append(n)
            server = self.survivor
            response = await client.post(f"{server.url}{path}", json={"inputs": {"n": n}})
        assert response.status_code == 202, response.text
        self.started[n] = response.json()["id"]
        follower = Follower(run_id=self.started[n], server=server)
        self.followers.append(follower)
        return follower

    async def worker_kill(self) -> None:
        """kill -9 the worker holding the most of this workflow's running runs (once it holds two)."""

        def busiest():
            owners = Run.objects.filter(workflow_id=self.workflow_id, status=RunStatus.RUNNING).exclude(lease_owner="")
            pids = Counter(int(owner.split(":")[1]) for owner in owners.values_list("lease_owner", flat=True))
            return pids.most_common(1)[0] if pids and pids.most_common(1)[0][1] >= 2 else None

        deadline = time.monotonic() + 10
        while not (found := await in_thread(busiest)):
            assert time.monotonic() < deadline, "no worker held two runs at once"
            await asyncio.sleep(0.05)
        self.killed_worker = next(worker for worker in self.deployment.workers if worker.pid == found[0])
        self.killed_worker.kill()

    def server_kill(self) -> None:
        self.down.add(self.doomed.port)
        self.doomed.process.kill()

    async def settle(self) -> None:
        """Wait until every run of the workflow (started or not answered) has ended."""

        def unfinished() -> int:
            return Run.objects.filter(workflow_id=self.workflow_id).exclude(status__in=FINAL_STATUSES).count()

        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        while await in_thread(unfinished):
            if time.monotonic() > deadline:
                stuck = await in_thread(lambda: stuck_runs(self.workflow_id))
                raise AssertionError(f"runs not finished {SETTLE_TIMEOUT_S} s after the last start: {stuck}")
            await asyncio.sleep(0.1)
        self.settled.set()

    async def follow(self, follower: Follower) -> None:
        """Follow the run until its final event, reconnecting with ``?after=`` as a console does."""
        while True:
            url = self.api.ws_url(follower.server, follower.run_id, follower.last_seq)
            try:
                async with connect(
                    url, origin=follower.server.url, additional_headers=self.api.headers, open_timeout=10
                ) as ws:
                    outcome = await events_read(ws, follower, settled=self.settled, grace=LIVE_GRACE_S)
            except (OSError, TimeoutError, WebSocketException):
                if follower.server.port in self.down:
                    follower.server = self.survivor
                    follower.failovers += 1
                    continue
                follower.retries += 1
                if follower.retries > CONNECT_RETRIES:
                    raise
                await asyncio.sleep(0.2)
                continue
            if outcome == "final":
                return
            follower.resyncs += 1


def stuck_runs(workflow_id) -> list[dict]:
    fields = ("id", "status", "dispatch_attempts", "lease_owner", "lease_expires_at", "last_seq", "created_at")
    return list(Run.objects.filter(workflow_id=workflow_id).exclude(status__in=FINAL_STATUSES).values(*fields))


def stored_events(workflow_id) -> dict[str, list[dict]]:
    events: dict[str, list[dict]] = {}
    for event in (
        RunEvent.objects.filter(run__workflow_id=workflow_id)
        .order_by("run_id", "seq")
        .values("run_id", "seq", "type", "node_id")
    ):
        events.setdefault(str(event["run_id"]), []).append(event)
    return events


def test_two_servers_and_three_workers_finish_every_run_once_through_a_worker_and_a_server_killed(
    deployment, fake_http, record_property
):
    servers = deployment.servers
    workers = deployment.workers
    _, token = AuthToken.objects.create(user=UserFactory())
    api = Api(token)
    fast_id = api.workflow_create(servers[0], "Throughput", fast_graph(fake_http.url("")))
    workflow_id = api.workflow_create(servers[1], "Through failures", slow_graph(fake_http.url("")))

    # --- Throughput: the same backlog drained by one worker, then by three. ---------------------
    backlog = asyncio.run(runs_start(api, servers, fast_id, THROUGHPUT_RUNS))
    one_worker = drain(deployment, workers[:1], backlog)
    deployment.consume(workers[:1], on=False)
    backlog = asyncio.run(runs_start(api, servers, fast_id, THROUGHPUT_RUNS))
    three_workers = drain(deployment, workers, backlog)

    # --- 100 runs while a worker and a server die. ---------------------------------------------
    chaos = Chaos(deployment, api, workflow_id)
    asyncio.run(chaos.run())
    runs = {str(run.pk): run for run in Run.objects.filter(workflow_id=workflow_id)}
    resumed = {run_id for run_id, run in runs.items() if run.dispatch_attempts > 1}

    record_property(
        FIGURES,
        f"1 worker {one_worker}, 3 workers {three_workers} (x{three_workers.rate / one_worker.rate:.2f}); "
        f"{RUNS} runs through a worker and a server killed in {chaos.took:.1f} s, {len(resumed)} resumed, "
        f"websockets: {sum(f.failovers for f in chaos.followers)} moved to the other server, "
        f"{sum(f.retries for f in chaos.followers)} handshakes retried, "
        f"{sum(f.resyncs for f in chaos.followers)} refetched a missed event",
    )
    assert not chaos.killed_worker.alive()
    assert not chaos.doomed.process.alive()
    assert deployment.beat.alive()
    assert chaos.survivor.process.alive()

    # Every run started once per 202 and ended once, succeeded; a start whose answer was lost
    # may have made one more run (it was sent again): that one ended too.
    started = set(chaos.started.values())
    assert len(started) == RUNS
    assert started <= set(runs)
    assert len(runs) - RUNS <= len(chaos.resent)
    assert {run_id: run.status for run_id, run in runs.items()} == dict.fromkeys(runs, RunStatus.SUCCEEDED)
    assert all(runs[run_id].outputs == {"text": f"run {n}: 200"} for n, run_id in chaos.started.items())
    events = stored_events(workflow_id)
    for run_id, run in runs.items():
        kinds = [event["type"] for event in events[run_id]]
        assert [event["seq"] for event in events[run_id]] == list(range(1, run.last_seq + 1))
        assert [kind for kind in kinds if kind in FINAL_EVENTS] == ["run.succeeded"]
        assert kinds[-1] == "run.succeeded"
        succeeded = Counter(event["node_id"] for event in events[run_id] if event["type"] == "node.succeeded")
        assert succeeded == Counter(NODES), (run_id, succeeded)
    assert set(Task.objects.filter(run__workflow_id=workflow_id).values_list("status", flat=True)) == {
        TaskStatus.SUCCEEDED
    }

    # The outside service was called once per run; again only by a resumed run whose call had
    # not been recorded as done when its worker died.
    calls = Counter(request["query"].get("run") for request in fake_http.requests if request["path"] == "/drip")
    assert resumed, "the killed worker held no run that another one had to resume"
    for run_id in runs:
        started_nodes = Counter(event["node_id"] for event in events[run_id] if event["type"] == "node.started")
        if run_id not in resumed:
            assert calls[run_id] == 1, (run_id, calls[run_id])
            assert started_nodes == Counter(NODES), (run_id, started_nodes)
            continue
        # The killed worker's last events may not have been written (they are committed in
        # batches): the resume is the last run.started, perhaps the only one. A node that had
        # succeeded before it was not started again.
        kinds = [(event["type"], event["node_id"]) for event in events[run_id]]
        resumed_at = max(index for index, kind in enumerate(kinds) if kind == ("run.started", ""))
        done_before = {node_id for node_id in NODES if kinds.index(("node.succeeded", node_id)) < resumed_at}
        assert not done_before & {node_id for kind, node_id in kinds[resumed_at:] if kind == "node.started"}, kinds
        assert calls[run_id] in ({1} if "call" in done_before else {1, 2}), (run_id, calls[run_id], kinds)

    # Every websocket client saw every event of its run, once and in order (those on the killed
    # server by reconnecting to the other), without asking again for any: the server fills a gap
    # in seq, and a silence, from the stored events.
    assert not chaos.unfinished, f"clients still waiting for their run's end: {chaos.unfinished}"
    assert sum(follower.failovers for follower in chaos.followers) > 0, "no client was on the killed server"
    for follower in chaos.followers:
        received = [(event["seq"], event["type"], event["node"] or "") for event in follower.events]
        assert received == [(event["seq"], event["type"], event["node_id"]) for event in events[follower.run_id]]
        assert follower.duplicates == 0
        assert follower.resyncs == 0, f"run {follower.run_id}: an event never reached its client"
