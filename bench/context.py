"""What a bench module's ``run(ctx)`` gets, and helpers to start and stop the processes it needs."""

import contextlib
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class BenchContext:
    """Shared by every bench module.

    - ``base_url``: the live server (daphne, this checkout, the bench's database and Redis),
      e.g. ``http://127.0.0.1:40123``; ``ws_url`` is the same as ``ws://``.
    - ``user``: the bench user (a Django ``User``); ``token``: its knox API token, sent as
      ``Authorization: Token <token>``; ``client``: an ``httpx.Client`` on ``base_url`` with it.
    - ``services``: True when PostgreSQL and Redis are in use (the figures are meant for that).
    - ``redis_url`` (or ""), ``env``: the environment the bench's subprocesses get.
    - ``result(...)``, ``percentile(...)``, ``median(...)``, ``warn(...)``, ``spawn(...)``: helpers.
    """

    base_url: str
    token: str
    user: object
    services: bool
    redis_url: str
    env: dict
    client: httpx.Client | None = None
    warnings: list[str] = field(default_factory=list)
    _processes: list = field(default_factory=list)

    @property
    def ws_url(self) -> str:
        return "ws" + self.base_url.removeprefix("http")

    @staticmethod
    def result(name: str, value, unit: str, *, target=None, higher_is_better: bool = False, note: str = "") -> dict:
        """One row of the table; with ``target``, ``ok`` tells whether ``value`` meets it."""
        row = {"name": name, "value": None if value is None else round(value, 4), "unit": unit}
        if target is not None:
            row["target"] = target
            row["ok"] = None if value is None else (value >= target if higher_is_better else value <= target)
        if note:
            row["note"] = note
        return row

    @staticmethod
    def percentile(values: list[float], p: float) -> float:
        ordered = sorted(values)
        index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
        return ordered[index]

    @staticmethod
    def median(values: list[float]) -> float:
        return statistics.median(values)

    def warn(self, message: str) -> None:
        self.warnings.append(message)
        print(f"bench: warning: {message}", file=sys.stderr, flush=True)

    def spawn(
        self,
        *args: str,
        ready: Callable[[], bool] | None = None,
        timeout: float = 30.0,
        name: str = "",
        env: dict | None = None,
    ):
        """Start ``args`` (``python -m ...`` if args[0] is "-m") in the repository, stopped by ``close``.

        ``env`` replaces ``self.env`` for this process."""
        command = [sys.executable, *args] if args[0] == "-m" else list(args)
        # The bench's own commands (python -m daphne/celery), no outside input.
        process = subprocess.Popen(  # noqa: S603
            command, cwd=ROOT, env=env or self.env, start_new_session=True, stdout=subprocess.DEVNULL
        )
        self._processes.append(process)
        if ready is not None:
            deadline = time.monotonic() + timeout
            while not ready():
                if process.poll() is not None:
                    raise RuntimeError(f"{name or args[0]} exited with {process.returncode} while starting.")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{name or args[0]} was not ready after {timeout:g} s.")
                time.sleep(0.05)
        return process

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
        for process in reversed(self._processes):
            stop(process)
        self._processes.clear()


def stop(process: subprocess.Popen, timeout: float = 10.0) -> None:
    """Stop a process the bench started (and its children: it leads its own session)."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_open(port: int) -> Callable[[], bool]:
    def check() -> bool:
        with socket.socket() as sock:
            sock.settimeout(0.2)
            return sock.connect_ex(("127.0.0.1", port)) == 0

    return check
