"""A real Weft server in a child process, for the tests that talk to it over HTTP.

A live server cannot see the rows of pytest's transaction, so it gets a database of its own:
a fresh PostgreSQL database on the same server when the suite runs on PostgreSQL (dropped
afterwards), otherwise a temporary SQLite file.
"""

import atexit
import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import httpx
import psycopg
from django.conf import settings

BASE_DIR = Path(settings.BASE_DIR)
PYTHON = sys.executable


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_env(**overrides: str) -> dict[str, str]:
    """The environment of a child process: the real settings, fresh keys, embedded mode."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"DJANGO_SETTINGS_MODULE", "DATABASE_URL", "REDIS_URL"} and not key.startswith("PYTEST_")
    }
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        WEFT_SECRET_KEY=secrets.token_urlsafe(50),
        WEFT_FIELD_ENCRYPTION_KEY=secrets.token_urlsafe(50),
        DEBUG="0",
        SECURE_SSL_REDIRECT="0",
        SECURE_HSTS_SECONDS="0",
        LOG_LEVEL="WARNING",
        PYTHONUNBUFFERED="1",
    )
    env.update(overrides)
    return env


@contextlib.contextmanager
def live_database(tmp_path: Path) -> Iterator[str]:
    """A DATABASE_URL nobody else uses, on the engine the suite runs on."""
    db = settings.DATABASES["default"]
    if not db["ENGINE"].endswith("postgresql"):
        yield f"sqlite:///{tmp_path / 'live.sqlite3'}"
        return
    name = f"weft_live_{uuid.uuid4().hex[:12]}"
    params = _postgres_params()
    with psycopg.connect(**params) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    auth = db.get("USER") or "postgres"
    if db.get("PASSWORD"):
        auth += f":{db['PASSWORD']}"
    try:
        yield f"postgres://{auth}@{params['host']}:{params['port']}/{name}"
    finally:
        _database_drop(name)


#: Per test process: the migrated database that later ones are copied from, by engine.
_migrated_templates: dict[str, str] = {}


def database_migrate(env: dict[str, str]) -> None:
    """``manage.py migrate`` on the empty database of ``env["DATABASE_URL"]`` (a ``live_database``).

    Migrating from nothing costs a child process about 10 s of CPU, and the live-server tests need a
    dozen databases: the first one of a test process is migrated and kept as a template, the others
    are copies of it (a file copy on SQLite, ``CREATE DATABASE ... TEMPLATE`` on PostgreSQL), which
    hold exactly what ``migrate`` would have written.
    """
    url = urlparse(env["DATABASE_URL"])
    if url.scheme == "sqlite":
        template = _migrated_templates.get("sqlite")
        if template is None:
            template = str(Path(tempfile.mkdtemp(prefix="weft-migrated-")) / "template.sqlite3")
            manage("migrate", "--noinput", env={**env, "DATABASE_URL": f"sqlite:///{template}"})
            atexit.register(shutil.rmtree, Path(template).parent, ignore_errors=True)
            _migrated_templates["sqlite"] = template
        shutil.copyfile(template, url.path)
        return
    name, params = url.path.lstrip("/"), _postgres_params()
    template = _migrated_templates.get("postgres")
    if template is None:
        template = f"weft_migrated_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(**params) as conn:
            conn.execute(f'CREATE DATABASE "{template}"')
        atexit.register(_database_drop, template)
        manage("migrate", "--noinput", env={**env, "DATABASE_URL": url._replace(path=f"/{template}").geturl()})
        _migrated_templates["postgres"] = template
    with psycopg.connect(**params) as conn:  # the empty database, nobody connected yet, becomes a copy
        conn.execute(f'DROP DATABASE "{name}"')
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')


def _postgres_params() -> dict:
    db = settings.DATABASES["default"]
    return {
        "host": db.get("HOST") or "127.0.0.1",
        "port": db.get("PORT") or 5432,
        "user": db.get("USER") or "postgres",
        "password": db.get("PASSWORD") or None,
        "dbname": "postgres",
        "autocommit": True,
    }


def _database_drop(name: str) -> None:
    with contextlib.suppress(psycopg.Error), psycopg.connect(**_postgres_params()) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def manage(*args: str, env: dict[str, str], timeout: float = 300) -> str:
    result = subprocess.run(
        [PYTHON, "manage.py", *args],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, f"manage.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


class ServerProcess:
    """A child process (and its own process group) whose output is collected as it comes."""

    def __init__(self, args: list[str], *, env: dict[str, str], cwd: Path = BASE_DIR):
        self.process = subprocess.Popen(
            args,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self._lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self._lines)

    def wait_until_answering(self, url: str, *, timeout: float) -> httpx.Response:
        """Poll ``url`` until it answers anything but a 5xx; fail with the server's output."""
        deadline = time.monotonic() + timeout
        last_error = "no answer"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"the server exited with {self.process.returncode}:\n{self.output}")
            try:
                response = httpx.get(url, timeout=5)
            except httpx.TransportError as exc:
                last_error = repr(exc)
            else:
                if response.status_code < 500:
                    return response
                last_error = f"HTTP {response.status_code}"
            time.sleep(0.25)
        raise AssertionError(f"{url} did not answer within {timeout} s ({last_error}):\n{self.output}")

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=15)
        self._reader.join(timeout=5)

    def __enter__(self) -> "ServerProcess":
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()


def daphne(*, port: int, env: dict[str, str]) -> ServerProcess:
    """daphne without its access log: what it prints is Django's log (errors, at LOG_LEVEL)."""
    return ServerProcess(
        [PYTHON, "-m", "daphne", "-v", "0", "-b", "127.0.0.1", "-p", str(port), "config.asgi:application"],
        env=env,
    )
