"""A deployment on loopback: daphne servers, Celery workers and one beat, started as the Procfile starts them.

Every process gets the same environment (as in production: platform/env.example), pointing at
the test's PostgreSQL database (the one pytest-django created for this test process) and Redis,
with a Celery queue of its own so that parallel test processes sharing one Redis never take
each other's runs. Workers start on a parked queue and are told over Celery's remote control
when to consume the real one, so that a test can queue a backlog first and time its draining.
"""

import json
import os
import socket
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
from django.conf import settings

from config.celery import app as celery_app
from tests.integration.conftest import Process, celery_worker_command, daphne_start
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
    def __init__(self, *, logs: Path):
        self.logs = logs
        self.queue = f"weft-deploy-{os.environ.get('PYTEST_XDIST_WORKER', 'main')}-{uuid.uuid4().hex[:8]}"
        self.parked = f"{self.queue}-parked"
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
            "DATABASE_URL": test_database_url(),
            "REDIS_URL": settings.REDIS_URL,
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
