"""Real processes for the integration tests: Celery workers and a daphne server on the test database.

The workers and the server are subprocesses started once per module, with the test's own
PostgreSQL database (the one pytest-django created, so tests need ``transaction=True`` for
them to see committed rows), the Redis of ``REDIS_URL`` and a Celery queue of their own (so
that parallel test processes sharing one Redis never take each other's runs). Engine tunables
are shortened through ``WEFT_ENGINE_*`` for them and, by ``cluster_settings``, for the test
process (which plays beat: it calls the reaper).
"""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from django.conf import settings
from django.db import connection

from config.celery import app as celery_app

BASE_DIR = Path(__file__).resolve().parents[2]

#: Tunables shared by the subprocesses and the test process.
ENGINE = {
    "LEASE_TTL_S": 2.0,
    "HEARTBEAT_S": 0.3,
    "CANCEL_POLL_S": 0.1,
    "MAX_DISPATCH_ATTEMPTS": 2,
    "REDISPATCH_GRACE_S": 10.0,
    "PENDING_REDISPATCH_S": 600.0,
    "EMBEDDED_REAPER": False,
}
OUTBOUND_ALLOW = ["127.0.0.1/32"]
READY_TIMEOUT_S = 30


def _database_url() -> str:
    """The test database pytest-django created, as a DATABASE_URL."""
    db = connection.settings_dict
    credentials = db["USER"] or ""
    if db["PASSWORD"]:
        credentials += f":{db['PASSWORD']}"
    host = f"{credentials}@" if credentials else ""
    host += f"{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}"
    return f"postgres://{host}/{db['NAME']}"


class Process:
    """One subprocess in a session of its own, with its output in a log file."""

    def __init__(self, name: str, command: list[str], env: dict, log: Path, **popen):
        self.name = name
        self.log = log
        with log.open("wb") as out:
            self.popen = subprocess.Popen(
                command, cwd=BASE_DIR, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, **popen
            )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill(self) -> None:
        """kill -9 of this process alone (what a crashed host or an OOM kill does)."""
        os.kill(self.pid, signal.SIGKILL)
        self.popen.wait(timeout=10)

    def terminate(self) -> None:
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)

    def stop(self, *, grace: float = 3) -> None:
        """Wait up to ``grace`` seconds for it to end (after terminate), then kill it and all it started."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=grace)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        self.popen.wait(timeout=10)


def celery_worker_command(*, hostname: str, queues: str, concurrency: int) -> list[str]:
    """The Procfile's `worker` (threads pool), quiet on the cluster's chatter, under its own hostname."""
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "config",
        "worker",
        "--pool=threads",
        f"--concurrency={concurrency}",
        "--loglevel=INFO",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        f"--hostname={hostname}@%h",
        f"--queues={queues}",
    ]


def daphne_start(name: str, env: dict, log: Path) -> tuple[Process, int]:
    """daphne on a free loopback port, handed over as an open socket (no race for the port)."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    command = [sys.executable, "-m", "daphne", "--fd", str(listener.fileno()), "config.asgi:application"]
    try:
        return Process(name, command, env, log, pass_fds=(listener.fileno(),)), port
    finally:
        listener.close()


