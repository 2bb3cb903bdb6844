"""A pool of warm sandbox workers, and :func:`run_code`, the one way the engine runs user Python.

User code never runs in this process: it goes over a pipe to a worker started in the jail of
``jail.py`` (bubblewrap, unprivileged: namespaces, a read-only interpreter and nothing else of the
host, a seccomp allow-list), which forks a fresh child per call (``_zygote.py``). Forking a warm
worker costs well under a millisecond, so a chain of small code nodes does not pay an
interpreter start per node, and no call sees what an earlier one left behind. A process running
as root (a test run as root, say) starts its workers as ``SANDBOX_USER`` instead: no sandbox
process ever runs as root.

Workers are shared fairly: one owner (the user a run counts for) holds at most
``SANDBOX_USER_SHARE`` of them at once, and a worker that comes free goes to the waiting owner
who holds the fewest (the earliest waiter among equals), so one user's long code nodes leave
room for everybody else's.

Settings: the ``SANDBOX_*`` tunables of ``config/conf.py`` (``WEFT_SANDBOX_*``), read when used
(the pool's size when it is created). ``SANDBOX_REQUIRE_ISOLATION`` (on by default) refuses to run
code at all when bubblewrap or libseccomp is missing; turn it off only on a developer machine,
where code then runs unisolated.
"""

import asyncio
import atexit
import contextlib
import functools
import itertools
import json
import logging
import os
import selectors
import shutil
import signal
import struct
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from config.conf import weft_settings

from ..errors import NodeTimeout, NonRetryableError, RetryableError
from . import jail

logger = logging.getLogger(__name__)

WORKER_PROGRAM = Path(__file__).with_name("_zygote.py")
START_TIMEOUT_S = 15.0
#: The worker's exit status when it leaves between two calls (``_zygote.RETIRED``).
RETIRED = 75
#: Workers a call tries when each it gets has retired.
RETIRED_RETRIES = 3
#: What the worker may take beyond the wall limit to fork, reap and answer before it is killed.
ANSWER_GRACE_S = 3.0


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
    """This machine cannot isolate code (bubblewrap or libseccomp is missing) and isolation is required."""


@dataclass(frozen=True)
class Limits:
    """Per-call limits; None takes the operator's default, and any value is capped by the maximum."""

    cpu_s: float | None = None
    wall_s: float | None = None
    memory_mb: int | None = None

    def resolved(self) -> dict:
        def pick(value, default, maximum):
            return min(value if value is not None else default, maximum)

        return {
            "cpu_s": pick(self.cpu_s, weft_settings.SANDBOX_CPU_S, weft_settings.SANDBOX_MAX_CPU_S),
            "wall_s": pick(self.wall_s, weft_settings.SANDBOX_WALL_S, weft_settings.SANDBOX_MAX_WALL_S),
            "memory_mb": pick(self.memory_mb, weft_settings.SANDBOX_MEMORY_MB, weft_settings.SANDBOX_MAX_MEMORY_MB),
            "file_mb": weft_settings.SANDBOX_FILE_MB,
            "result_max_bytes": weft_settings.SANDBOX_RESULT_MAX_BYTES,
        }


@dataclass(frozen=True)
class SandboxResult:
    result: dict
    #: What the code printed (the first 8 KiB).
    output: str
    wall_s: float


class _WorkerLost(Exception):
    pass


def _unprivileged_user() -> dict:
    """Popen arguments that start a process as ``SANDBOX_USER`` when this one runs as root; none otherwise."""
    if os.geteuid() != 0:
        return {}
    import pwd

    name = weft_settings.SANDBOX_USER
    try:
        entry = pwd.getpwnam(name)
    except KeyError as exc:
        raise SandboxUnavailable(f"The sandbox user {name!r} (SANDBOX_USER) does not exist.") from exc
    if entry.pw_uid == 0:
        raise SandboxNotIsolated(f"SANDBOX_USER {name!r} is root: the sandbox never runs as root.")
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def _data_fd(data: bytes) -> int:
    """A descriptor to read ``data`` from, from its start (a memfd: nothing on disk)."""
    fd = os.memfd_create("weft-sandbox", os.MFD_CLOEXEC)
    os.write(fd, data)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


