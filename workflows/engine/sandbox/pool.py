"""A pool of warm sandbox workers, and :func:`run_code`, the one way the engine runs user Python.

User code never runs in this process: it goes over a pipe to a worker started with
``python -I -S`` (see ``_zygote.py`` for the isolation), which forks a fresh, locked-down child
per call. Forking a warm worker costs well under a millisecond, so a chain of small code nodes
does not pay an interpreter start per node, and no call sees what an earlier one left behind.

Settings (``settings.WEFT``, read when used; the pool's size when it is created):
``SANDBOX_MAX_WORKERS`` (8), ``SANDBOX_MIN_IDLE`` (2), ``SANDBOX_CPU_S`` (5),
``SANDBOX_WALL_S`` (10), ``SANDBOX_MEMORY_MB`` (256), ``SANDBOX_MAX_CPU_S`` (60),
``SANDBOX_MAX_WALL_S`` (300), ``SANDBOX_MAX_MEMORY_MB`` (2048), ``SANDBOX_FILE_MB`` (8),
``SANDBOX_TMPFS_MB`` (16), ``SANDBOX_RESULT_MAX_BYTES`` (1 MiB), ``SANDBOX_UID_BASE`` (200000),
``SANDBOX_REQUIRE_ISOLATION`` (True: refuse to run code at all when the worker cannot isolate
it, i.e. when the server does not run as root; set False only on a developer machine).
"""

import asyncio
import atexit
import contextlib
import json
import logging
import os
import selectors
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from ..errors import NodeTimeout, NonRetryableError, RetryableError

logger = logging.getLogger(__name__)

DEFAULTS = {
    "SANDBOX_MAX_WORKERS": 8,
    "SANDBOX_MIN_IDLE": 2,
    "SANDBOX_CPU_S": 5.0,
    "SANDBOX_WALL_S": 10.0,
    "SANDBOX_MEMORY_MB": 256,
    "SANDBOX_MAX_CPU_S": 60.0,
    "SANDBOX_MAX_WALL_S": 300.0,
    "SANDBOX_MAX_MEMORY_MB": 2048,
    "SANDBOX_FILE_MB": 8,
    "SANDBOX_TMPFS_MB": 16,
    "SANDBOX_RESULT_MAX_BYTES": 1024 * 1024,
    "SANDBOX_UID_BASE": 200000,
    "SANDBOX_REQUIRE_ISOLATION": True,
}
WORKER_PROGRAM = Path(__file__).with_name("_zygote.py")
START_TIMEOUT_S = 15.0
#: What the worker may take beyond the wall limit to fork, reap and answer before it is killed.
ANSWER_GRACE_S = 3.0


def _setting(name: str):
    return getattr(settings, "WEFT", {}).get(name, DEFAULTS[name])


class SandboxError(NonRetryableError):
    """The user's code failed: it raised, returned something other than a JSON dict, or had no main."""

    def __init__(self, message: str, *, kind: str, traceback: str = "", output: str = ""):
        super().__init__(message)
        self.kind = kind
        self.traceback = traceback
        self.output = output


class SandboxMemoryExceeded(SandboxError):
    """The code asked for more memory than its limit."""


class SandboxTimeout(NodeTimeout):
    """The code ran past its wall-clock or CPU-time limit and was killed."""


class SandboxUnavailable(RetryableError):
    """No worker could be started or one died under a call (not the code's fault)."""


class SandboxNotIsolated(NonRetryableError):
    """This machine cannot isolate code (the server does not run as root) and isolation is required."""


@dataclass(frozen=True)
class Limits:
    """Per-call limits; None takes the operator's default, and any value is capped by the maximum."""

    cpu_s: float | None = None
    wall_s: float | None = None
    memory_mb: int | None = None

    def resolved(self) -> dict:
        def pick(value, default, maximum):
            return min(value if value is not None else _setting(default), _setting(maximum))

        return {
            "cpu_s": pick(self.cpu_s, "SANDBOX_CPU_S", "SANDBOX_MAX_CPU_S"),
            "wall_s": pick(self.wall_s, "SANDBOX_WALL_S", "SANDBOX_MAX_WALL_S"),
            "memory_mb": pick(self.memory_mb, "SANDBOX_MEMORY_MB", "SANDBOX_MAX_MEMORY_MB"),
            "file_mb": _setting("SANDBOX_FILE_MB"),
            "result_max_bytes": _setting("SANDBOX_RESULT_MAX_BYTES"),
        }


