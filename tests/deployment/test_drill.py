"""The failure drill: 200 runs through two servers while a worker is killed, another stopped, and Redis and
PostgreSQL are restarted.

Two daphne servers, three Celery workers and one beat run on a PostgreSQL cluster and a
redis-server of the test's own (the private_deployment fixture), so that restarting them does
not touch the services the rest of the suite shares. Four users start 200 runs, alternating
between the servers, at a steady pace; each run calls a counting fake service once (its effect,
carrying the run's id) and takes about half a second, so that runs are queued and running at
every fault. Once 30, 70, 110 and 150 runs have been started, the drill

- SIGKILLs the worker holding the most runs (a crashed host, an OOM kill);
- SIGTERMs the busiest of the others (a deploy, a scale-in);
- restarts Redis (its queue and pub/sub are lost: it keeps nothing);
- restarts PostgreSQL (every session is ended).

The clients do what a client behind a load balancer does: a start that fails (the service
behind the server is down) is sent again, to the other server; a websocket that drops
reconnects with ``?after=<last seq>``. Expected (issue 13): every run ends exactly once, no
stored effect is repeated, none is left pending or running 60 s after the last fault, and every
websocket follower gets all its run's events in order. Every expectation is checked and all
that failed are reported together; the time from each fault to the end of the last run it
touched is printed at the end of the test run.
"""

import asyncio
import json
import os
import signal
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

import httpx
import psycopg
import pytest
from celery import Celery
from websockets.asyncio.client import connect
from websockets.exceptions import WebSocketException

from tests.engine.conftest import chain, end, node, start
from tests.integration.conftest import Process
from workflows.execution.fanout import CATCH_UP_S

from .cluster import FINAL_EVENTS, Deployment, Server, events_read
from .figures import FIGURES

pytestmark = [pytest.mark.services, pytest.mark.slow]

RUNS = 200
USERS = 4
FOLLOW_EVERY = 10  # one run in ten is followed over a websocket: 20 followers
START_EVERY_S = 0.15  # the pace of the starts: 200 runs in about 30 s
SIGKILL_AT, SIGTERM_AT, REDIS_AT, POSTGRES_AT = 30, 70, 110, 150  # runs started when each fault comes
OUTAGE_S = 1.0  # how long Redis and PostgreSQL stay down
SETTLED_WITHIN_S = 60.0  # after the last fault, no run may be pending or running
START_RETRY_FOR_S = 30.0  # how long a client keeps sending a start that fails again
RUN_TASK = "workflows.run_execute"
SUPERVISE_EVERY_S = 1.0  # how often the supervisor looks for workers that exited
SIGTERM_EXIT_WAIT_S = 30.0  # how long the drill waits for the SIGTERMed worker to exit (its time is printed)
# How long a follower waits for an event still missing once every run has ended: the server sends
# a silent client the stored events it lacks after CATCH_UP_S.
LIVE_GRACE_S = CATCH_UP_S + 1.5
CONNECT_RETRIES = 10
FINAL_STATUSES = ("succeeded", "failed", "cancelled")
EFFECT = "/drip"


def graph(service_url: str) -> dict:
    """start → call (POST to the counting fake: 0.4 s, the run's id in the query) → greet → end."""
    effect = {"method": "POST", "url": f"{service_url}{EFFECT}?n=4&every=0.1", "query": {"run": "{{ sys.run_id }}"}}
    greet = node("greet", "template", {"template": "run {{ start.n }}: {{ call.status }}"})
    return chain(start(n="number"), node("call", "http_request", effect), greet, end(text="{{ greet.text }}"))


USERS_CREATE = """
import json
from django.contrib.auth import get_user_model
from knox.models import AuthToken
tokens = []
for n in range({users}):
    user = get_user_model().objects.create_user(username=f"drill{{n}}", email=f"drill{{n}}@example.com")
    tokens.append(AuthToken.objects.create(user=user)[1])
print(json.dumps(tokens))
"""


class Database:
    """The drill's database, read from the test process: a connection per query, as PostgreSQL restarts."""

    def __init__(self, url: str):
        self.url = url

    def rows(self, sql: str, *params) -> list[tuple]:
        with psycopg.connect(self.url, autocommit=True, connect_timeout=2) as connection:
            return connection.execute(sql, params).fetchall()

    async def rows_soon(self, sql: str, *params) -> list[tuple]:
        """The rows, asking again while the database is down."""
        while True:
            try:
                return await asyncio.to_thread(self.rows, sql, *params)
            except psycopg.OperationalError:
                await asyncio.sleep(0.2)


