"""A deployment on loopback: daphne servers, Celery workers and one beat, started as the Procfile starts them.

Every process gets the same environment (as in production: platform/env.example), pointing at
the test's PostgreSQL database (the one pytest-django created for this test process) and Redis,
with a Celery queue of its own so that parallel test processes sharing one Redis never take
each other's runs. Workers start on a parked queue and are told over Celery's remote control
when to consume the real one, so that a test can queue a backlog first and time its draining.

A test that restarts PostgreSQL or Redis must not do it to the ones the rest of the suite shares:
it gets a cluster and a redis-server of its own (PrivatePostgres, PrivateRedis), run as this user,
or as ``nobody`` under root since PostgreSQL refuses to run as root.
"""

import asyncio
import glob
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import redis
from django.conf import settings

from config.celery import app as celery_app
from tests.integration.conftest import BASE_DIR, Process, celery_worker_command, daphne_start
from tests.integration.conftest import _database_url as test_database_url

#: Engine tunables for every process: a killed worker's runs are resumed within seconds. The
#: lease outlasts how long a live worker may be starved on two loaded cores (3 s was not: a live
#: worker's run was taken over and its in-flight call made a third time).
ENGINE = {
    "LEASE_TTL_S": 8.0,
    "HEARTBEAT_S": 0.5,
    # The beat's reaper (settings.CELERY_BEAT_SCHEDULE) runs this often.
    "REAPER_INTERVAL_S": 1.0,
    "REDISPATCH_GRACE_S": 5.0,
    # Longer than a backlog waits in the parked queue, so that the reaper does not re-send it.
    "PENDING_REDISPATCH_S": 10.0,
}
WORKER_CONCURRENCY = 8
READY_TIMEOUT_S = 30


@dataclass
class Server:
    process: Process
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ws_url(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}{path}"