@dataclass(frozen=True)
class SandboxResult:
    result: dict
    #: What the code printed (the first 8 KiB).
    output: str
    wall_s: float


class _WorkerLost(Exception):
    pass


class SandboxWorker:
    """One warm worker process. Used by one caller at a time; :meth:`kill` may come from any thread."""

    def __init__(self, *, root: str, require_isolation: bool):
        options = {
            "root": root,
            "require_isolation": require_isolation,
            "uid_base": _setting("SANDBOX_UID_BASE"),
            "tmpfs_mb": _setting("SANDBOX_TMPFS_MB"),
        }
        self.process = subprocess.Popen(  # noqa: S603 - our own program, no shell, fixed arguments
            [sys.executable, "-I", "-S", str(WORKER_PROGRAM), json.dumps(options)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env={"LANG": "C.UTF-8"},
            cwd="/",
            close_fds=True,
            start_new_session=True,
        )
        self.calls = 0
        try:
            hello = self._receive(time.monotonic() + START_TIMEOUT_S)
        except _WorkerLost as exc:
            self.kill()
            raise SandboxUnavailable(f"The code sandbox did not start: {exc}") from exc
        if not hello.get("ready"):
            self.kill()
            if hello.get("isolation_failed"):
                raise SandboxNotIsolated(f"Code cannot run here: {hello['error']}.")
            raise SandboxUnavailable(hello.get("error", "The code sandbox did not start."))
        self.isolation: dict = hello["isolation"]
        os.set_blocking(self.process.stdout.fileno(), False)

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    async def call(self, *, limits: dict, payload: bytes, timeout_s: float) -> tuple[dict, bytes, bytes]:
        """One call: (status, the child's result frame, what it printed), awaited on the running loop."""
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[list[bytes]] = loop.create_future()
        fd = self.process.stdout.fileno()
        received = bytearray()
        frames: list[bytes] = []

        def on_readable() -> None:
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                return
            if not chunk:
                if not answer.done():
                    answer.set_exception(_WorkerLost("the worker exited"))
                return
            received.extend(chunk)
            while len(received) >= 4 and len(frames) < 3:
                size = 4 + struct.unpack(">I", received[:4])[0]
                if len(received) < size:
                    break
                frames.append(bytes(received[4:size]))
                del received[:size]
            if len(frames) == 3 and not answer.done():
                answer.set_result(frames)

        # Listening first, the request last: the worker, woken by it (often on this CPU), then
        # does not wait for this thread to finish setting up.
        loop.add_reader(fd, on_readable)
        try:
            try:
                for frame in (json.dumps(limits).encode(), payload):
                    self.process.stdin.write(struct.pack(">I", len(frame)))
                    self.process.stdin.write(frame)
                self.process.stdin.flush()
            except (BrokenPipeError, ValueError, OSError) as exc:
                raise _WorkerLost(f"the worker is gone ({exc})") from exc
            self.calls += 1
            async with asyncio.timeout(timeout_s):
                status, result, output = await answer
        except TimeoutError as exc:
            raise _WorkerLost("the worker did not answer in time") from exc
        finally:
            loop.remove_reader(fd)
        return json.loads(status), result, output

    def _receive(self, deadline: float) -> dict:
        header = self._read(4, deadline)
        return json.loads(self._read(struct.unpack(">I", header)[0], deadline))

    def _read(self, count: int, deadline: float) -> bytes:
        stream = self.process.stdout
        chunks: list[bytes] = []
        with selectors.DefaultSelector() as selector:
            selector.register(stream, selectors.EVENT_READ)
            while count:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not selector.select(remaining):
                    raise _WorkerLost("the worker did not answer in time")
                try:
                    chunk = os.read(stream.fileno(), count)
                except BlockingIOError:
                    continue
                if not chunk:
                    raise _WorkerLost("the worker exited")
                chunks.append(chunk)
                count -= len(chunk)
        return b"".join(chunks)

    def kill(self) -> None:
        """Kill the worker and the child running user code (it would also die by its parent-death signal)."""
        if self.process.poll() is None:
            # The worker leads its own process group (start_new_session): its child goes with it.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            logger.warning("sandbox worker %s did not die after SIGKILL", self.pid)
        for stream in (self.process.stdin, self.process.stdout):
            try:
                stream.close()
            except OSError:
                logger.debug("closing a pipe of sandbox worker %s failed", self.pid)

    def close(self) -> None:
        """Let the worker exit on its own (EOF on its stdin), then make sure it did."""
        try:
            self.process.stdin.close()
            self.process.wait(timeout=2)
        except (OSError, subprocess.TimeoutExpired):
            pass
        self.kill()


class SandboxPool:
    """Warm workers for this process: at most ``max_workers``, ``min_idle`` kept ready."""

    def __init__(self, *, max_workers: int, min_idle: int, require_isolation: bool):
        self.max_workers = max_workers
        self.min_idle = min(min_idle, max_workers)
        self.require_isolation = require_isolation
        self.pid = os.getpid()
        self.root = tempfile.mkdtemp(prefix="weft-sandbox-")
        os.chmod(self.root, 0o755)  # noqa: S103 - an empty mount point; the workers chroot into it
        self._lock = threading.Lock()
        self._idle: list[SandboxWorker] = []
        self._count = 0  # live workers plus those being started
        self._warming = 0  # of which started to be idle (by top_up)
        self._closed = False

    # --- Checkout -------------------------------------------------------------------------------

    def _take(self) -> tuple[SandboxWorker | None, bool]:
        """An idle worker, or (None, True) with a start reserved, or (None, False) when full."""
        with self._lock:
            if self._closed:
                raise SandboxUnavailable("The code sandbox is shut down.")
            while self._idle:
                worker = self._idle.pop(0)
                if worker.alive():
                    return worker, False
                self._count -= 1
            if self._count < self.max_workers:
                self._count += 1
                return None, True
            return None, False

    def _start(self) -> SandboxWorker:
        """Start a worker for a reserved place (blocking)."""
        try:
            return SandboxWorker(root=self.root, require_isolation=self.require_isolation)
        except BaseException:
            with self._lock:
                self._count -= 1
            raise

    async def acquire(self) -> SandboxWorker:
        delay = 0.001
        while True:
            worker, may_start = self._take()
            if worker is not None:
                self._top_up_later()
                return worker
            if may_start:
                started = asyncio.get_running_loop().run_in_executor(None, self._start)
                try:
                    worker = await asyncio.shield(started)
                except asyncio.CancelledError:
                    started.add_done_callback(self._keep_if_started)
                    raise
                self._top_up_later()
                return worker
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)

    def _keep_if_started(self, future) -> None:
        if not future.cancelled() and future.exception() is None:
            self.release(future.result())

    def release(self, worker: SandboxWorker) -> None:
        with self._lock:
            if not self._closed and worker.alive():
                self._idle.append(worker)
                return
            self._count -= 1
        worker.close()

    def discard(self, worker: SandboxWorker) -> None:
        """Kill a worker that is in a bad or unknown state (timed out, cancelled) and replace it."""
        worker.kill()
        with self._lock:
            self._count -= 1
        self._top_up_later()

    # --- Warmth ---------------------------------------------------------------------------------

    def top_up(self) -> None:
        """Start workers (blocking) until ``min_idle`` are idle or the pool is full."""
        while True:
            with self._lock:
                if not self._needs_warming():
                    return
                self._count += 1
                self._warming += 1
            try:
                worker = self._start()
            except (SandboxUnavailable, SandboxNotIsolated) as exc:
                logger.warning("could not start a sandbox worker: %s", exc)
                return
            finally:
                with self._lock:
                    self._warming -= 1
            self.release(worker)

    def _needs_warming(self) -> bool:
        return not self._closed and len(self._idle) + self._warming < self.min_idle and self._count < self.max_workers

    def _top_up_later(self) -> None:
        with self._lock:
            needed = self._needs_warming()
        if needed:
            threading.Thread(target=self.top_up, name="weft-sandbox-top-up", daemon=True).start()

    def idle_count(self) -> int:
        with self._lock:
            return len(self._idle)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
            self._count -= len(idle)
        for worker in idle:
            worker.close()
        # Empty when the workers were isolated (their files lived in their own tmpfs).
        shutil.rmtree(self.root, ignore_errors=True)