class Cluster:
    """Celery workers and one daphne server sharing the test database, Redis and a queue."""

    def __init__(self, *, logs: Path):
        self.logs = logs
        self.queue = f"weft-it-{os.environ.get('PYTEST_XDIST_WORKER', 'main')}-{uuid.uuid4().hex[:8]}"
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "config.settings_test",
            "DATABASE_URL": _database_url(),
            "REDIS_URL": settings.REDIS_URL,
            "WEFT_CELERY_QUEUE": self.queue,
            "WEFT_OUTBOUND_ALLOW": ",".join(OUTBOUND_ALLOW),
            "PYTHONUNBUFFERED": "1",
            **{f"WEFT_ENGINE_{name}": json.dumps(value) for name, value in ENGINE.items()},
        }
        self.workers: list[Process] = []
        self.server: Process | None = None
        self.port = 0
        self._count = 0

    # --- workers -------------------------------------------------------------------------------
    def worker_start(self, *, concurrency: int = 16) -> Process:
        """Start a worker (the Procfile's command); it is ready once ``worker_ready`` says so."""
        self._count += 1
        name = f"w{self._count}"
        command = celery_worker_command(hostname=f"{name}-{self.queue}", queues=self.queue, concurrency=concurrency)
        worker = Process(name, command, self.env, self.logs / f"{name}.log")
        self.workers.append(worker)
        return worker

    def worker_wait_ready(self, worker: Process) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while " ready." not in worker.output():
            if not worker.alive() or time.monotonic() > deadline:
                raise RuntimeError(f"Celery worker {worker.name} did not start:\n{worker.output()[-4000:]}")
            time.sleep(0.05)

    def worker_by_pid(self, pid: int) -> Process:
        return next(worker for worker in self.workers if worker.pid == pid)

    def alive_workers(self) -> list[Process]:
        return [worker for worker in self.workers if worker.alive()]

    # --- the server ----------------------------------------------------------------------------
    def server_start(self) -> None:
        self.server, self.port = daphne_start("daphne", self.env, self.logs / "daphne.log")

    def start(self, *, workers: int = 2) -> None:
        """The server and ``workers`` workers, returning once all of them answer."""
        self.server_start()
        started = [self.worker_start() for _ in range(workers)]
        self.server_wait_ready()
        for worker in started:
            self.worker_wait_ready(worker)

    def server_wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            try:
                httpx.get(f"{self.http_url}/api/v1/", timeout=1)
                return
            except httpx.HTTPError:
                if not self.server.alive() or time.monotonic() > deadline:
                    raise RuntimeError(f"daphne did not start:\n{self.server.output()[-4000:]}") from None
                time.sleep(0.05)

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_origin(self) -> str:
        return self.http_url

    def stop(self) -> None:
        processes = [*self.workers, *([self.server] if self.server else [])]
        for process in processes:
            process.terminate()
        deadline = time.monotonic() + 3
        for process in processes:
            process.stop(grace=max(deadline - time.monotonic(), 0))


@pytest.fixture(scope="module")
def cluster(django_db_setup, tmp_path_factory):
    """Two workers and a server for the module; more workers can be started (and killed) by tests."""
    if not settings.DATABASES["default"]["ENGINE"].endswith("postgresql") or not settings.REDIS_URL:
        pytest.skip("needs PostgreSQL and Redis")
    started = time.monotonic()
    cluster = Cluster(logs=tmp_path_factory.mktemp("cluster"))
    try:
        cluster.start(workers=2)
        sys.stderr.write(f"\n[cluster up in {time.monotonic() - started:.1f} s, queue {cluster.queue}]\n")
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def cluster_settings(cluster, settings):
    """The test process talks to the cluster: same tunables, same queue, loopback allowed."""
    settings.WEFT = {
        **settings.WEFT,
        "OUTBOUND_ALLOW": OUTBOUND_ALLOW,
        "ENGINE": {**settings.WEFT.get("ENGINE", {}), **ENGINE},
    }
    settings.EMBEDDED = False
    previous = celery_app.conf.task_default_queue
    celery_app.conf.task_default_queue = cluster.queue
    yield cluster
    celery_app.conf.task_default_queue = previous


def wait_for(predicate, *, timeout: float, what: str, pause: float = 0.05):
    """``predicate()``'s first true value, looked for every ``pause`` seconds; fails after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"Timed out after {timeout} s waiting for {what}")
        time.sleep(pause)
    return value


class EffectServer:
    """Loopback HTTP recording each call as (path, run): ``/mark`` answers at once, ``/hold`` once released."""

    def __init__(self):
        self.calls: list[tuple[str, str]] = []
        self._released = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format, *args):
                return

            def do_GET(self):
                url = urlsplit(self.path)
                server.calls.append((url.path, parse_qs(url.query)["run"][0]))
                if url.path == "/hold":
                    server._released.wait(timeout=60)
                body = json.dumps({"ok": True}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def runs(self, path: str) -> list[str]:
        """The ``run`` of each call to ``path``, in order."""
        return [run for called, run in self.calls if called == path]

    def count(self, path: str, run: str) -> int:
        return self.calls.count((path, run))

    def holding(self) -> int:
        return len(self.runs("/hold"))

    def release(self) -> None:
        self._released.set()

    def stop(self) -> None:
        self.release()
        self._server.shutdown()
        self._server.server_close()