@dataclass
class Fault:
    name: str
    at: float  # wall clock when it came
    over: float = 0.0  # wall clock when the service was back (restarts)
    touched: set[str] = field(default_factory=set)  # runs it touched (worker faults: known at the fault)
    note: str = ""
    worker: Process | None = None  # the worker signalled


@dataclass
class Follower:
    """A websocket client following one run: every event it was sent, in the order it was sent."""

    run_id: str
    server: Server
    events: list[dict] = field(default_factory=list)
    drops: int = 0  # connections that ended before the run's end, reconnected with ?after=
    gaps: int = 0  # events that came before one that was missing
    duplicates: int = 0
    resyncs: int = 0  # reconnections to fetch an event that the server never sent
    done: bool = False
    gave_up: str = ""  # why it stopped trying to connect

    @property
    def last_seq(self) -> int:
        return self.events[-1]["seq"] if self.events else 0


class Drill:
    def __init__(self, deployment: Deployment, tokens: list[str], workflow_ids: list[str], database: Database):
        self.deployment = deployment
        self.servers = deployment.servers
        self.tokens = tokens
        self.workflow_ids = workflow_ids
        self.database = database
        self.started: dict[int, str] = {}  # n → run id, from the 202s
        self.start_failures: list[str] = []  # starts sent again: what the server answered
        self.not_json: list[str] = []  # refused starts whose answer was not the API's JSON error
        self.faults: list[Fault] = []
        self.followers: list[Follower] = []
        self.sigterm_exit_s: float | None = None  # how long the SIGTERMed worker took to exit (None: not yet)
        self.exiting: asyncio.Task | None = None
        self.settled = asyncio.Event()
        self.stuck: list[tuple] = []  # runs pending or running SETTLED_WITHIN_S after the last fault
        self.took = 0.0
        self.restarted: list[str] = []  # workers the supervisor started again after they exited
        self._replaced: set[int] = set()

    # --- the drill ----------------------------------------------------------------------------------
    async def run(self) -> None:
        began = time.monotonic()
        following: list[asyncio.Task] = []
        supervisor = asyncio.create_task(self.supervise())
        async with httpx.AsyncClient(timeout=30) as client:
            faults = asyncio.create_task(self.inflict())
            starts = []
            for n in range(RUNS):
                await asyncio.sleep(max(0.0, began + n * START_EVERY_S - time.monotonic()))
                starts.append(asyncio.create_task(self.run_start(client, n, following)))
            await asyncio.gather(*starts)
            await faults
        await self.settle()
        await self.exiting
        supervisor.cancel()
        self.took = time.monotonic() - began
        done, pending = await asyncio.wait(following, timeout=LIVE_GRACE_S + 30)
        for task in pending:
            task.cancel()
        for task in done:
            task.result()

    async def supervise(self) -> None:
        """What the process manager of every deployment does (compose's ``restart: unless-stopped``,
        systemd's ``Restart=``): a worker that exited, for whatever reason, is started again."""
        while True:
            await asyncio.sleep(SUPERVISE_EVERY_S)
            for worker in list(self.deployment.workers):
                if id(worker) not in self._replaced and not worker.alive():
                    self._replaced.add(id(worker))
                    self.restarted.append(worker.name)
                    await asyncio.to_thread(self.deployment.worker_start)

    async def run_start(self, client: httpx.AsyncClient, n: int, following: list) -> None:
        """Start run ``n`` for its user, on the server its number gives, on the other one while that fails."""
        token = self.tokens[n % USERS]
        server = self.servers[n % 2]
        deadline = time.monotonic() + START_RETRY_FOR_S
        while True:
            url = f"{server.url}/api/v1/workflows/{self.workflow_ids[n % USERS]}/runs/"
            try:
                response = await client.post(
                    url, json={"inputs": {"n": n}}, headers={"Authorization": f"Token {token}"}
                )
                if response.status_code == 202:
                    break
                failure = f"{response.status_code} {response.text[:200]}"
                if not response.headers.get("content-type", "").startswith("application/json"):
                    self.not_json.append(f"run {n} on {server.process.name}: {failure}")
            except httpx.TransportError as error:
                failure = repr(error)
            self.start_failures.append(f"run {n} on {server.process.name}: {failure}")
            assert time.monotonic() < deadline, f"run {n} could not be started: {self.start_failures[-5:]}"
            server = self.servers[(self.servers.index(server) + 1) % 2]
            await asyncio.sleep(0.5)
        self.started[n] = response.json()["id"]
        if n % FOLLOW_EVERY == 0:
            follower = Follower(run_id=self.started[n], server=self.servers[(n // FOLLOW_EVERY) % 2])
            self.followers.append(follower)
            following.append(asyncio.create_task(self.follow(follower, token)))

    async def inflict(self) -> None:
        await self.started_reach(SIGKILL_AT)
        await self.worker_fault("SIGKILL a worker", signal.SIGKILL, holding=2)
        await self.started_reach(SIGTERM_AT)
        terminated = await self.worker_fault("SIGTERM a worker", signal.SIGTERM, holding=1)
        self.exiting = asyncio.create_task(self.exit_timed(terminated))
        await self.started_reach(REDIS_AT)
        await self.restart("restart Redis", self.deployment.redis)
        await self.started_reach(POSTGRES_AT)
        await self.restart("restart PostgreSQL", self.deployment.postgres)

    async def started_reach(self, count: int) -> None:
        while len(self.started) < count:
            await asyncio.sleep(0.02)

    # --- the faults ---------------------------------------------------------------------------------
    async def worker_fault(self, name: str, signum: int, *, holding: int) -> Process:
        """Signal the live worker holding the most running runs (once one holds ``holding``); it touched
        the runs it held and the messages it had taken (running, reserved or waiting for their countdown)."""
        signalled = {fault.worker for fault in self.faults}
        candidates = {worker.pid: worker for worker in self.deployment.workers if worker not in signalled}
        deadline = time.monotonic() + 10
        while True:
            held = await self.runs_held()
            busiest = Counter({pid: len(runs) for pid, runs in held.items() if pid in candidates}).most_common(1)
            if busiest and busiest[0][1] >= holding:
                break
            assert time.monotonic() < deadline, f"{name}: no worker held {holding} running runs"
            await asyncio.sleep(0.05)
        worker = candidates[busiest[0][0]]
        taken = await asyncio.to_thread(self.messages_taken, worker)
        held = (await self.runs_held()).get(worker.pid, set())
        fault = Fault(name, at=time.time(), touched=held | (taken or set()), worker=worker)
        os.kill(worker.pid, signum)
        more = "its messages unknown (no answer)" if taken is None else f"{len(taken - held)} more messages taken"
        fault.note = f"{worker.name}: {len(held)} running, {more}"
        self.faults.append(fault)
        return worker

    async def runs_held(self) -> dict[int, set[str]]:
        """Running runs of the drill by the pid of the worker holding their lease."""
        rows = await self.database.rows_soon(
            "SELECT id::text, lease_owner FROM runs WHERE status = 'running' AND lease_owner <> ''"
        )
        held: dict[int, set[str]] = {}
        for run_id, owner in rows:
            held.setdefault(int(owner.split(":")[1]), set()).add(run_id)
        return held

    def messages_taken(self, worker: Process) -> set[str] | None:
        """The runs whose messages ``worker`` holds, as Celery's remote control tells (None: no answer)."""
        control = Celery("drill", broker=self.deployment.redis.url).control
        inspect = control.inspect(destination=[self.deployment.node_name(worker)], timeout=1, limit=1)
        found = set()
        for ask in (inspect.active, inspect.reserved, inspect.scheduled):
            answer = ask()
            if not answer:
                return None
            for tasks in answer.values():
                requests = (task.get("request", task) for task in tasks)
                # Runs only: the worker also executes beat's housekeeping (the reaper), which has no argument.
                found.update(str(request["args"][0]) for request in requests if request.get("name") == RUN_TASK)
        return found

    async def exit_timed(self, worker: Process) -> None:
        began = time.monotonic()
        try:
            await asyncio.to_thread(worker.popen.wait, SIGTERM_EXIT_WAIT_S)
        except subprocess.TimeoutExpired:
            return
        self.sigterm_exit_s = time.monotonic() - began

    async def restart(self, name: str, service) -> None:
        fault = Fault(name, at=time.time())
        self.faults.append(fault)

        def restart() -> None:
            service.stop()
            time.sleep(OUTAGE_S)
            service.start()

        await asyncio.to_thread(restart)
        fault.over = time.time()
        fault.note = f"down {fault.over - fault.at:.1f} s"

    # --- the end --------------------------------------------------------------------------------
    async def settle(self) -> None:
        """Wait until every run has ended, SETTLED_WITHIN_S after the last fault at most."""
        deadline = self.faults[-1].at + SETTLED_WITHIN_S
        while True:
            self.stuck = await self.database.rows_soon(
                "SELECT id::text, status, dispatch_attempts, lease_owner, lease_expires_at, created_at, updated_at "
                "FROM runs WHERE status IN ('pending', 'running') ORDER BY created_at"
            )
            if not self.stuck or time.time() > deadline:
                break
            await asyncio.sleep(0.2)
        self.settled.set()

    async def follow(self, follower: Follower, token: str) -> None:
        """Follow the run until its final event, reconnecting with ``?after=`` as a console does."""
        retries = 0
        while True:
            url = follower.server.ws_url(f"/ws/runs/{follower.run_id}/?after={follower.last_seq}")
            headers = {"Authorization": f"Token {token}"}
            try:
                async with connect(url, origin=follower.server.url, additional_headers=headers, open_timeout=10) as ws:
                    outcome = await events_read(ws, follower, settled=self.settled, grace=LIVE_GRACE_S)
            except (OSError, TimeoutError, WebSocketException) as error:
                retries += 1
                if retries > CONNECT_RETRIES:
                    follower.gave_up = repr(error)
                    return
                follower.drops += 1
                await asyncio.sleep(0.2)
                continue
            if outcome == "final":
                follower.done = True
                return
            if outcome == "gap":
                follower.gaps += 1
            if outcome == "stalled":
                follower.resyncs += 1
                if self.settled.is_set() and follower.resyncs > 1:
                    return


# --- what the drill left ------------------------------------------------------------------------


@dataclass
class RunRow:
    id: str
    status: str
    dispatch_attempts: int
    last_seq: int
    created_at: datetime
    finished_at: datetime | None
    error: str


def runs_stored(database: Database) -> dict[str, RunRow]:
    rows = database.rows(
        "SELECT id::text, status, dispatch_attempts, last_seq, created_at, finished_at, error FROM runs"
    )
    return {row[0]: RunRow(*row) for row in rows}


def events_stored(database: Database) -> dict[str, list[tuple[int, str, str]]]:
    events: dict[str, list[tuple[int, str, str]]] = {}
    for run_id, seq, kind, node_id in database.rows(
        "SELECT run_id::text, seq, type, node_id FROM run_events ORDER BY run_id, seq"
    ):
        events.setdefault(run_id, []).append((seq, kind, node_id))
    return events


def touched_by(fault: Fault, runs: dict[str, RunRow]) -> set[str]:
    """A worker's runs as seen at the fault; for a restart, every run in flight while the service was down."""
    if not fault.over:
        return fault.touched
    return {
        run_id
        for run_id, run in runs.items()
        if run.created_at.timestamp() < fault.over
        and (run.finished_at is None or run.finished_at.timestamp() > fault.at)
    }


def fault_figure(fault: Fault, runs: dict[str, RunRow]) -> str:
    touched = touched_by(fault, runs)
    unfinished = [run_id for run_id in touched if runs[run_id].finished_at is None]
    if unfinished:
        return f"{fault.name} ({fault.note}): {len(touched)} runs touched, {len(unfinished)} never ended"
    if not touched:
        return f"{fault.name} ({fault.note}): no run touched"
    last = max(runs[run_id].finished_at.timestamp() for run_id in touched)
    return f"{fault.name} ({fault.note}): {len(touched)} runs touched, the last ended {last - fault.at:.1f} s after"


def effects_repeated(runs: dict[str, RunRow], events: dict, calls: Counter) -> list[str]:
    """Runs that called the service again after its call had been stored as done.

    A claim that began before the call's success was stored may have made the call (a call in
    flight when its worker died is made again, at least once is the contract); none after it.
    """
    repeated = []
    for run_id, run in runs.items():
        kinds = [(kind, node_id) for _, kind, node_id in events.get(run_id, [])]
        if ("node.succeeded", "call") in kinds:
            stored_at = kinds.index(("node.succeeded", "call"))
            claims_before = kinds[:stored_at].count(("run.started", ""))
        else:
            claims_before = run.dispatch_attempts
        if calls[run_id] > max(claims_before, 1):
            repeated.append(f"{run_id}: {calls[run_id]} calls, {claims_before} claims before it was stored: {kinds}")
    return repeated


def ends_not_once(drill: Drill, runs: dict[str, RunRow], events: dict) -> list[str]:
    problems = []
    started = set(drill.started.values())
    if len(started) != RUNS or not started <= set(runs):
        problems.append(f"{len(started)} distinct runs answered 202, {len(started - set(runs))} of them not stored")
    if len(runs) - len(started) > len(drill.start_failures):
        problems.append(f"{len(runs)} runs stored for {RUNS} starts and {len(drill.start_failures)} sent again")
    for run_id, run in runs.items():
        seqs = [seq for seq, _, _ in events.get(run_id, [])]
        finals = [kind for _, kind, _ in events.get(run_id, []) if kind in FINAL_EVENTS]
        if run.status not in FINAL_STATUSES or len(finals) != 1 or seqs != list(range(1, run.last_seq + 1)):
            problems.append(f"{run_id}: {run.status}, final events {finals}, seqs {seqs[:3]}…{seqs[-3:]}")
        elif events[run_id][-1][1] != f"run.{run.status}":
            problems.append(f"{run_id}: {run.status} but its last event is {events[run_id][-1]}")
    return problems


def followers_wrong(drill: Drill, events: dict) -> list[str]:
    problems = []
    for follower in drill.followers:
        received = [(event["seq"], event["type"], event["node"] or "") for event in follower.events]
        if received != events.get(follower.run_id) or follower.gaps or follower.duplicates or follower.resyncs:
            problems.append(
                f"{follower.run_id} on {follower.server.process.name}: got {len(received)} of "
                f"{len(events.get(follower.run_id, []))} events, {follower.gaps} gaps, {follower.duplicates} "
                f"duplicates, {follower.resyncs} never sent, ended: {follower.done} {follower.gave_up}"
            )
    return problems


def test_runs_end_once_through_a_worker_killed_and_one_stopped_and_redis_and_postgres_restarted(
    private_deployment, fake_http, record_property
):
    deployment = private_deployment
    database = Database(deployment.env["DATABASE_URL"])
    tokens = json.loads(deployment.manage("shell", "-c", USERS_CREATE.format(users=USERS)).strip().splitlines()[-1])
    workflow_ids = []
    for n, token in enumerate(tokens):
        server = deployment.servers[n % 2]
        body = {"name": f"Drill {n}", "graph": graph(fake_http.url(""))}
        response = httpx.post(
            f"{server.url}/api/v1/workflows/", json=body, headers={"Authorization": f"Token {token}"}, timeout=10
        )
        assert response.status_code == 201, response.text
        workflow_ids.append(response.json()["id"])

    drill = Drill(deployment, tokens, workflow_ids, database)
    asyncio.run(drill.run())

    runs = runs_stored(database)
    events = events_stored(database)
    calls = Counter(request["query"].get("run") for request in fake_http.requests if request["path"] == EFFECT)
    resumed = sum(run.dispatch_attempts > 1 for run in runs.values())
    statuses = Counter(run.status for run in runs.values())
    record_property(
        FIGURES,
        f"{RUNS} runs through 4 faults in {drill.took:.1f} s: "
        + "; ".join(fault_figure(fault, runs) for fault in drill.faults)
        + "; the SIGTERMed worker "
        + (f"exited after {drill.sigterm_exit_s:.1f} s" if drill.sigterm_exit_s is not None else "had not exited")
        + f"; runs {dict(statuses)}, {resumed} resumed, {len(drill.start_failures)} starts sent again"
        + f"; websockets: {sum(follower.drops for follower in drill.followers)} reconnected"
        + f"; workers started again after they exited: {drill.restarted or 'none'}",
    )

    assert [fault.name for fault in drill.faults] == [
        "SIGKILL a worker",
        "SIGTERM a worker",
        "restart Redis",
        "restart PostgreSQL",
    ]
    failed = {
        "every run ends exactly once": ends_not_once(drill, runs, events),
        "no stored effect is repeated": effects_repeated(runs, events, calls),
        f"none is pending or running {SETTLED_WITHIN_S:.0f} s after the last fault": [str(row) for row in drill.stuck],
        "every websocket follower gets all its run's events in order": followers_wrong(drill, events),
        "a start refused during a fault answers the API's JSON error": drill.not_json,
    }
    report = "\n".join(
        f"{expectation}: {len(problems)} violations\n  " + "\n  ".join(problems[:10])
        for expectation, problems in failed.items()
        if problems
    )
    assert not report, f"{report}\nstarts sent again: {drill.start_failures[:10]}"