_pool: SandboxPool | None = None
_pool_lock = threading.Lock()


def get_pool() -> SandboxPool:
    """This process's pool (a forked process, e.g. a Celery child, makes its own)."""
    global _pool
    with _pool_lock:
        if _pool is None or _pool.pid != os.getpid():
            _pool = SandboxPool(
                max_workers=int(_setting("SANDBOX_MAX_WORKERS")),
                min_idle=int(_setting("SANDBOX_MIN_IDLE")),
                require_isolation=bool(_setting("SANDBOX_REQUIRE_ISOLATION")),
            )
        return _pool


def prewarm() -> None:
    """Start the idle workers now (call it when a worker process starts), not on the first code node."""
    get_pool().top_up()


@atexit.register
def shutdown() -> None:
    """Stop this process's workers."""
    global _pool
    with _pool_lock:
        pool, _pool = _pool, None
    if pool is not None and pool.pid == os.getpid():
        pool.close()


async def run_code(*, code: str, inputs: dict, limits: Limits | None = None) -> SandboxResult:
    """Run ``main(**inputs)`` from ``code`` in a sandbox and return the dict it returned.

    The contract for the user's code: define ``def main(**inputs) -> dict``; the inputs and the
    result are JSON (the result at most ``SANDBOX_RESULT_MAX_BYTES``); the preloaded standard
    modules (math, json, re, datetime, ... see ``_zygote.PRELOADED``) can be imported, nothing
    else can; there is no network, no process creation and an empty, private working directory.
    What it prints is returned as ``output`` (the first 8 KiB).

    Raises :class:`SandboxTimeout` (wall or CPU limit), :class:`SandboxMemoryExceeded`,
    :class:`SandboxError` (anything else the code did wrong), :class:`SandboxUnavailable`
    (a worker failed: retryable) or :class:`SandboxNotIsolated`.
    Cancelling the awaiting task kills the worker, and the code with it.
    """
    resolved = (limits or Limits()).resolved()
    payload = json.dumps({"code": code, "inputs": inputs}).encode()
    pool = get_pool()
    worker = await pool.acquire()
    answered = False
    try:
        status, result, output = await worker.call(
            limits=resolved, payload=payload, timeout_s=resolved["wall_s"] + ANSWER_GRACE_S
        )
        answered = True
    except _WorkerLost as exc:
        raise SandboxUnavailable(f"The code sandbox stopped answering: {exc}") from exc
    finally:
        if answered:
            pool.release(worker)
        else:
            pool.discard(worker)
    return _outcome(status, result, output.decode("utf-8", "replace"), resolved)


def _outcome(status: dict, result: bytes, output: str, limits: dict) -> SandboxResult:
    ended = status["ended"]
    if ended == "timeout":
        raise SandboxTimeout(f"The code ran longer than its {limits['wall_s']} s wall-clock limit and was killed.")
    if ended == "cpu":
        raise SandboxTimeout(f"The code used more than its {limits['cpu_s']} s of CPU time and was killed.")
    if ended != "result":
        raise SandboxError(f"The code failed: {status.get('message', ended)}.", kind=ended, output=output)
    reply = json.loads(result)
    if reply.get("ok"):
        return SandboxResult(result=reply["result"], output=output, wall_s=status["wall_s"])
    kind = reply.get("kind", "crashed")
    if kind == "memory":
        raise SandboxMemoryExceeded(
            f"The code needed more than its {limits['memory_mb']} MB of memory.", kind=kind, output=output
        )
    if kind == "exception":
        traceback = reply.get("traceback", "")
        message = f"The code raised {reply.get('type')}: {reply.get('message')}\n{traceback}".rstrip()
        raise SandboxError(message, kind=kind, traceback=traceback, output=output)
    raise SandboxError(f"The code failed: {reply.get('message', kind)}.", kind=kind, output=output)