class Deployment:
    """The processes of a deployment; ``database_url`` and ``redis_url`` default to the test's (shared) services.

    Workers consume a parked queue until ``consume`` is called, unless ``parked`` is False.
    """

    def __init__(self, *, logs: Path, database_url: str = "", redis_url: str = "", parked: bool = True):
        self.logs = logs
        self.queue = f"weft-deploy-{os.environ.get('PYTEST_XDIST_WORKER', 'main')}-{uuid.uuid4().hex[:8]}"
        self.parked = f"{self.queue}-parked" if parked else self.queue
        inherited = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith(("PYTEST_", "WEFT_ENGINE_", "DATABASE_", "REDIS_", "DJANGO_"))
        }
        self.env = {
            **inherited,
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "WEFT_SECRET_KEY": settings.SECRET_KEY,
            "WEFT_FIELD_ENCRYPTION_KEY": settings.FIELD_ENCRYPTION_KEY,
            "DEBUG": "0",
            "SECURE_SSL_REDIRECT": "0",  # plain HTTP on loopback, no proxy in front
            "DATABASE_URL": database_url or test_database_url(),
            "REDIS_URL": redis_url or settings.REDIS_URL,
            "WEFT_CELERY_QUEUE": self.queue,
            "WEFT_OUTBOUND_ALLOW": "127.0.0.1/32",
            # Day counters live in Redis, which other test runs share: never the limit here.
            "WEFT_QUOTA_RUNS_PER_DAY": "1000000",
            "WEFT_QUOTA_WORKFLOW_RUNS_PER_DAY": "1000000",
            "LOG_LEVEL": "INFO",
            "LOG_FORMAT": "text",
            "PYTHONUNBUFFERED": "1",
            **{f"WEFT_ENGINE_{name}": json.dumps(value) for name, value in ENGINE.items()},
        }
        self.servers: list[Server] = []
        self.workers: list[Process] = []
        self.beat: Process | None = None
        # The services of its own, when it has them (the private_deployment fixture).
        self.postgres: PrivatePostgres | None = None
        self.redis: PrivateRedis | None = None

    # --- starting --------------------------------------------------------------------------------
    def server_start(self) -> Server:
        """daphne as the Procfile's `web` runs it (no persistent database connections under ASGI)."""
        name = f"web{len(self.servers) + 1}"
        env = {**self.env, "DATABASE_CONN_MAX_AGE": "0"}
        server = Server(*daphne_start(name, env, self.logs / f"{name}.log"))
        self.servers.append(server)
        return server

    def worker_start(self) -> Process:
        """The Procfile's `worker`, consuming only the parked queue until told otherwise."""
        name = f"worker{len(self.workers) + 1}"
        command = celery_worker_command(
            hostname=f"{name}-{self.queue}", queues=self.parked, concurrency=WORKER_CONCURRENCY
        )
        worker = Process(name, command, self.env, self.logs / f"{name}.log")
        self.workers.append(worker)
        return worker

    def beat_start(self) -> Process:
        """The Procfile's `beat`: the reaper and the housekeeping, from the database scheduler."""
        command = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "config",
            "beat",
            "--loglevel=INFO",
            "--scheduler",
            "django_celery_beat.schedulers:DatabaseScheduler",
        ]
        self.beat = Process("beat", command, self.env, self.logs / "beat.log")
        return self.beat

    def start(self, *, servers: int = 2, workers: int = 3) -> None:
        """The processes of a deployment: ``servers`` daphnes, ``workers`` Celery workers and beat; ready on return."""
        for _ in range(servers):
            self.server_start()
        for _ in range(workers):
            self.worker_start()
        self.beat_start()
        self.wait_ready()

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        waiting = [*self.servers, *self.workers, self.beat]
        while waiting:
            waiting = [each for each in waiting if not self._ready(each)]
            for each in waiting:
                process = each.process if isinstance(each, Server) else each
                if not process.alive() or time.monotonic() > deadline:
                    raise RuntimeError(f"{process.name} did not start:\n{process.output()[-4000:]}")
            time.sleep(0.1)

    def _ready(self, each) -> bool:
        if isinstance(each, Server):
            try:
                httpx.get(f"{each.url}/api/v1/", timeout=1)
            except httpx.HTTPError:
                return False
            return True
        if each is self.beat:
            return "beat: Starting..." in each.output()
        return " ready." in each.output()

    def manage(self, *arguments: str) -> str:
        """``manage.py <arguments>`` in the deployment's environment; its output."""
        command = [sys.executable, "manage.py", *arguments]
        done = subprocess.run(command, cwd=BASE_DIR, env=self.env, capture_output=True, text=True, timeout=120)
        if done.returncode:
            raise RuntimeError(f"manage.py {' '.join(arguments)} failed:\n{done.stdout[-2000:]}{done.stderr[-4000:]}")
        return done.stdout

    # --- which workers consume the queue ----------------------------------------------------------
    def node_name(self, worker: Process) -> str:
        return f"{worker.name}-{self.queue}@{socket.gethostname()}"

    def consume(self, workers: list[Process], *, on: bool = True) -> None:
        """Tell ``workers`` to start (or stop) consuming the deployment's queue, and wait for their answers."""
        names = [self.node_name(worker) for worker in workers]
        control = celery_app.control.add_consumer if on else celery_app.control.cancel_consumer
        replies = control(self.queue, destination=names, reply=True, timeout=5)
        answered = {name for reply in replies for name in reply}
        assert answered == set(names), f"workers that did not answer: {set(names) - answered}"

    # --- stopping ---------------------------------------------------------------------------------
    def stop(self) -> None:
        processes = [server.process for server in self.servers] + self.workers + ([self.beat] if self.beat else [])
        for process in processes:
            process.terminate()
        deadline = time.monotonic() + 5
        for process in processes:
            process.stop(grace=max(deadline - time.monotonic(), 0))


# --- PostgreSQL and Redis of a test's own ------------------------------------------------------------
#: The user the private services run as when the test runs as root (PostgreSQL refuses root).
SERVICE_USER_UNDER_ROOT = "nobody"
SERVICE_READY_TIMEOUT_S = 30


def free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        return listener.getsockname()[1]


class ServiceHome:
    """A directory for the private services, and the user they run as: this one, or ``nobody`` under root."""

    def __init__(self):
        self.path = Path(tempfile.mkdtemp(prefix="weft-drill-"))
        self.popen: dict = {}
        if os.geteuid() == 0:
            try:
                account = pwd.getpwnam(SERVICE_USER_UNDER_ROOT)
            except KeyError:
                raise RuntimeError(
                    f"Run as root, the drill starts PostgreSQL as {SERVICE_USER_UNDER_ROOT!r} (initdb refuses root), "
                    "and there is no such user: run the tests as an unprivileged user."
                ) from None
            os.chown(self.path, account.pw_uid, account.pw_gid)
            self.popen = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def postgres_bin(name: str) -> str:
    """A PostgreSQL server program (initdb, postgres) of the newest version installed, as Debian installs them."""
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda path: int(Path(path).parts[4]))
    if not found:
        raise FileNotFoundError(f"/usr/lib/postgresql/*/bin/{name} (Debian's postgresql package)")
    return found[-1]