class SandboxWorker:
    """One warm worker process. Used by one caller at a time; :meth:`kill` may come from any thread."""

    def __init__(self, *, root: str, require_isolation: bool, hidden: frozenset[str] = jail.HIDDEN_EXTENSIONS):
        jail_state = jail.status()
        if not jail_state["isolated"] and require_isolation:
            raise SandboxNotIsolated(f"Code cannot run here: {jail_state['problem']}.")
        as_user = _unprivileged_user()
        passed: list[int] = []
        if jail_state["isolated"]:
            passed = [_data_fd(WORKER_PROGRAM.read_bytes()), _data_fd(jail.seccomp_program())]
            options = {"workdir": jail.WORKDIR}
            command = jail.command(
                program_fd=passed[0],
                seccomp_fd=passed[1],
                tmpfs_bytes=int(weft_settings.SANDBOX_TMPFS_MB) * 1024 * 1024,
                arguments=[json.dumps(options)],
                hidden=hidden,
            )
        else:
            # A developer machine without bubblewrap, isolation explicitly not required.
            workdir = tempfile.mkdtemp(prefix="w-", dir=root)
            if as_user:
                os.chown(workdir, as_user["user"], as_user["group"])
            command = [
                jail.interpreter(),
                "-I",
                "-S",
                "-X",
                "utf8",
                str(WORKER_PROGRAM),
                json.dumps({"workdir": workdir}),
            ]
        self.isolation = {**jail_state, "user": weft_settings.SANDBOX_USER if as_user else _current_user()}
        try:
            self.process = subprocess.Popen(  # noqa: S603 - our own program, no shell, fixed arguments
                command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env={"LANG": "C.UTF-8"},
                cwd="/",
                close_fds=True,
                pass_fds=passed,
                start_new_session=True,
                **as_user,
            )
        except OSError as exc:
            raise SandboxUnavailable(f"The code sandbox did not start: {exc}") from exc
        finally:
            for fd in passed:
                os.close(fd)
        self.calls = 0
        #: Whom the worker is checked out for (None while idle).
        self.owner: str | None = None
        try:
            hello = self._receive(time.monotonic() + START_TIMEOUT_S)
        except _WorkerLost as exc:
            problem = self._stderr()
            self.kill()
            raise SandboxUnavailable(f"The code sandbox did not start: {problem or exc}") from exc
        if not hello.get("ready"):
            self.kill()
            raise SandboxUnavailable(hello.get("error", "The code sandbox did not start."))
        os.set_blocking(self.process.stdout.fileno(), False)

    def _stderr(self) -> str:
        """What a worker that failed to start said (bwrap explains itself there), its first line."""
        try:
            self.process.wait(timeout=1)
            return self.process.stderr.read(4096).decode("utf-8", "replace").strip().splitlines()[0]
        except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
            return ""

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def retired(self) -> bool:
        """Whether the worker left between two calls, on its own (it could not empty its directory)."""
        try:
            return self.process.wait(timeout=1) == RETIRED
        except subprocess.TimeoutExpired:
            return False

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
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
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
    """Warm workers for this process: at most ``max_workers``, ``min_idle`` kept ready, ``user_share`` per owner."""

    def __init__(
        self,
        *,
        max_workers: int,
        min_idle: int,
        require_isolation: bool,
        user_share: int | None = None,
        hidden_extensions: frozenset[str] = jail.HIDDEN_EXTENSIONS,
    ):
        self.max_workers = max_workers
        self.hidden_extensions = hidden_extensions
        self.min_idle = min(min_idle, max_workers)
        self.user_share = max(1, min(user_share or (max_workers * 3) // 4, max_workers))
        self.require_isolation = require_isolation
        self.pid = os.getpid()
        # Working directories of unisolated workers (a developer machine); unused in the jail.
        self.root = tempfile.mkdtemp(prefix="weft-sandbox-")
        os.chmod(self.root, 0o755)  # noqa: S103 - the unprivileged sandbox user must reach its directory
        self._lock = threading.Lock()
        self._idle: list[SandboxWorker] = []
        self._count = 0  # live workers plus those being started
        #: Workers started so far (a warm pool starts none per call).
        self.started = 0
        self._warming = 0  # of which started to be idle (by top_up)
        self._closed = False
        self._held: dict[str, int] = {}  # workers checked out, by owner
        self._waiting: dict[int, str] = {}  # tickets of the callers waiting, in order, and their owners
        self._tickets = itertools.count()

    # --- Checkout -------------------------------------------------------------------------------

    def _first_in_line(self) -> int | None:
        """The waiter that gets the next free worker: its owner holds the fewest, then it came first."""
        eligible = [
            (self._held.get(owner, 0), ticket)
            for ticket, owner in self._waiting.items()
            if self._held.get(owner, 0) < self.user_share
        ]
        return min(eligible)[1] if eligible else None

    def _take(self, owner: str, ticket: int) -> tuple[SandboxWorker | None, bool]:
        """For waiter ``ticket``: an idle worker, or (None, True) with a start reserved, or (None, False): wait."""
        with self._lock:
            if self._closed:
                raise SandboxUnavailable("The code sandbox is shut down.")
            if self._first_in_line() != ticket:
                return None, False
            worker = None
            while self._idle:
                candidate = self._idle.pop(0)
                if candidate.alive():
                    worker = candidate
                    break
                self._count -= 1
            if worker is None:
                if self._count >= self.max_workers:
                    return None, False
                self._count += 1
            del self._waiting[ticket]
            self._held[owner] = self._held.get(owner, 0) + 1
            if worker is not None:
                worker.owner = owner
            return worker, worker is None

    def _start(self) -> SandboxWorker:
        """Start a worker for a reserved place (blocking)."""
        with self._lock:
            self.started += 1
        try:
            return SandboxWorker(
                root=self.root, require_isolation=self.require_isolation, hidden=self.hidden_extensions
            )
        except BaseException:
            with self._lock:
                self._count -= 1
            raise

    def _give_back(self, owner: str) -> None:
        """A reserved start that brought no worker: the place is the owner's no more."""
        with self._lock:
            self._held[owner] -= 1
            if not self._held[owner]:
                del self._held[owner]

    async def acquire(self, owner: str = "") -> SandboxWorker:
        """A worker for ``owner`` (whom the call counts for), once it is this owner's turn."""
        delay = 0.001
        with self._lock:
            ticket = next(self._tickets)
            self._waiting[ticket] = owner
        try:
            while True:
                worker, may_start = self._take(owner, ticket)
                if worker is not None:
                    self._top_up_later()
                    return worker
                if may_start:
                    break
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.05)
        finally:
            with self._lock:
                self._waiting.pop(ticket, None)
        started = asyncio.get_running_loop().run_in_executor(None, self._start)
        try:
            worker = await asyncio.shield(started)
        except asyncio.CancelledError:
            started.add_done_callback(functools.partial(self._keep_if_started, owner))
            raise
        except BaseException:
            self._give_back(owner)
            raise
        worker.owner = owner
        self._top_up_later()
        return worker

    def _keep_if_started(self, owner: str, future) -> None:
        if not future.cancelled() and future.exception() is None:
            worker = future.result()
            worker.owner = owner
            self.release(worker)
        else:
            self._give_back(owner)

    def _returned(self, worker: SandboxWorker) -> None:
        """Count ``worker`` off its owner's share (under the lock)."""
        owner, worker.owner = worker.owner, None
        if owner is not None:
            self._held[owner] -= 1
            if not self._held[owner]:
                del self._held[owner]

    def release(self, worker: SandboxWorker) -> None:
        with self._lock:
            self._returned(worker)
            if not self._closed and worker.alive():
                self._idle.append(worker)
                return
            self._count -= 1
        worker.close()

    def discard(self, worker: SandboxWorker) -> None:
        """Kill a worker that is in a bad or unknown state (timed out, cancelled) and replace it."""
        worker.kill()
        with self._lock:
            self._returned(worker)
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


def _current_user() -> str:
    import pwd

    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


_pool: SandboxPool | None = None
_pool_lock = threading.Lock()


def get_pool() -> SandboxPool:
    """This process's pool (a forked process, e.g. a Celery child, makes its own)."""
    global _pool
    with _pool_lock:
        if _pool is None or _pool.pid != os.getpid():
            _pool = SandboxPool(
                max_workers=int(weft_settings.SANDBOX_MAX_WORKERS),
                min_idle=int(weft_settings.SANDBOX_MIN_IDLE),
                require_isolation=isolation_required(),
                user_share=weft_settings.SANDBOX_USER_SHARE,
            )
        return _pool


def isolation_required() -> bool:
    """Whether code must not run where it cannot be isolated (``SANDBOX_REQUIRE_ISOLATION``)."""
    return bool(weft_settings.SANDBOX_REQUIRE_ISOLATION)


def prewarm() -> None:
    """Say whether code can be isolated here, and start the idle workers now (call it when a
    process that executes runs starts), not on the first code node."""
    state = jail.status()
    if state["isolated"]:
        logger.info("Code sandbox: %s, limits by %s.", state["tool"], state["limits"])
    elif isolation_required():
        logger.error("Code nodes cannot run in this process: %s.", state["problem"])
        return
    else:
        logger.warning("Code nodes run UNISOLATED (SANDBOX_REQUIRE_ISOLATION is off): %s.", state["problem"])
    get_pool().top_up()


@atexit.register
def shutdown() -> None:
    """Stop this process's workers."""
    global _pool
    with _pool_lock:
        pool, _pool = _pool, None
    if pool is not None and pool.pid == os.getpid():
        pool.close()


async def run_code(
    *, code: str, inputs: dict, limits: Limits | None = None, owner: str = "", pool: SandboxPool | None = None
) -> SandboxResult:
    """Run ``main(**inputs)`` from ``code`` in a sandbox and return the dict it returned.

    The contract for the user's code: define ``def main(**inputs) -> dict``; the inputs and the
    result are JSON (the result at most ``SANDBOX_RESULT_MAX_BYTES``); the standard library can be
    imported (the modules of ``_zygote.PRELOADED`` at no cost), but for the extension modules the
    jail leaves out (``ctypes`` among them, see ``jail.HIDDEN_EXTENSIONS``); there is no network,
    no process creation, no thread, and an empty, private working directory. What it prints is
    returned as ``output`` (the first 8 KiB). ``owner`` is whom the call counts for in the
    pool's fair share (the user a run counts for); ``pool`` is this process's unless given.

    Raises :class:`SandboxTimeout` (wall or CPU limit), :class:`SandboxMemoryExceeded`,
    :class:`SandboxError` (anything else the code did wrong), :class:`SandboxUnavailable`
    (a worker failed: retryable) or :class:`SandboxNotIsolated`.
    Cancelling the awaiting task kills the worker, and the code with it.
    """
    resolved = (limits or Limits()).resolved()
    payload = json.dumps({"code": code, "inputs": inputs}).encode()
    pool = pool or get_pool()
    for _ in range(RETIRED_RETRIES):
        worker = await pool.acquire(owner)
        answered = False
        try:
            status, result, output = await worker.call(
                limits=resolved, payload=payload, timeout_s=resolved["wall_s"] + ANSWER_GRACE_S
            )
            answered = True
        except _WorkerLost as exc:
            if worker.retired():
                continue  # it left before reading this call (an earlier call's mess): take another
            raise SandboxUnavailable(f"The code sandbox stopped answering: {exc}") from exc
        finally:
            if answered:
                pool.release(worker)
            else:
                pool.discard(worker)
        return _outcome(status, result, output.decode("utf-8", "replace"), resolved)
    raise SandboxUnavailable("The code sandbox's workers kept retiring.")


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