class PrivatePostgres:
    """A PostgreSQL cluster of the test's own, which it may stop and start: no fsync, trust on loopback."""

    def __init__(self, home: ServiceHome, *, logs: Path):
        self.home = home
        self.data = home.path / "pgdata"
        self.logs = logs
        self.port = free_port()
        self.process: Process | None = None
        self.starts = 0
        subprocess.run(
            [postgres_bin("initdb"), "-D", self.data, "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8"],
            env={**os.environ, "LC_ALL": "C.UTF-8"},
            cwd=home.path,
            check=True,
            capture_output=True,
            **home.popen,
        )

    def url(self, database: str = "postgres") -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        self.starts += 1
        command = [
            postgres_bin("postgres"),
            *("-D", self.data, "-p", str(self.port), "-k", self.home.path),
            *("-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "full_page_writes=off"),
            *("-c", "max_connections=200"),
        ]
        log = self.logs / f"postgres-{self.starts}.log"
        self.process = Process("postgres", [str(part) for part in command], os.environ, log, **self.home.popen)
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + SERVICE_READY_TIMEOUT_S
        while True:
            try:
                psycopg.connect(self.url(), connect_timeout=1).close()
                return
            except psycopg.OperationalError:
                if not self.process.alive() or time.monotonic() > deadline:
                    raise RuntimeError(f"PostgreSQL did not start:\n{self.process.output()[-4000:]}") from None
                time.sleep(0.05)

    def database_create(self, name: str) -> str:
        with psycopg.connect(self.url(), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        """A fast shutdown (SIGINT): sessions are ended, what was committed stays."""
        if self.process is not None and self.process.alive():
            self.process.popen.send_signal(signal.SIGINT)
            self.process.stop(grace=SERVICE_READY_TIMEOUT_S)


class PrivateRedis:
    """A redis-server of the test's own, without persistence (a restart empties it, as it does in CI)."""

    def __init__(self, home: ServiceHome, *, logs: Path):
        self.home = home
        self.logs = logs
        self.port = free_port()
        self.process: Process | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.starts += 1
        command = ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no"]
        command += ["--dir", str(self.home.path)]
        self.process = Process("redis", command, os.environ, self.logs / f"redis-{self.starts}.log", **self.home.popen)
        deadline = time.monotonic() + SERVICE_READY_TIMEOUT_S
        client = redis.Redis.from_url(self.url, socket_connect_timeout=1)
        while True:
            try:
                client.ping()
                client.close()
                return
            except redis.ConnectionError:
                if not self.process.alive() or time.monotonic() > deadline:
                    raise RuntimeError(f"Redis did not start:\n{self.process.output()[-4000:]}") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.alive():
            self.process.terminate()
            self.process.stop(grace=SERVICE_READY_TIMEOUT_S)


async def next_message(ws, *, settled: asyncio.Event, grace: float) -> str | None:
    """A follower's next websocket message; None if none came ``grace`` seconds after ``settled`` (every run ended)."""
    while not settled.is_set():
        try:
            return await asyncio.wait_for(ws.recv(), timeout=0.5)
        except TimeoutError:
            continue
    try:
        return await asyncio.wait_for(ws.recv(), timeout=grace)
    except TimeoutError:
        return None


#: The events that end a run.
FINAL_EVENTS = frozenset({"run.succeeded", "run.failed", "run.cancelled"})


async def events_read(ws, follower, *, settled: asyncio.Event, grace: float) -> str:
    """Read one connection of a run's websocket into ``follower`` (its ``events``, ``last_seq`` and
    ``duplicates``): "final" at the run's final event, "gap" at an event that came after a missing
    one, "stalled" when nothing came ``grace`` seconds after ``settled``."""
    snapshot = json.loads(await ws.recv())
    assert snapshot["type"] == "snapshot", snapshot
    while True:
        raw = await next_message(ws, settled=settled, grace=grace)
        if raw is None:
            return "stalled"
        event = json.loads(raw)
        if event["seq"] <= follower.last_seq:
            follower.duplicates += 1
            continue
        if event["seq"] > follower.last_seq + 1:
            return "gap"
        follower.events.append(event)
        if event["type"] in FINAL_EVENTS:
            return "final"
