"""The sandbox worker program: run as ``python -I -S -X utf8 zygote.py '<json options>'``. Standard library only.

It is started by :mod:`workflows.engine.sandbox.pool`, inside the jail that
:mod:`workflows.engine.sandbox.jail` describes (bubblewrap: its own namespaces, a read-only root
holding only the interpreter and its standard library, a seccomp allow-list, no environment),
as PID 1 of its PID namespace, and kept warm. It imports the modules user code may use, then
waits for calls. Run without the jail (``SANDBOX_REQUIRE_ISOLATION`` off, a developer machine
without bubblewrap) it works the same, unisolated.

It never runs user code itself. Each call gets a fresh child, forked ahead of time (right after
the previous call, so a call does not wait for fork and setup): the child gets rlimits (CPU
time, address space, file size, no new processes or threads, few files), waits for the request
on its stdin, runs ``main(**inputs)`` from the user's code in the working directory and writes
the JSON result to fd 3. The worker enforces the wall-clock limit, answers as soon as the result
is complete, then kills and reaps the child and empties the working directory. Being PID 1, it
receives no signal its children send (the kernel drops them), and what the code leaves in the
working directory (a FIFO or a directory instead of the output file, a directory without
permissions) is handled or wiped; if the directory cannot be emptied, the worker retires between
two calls (exit status :data:`RETIRED`, before reading another request) and the pool starts another.
The server-side pool kills the whole worker (and with it the child) on cancellation or if the
worker stops answering.

The worker never parses user data, and wipes every buffer that held some: the next call's child
is forked from it and must not find the previous call's code, inputs, result or output in the
memory it inherits. So a call is, on stdin, a frame of limits (JSON, no user data) and a sealed
frame of ``{"code", "inputs"}`` JSON that is only relayed to the child; on stdout, a status frame
(``{"ended": "result" | "timeout" | "cpu" | "too_large" | "crashed", "wall_s", ...}``), the child's
result frame as it wrote it (empty unless ``ended`` is ``result``) and a frame of what it printed.
A frame is a 4-byte big-endian length and the bytes.
"""

import builtins
import contextlib
import importlib
import json
import linecache
import os
import resource
import select
import signal
import stat
import struct
import sys
import time
import traceback

PRELOADED = (
    "_strptime",
    "array",
    "base64",
    "binascii",
    "bisect",
    "calendar",
    "cmath",
    "collections",
    "colorsys",
    "copy",
    "csv",
    "dataclasses",
    "datetime",
    "decimal",
    "difflib",
    "encodings.ascii",
    "encodings.base64_codec",
    "encodings.cp1252",
    "encodings.hex_codec",
    "encodings.idna",
    "encodings.latin_1",
    "encodings.utf_16",
    "encodings.utf_32",
    "enum",
    "fractions",
    "functools",
    "hashlib",
    "heapq",
    "hmac",
    "html",
    "itertools",
    "math",
    "numbers",
    "operator",
    "pprint",
    "random",
    "re",
    "secrets",
    "statistics",
    "string",
    "textwrap",
    "typing",
    "unicodedata",
    "urllib.parse",
    "uuid",
    "zlib",
)

RESULT_FD = 3
OUTPUT_NAME = ".output"
OUTPUT_SHOWN = 8192
#: The worker's exit status when it leaves between two calls (its directory could not be emptied).
RETIRED = 75


def write_frames(fd: int, *frames: bytes | bytearray) -> None:
    """Write ``frames`` in one system call where the pipe takes them (one wake-up of the reader).

    Headers and bodies are handed over as separate buffers: joining them would leave a copy of
    a body that nobody wipes."""
    parts = [memoryview(part) for frame in frames for part in (struct.pack(">I", len(frame)), frame)]
    while parts:
        written = os.writev(fd, parts)
        while parts and written >= len(parts[0]):
            written -= len(parts[0])
            parts.pop(0)
        if written:
            parts[0] = parts[0][written:]


def write_frame(fd: int, data: bytes | bytearray) -> None:
    write_frames(fd, data)


def send(message: dict) -> None:
    write_frame(1, json.dumps(message).encode())


def _fill(fd: int, view: memoryview) -> bool:
    """Read exactly ``len(view)`` bytes into ``view`` (no intermediate bytes objects); False at EOF."""
    while len(view):
        count = os.readv(fd, [view])
        if not count:
            return False
        view = view[count:]
    return True


def _frame_size(fd: int) -> int | None:
    header = bytearray(4)
    return struct.unpack(">I", header)[0] if _fill(fd, memoryview(header)) else None


def receive() -> dict | None:
    """A control message (limits, never user data)."""
    size = _frame_size(0)
    body = bytearray(size or 0)
    if size is None or not _fill(0, memoryview(body)):
        return None
    return json.loads(body)


def receive_sealed(fd: int) -> bytearray | None:
    """A frame of user data, read into a buffer the caller must :func:`wipe`."""
    size = _frame_size(fd)
    if size is None:
        return None
    buffer = bytearray(size)
    if not _fill(fd, memoryview(buffer)):
        wipe(buffer)
        return None
    return buffer


def wipe(buffer: bytearray | None) -> None:
    """Overwrite user data in place before the buffer is freed: children forked later see zeros."""
    if buffer:
        memoryview(buffer)[:] = bytes(len(buffer))


class Worker:
    def __init__(self, options: dict):
        self.options = options
        self.workdir = options["workdir"]
        self.child: Child | None = None

    # --- One call: a child forked ahead of time waits for it -------------------------------------

    def prefork(self) -> None:
        """Fork the child for the next call now, so that a call does not wait for fork and setup."""
        request_r, request_w = os.pipe()
        result_r, result_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                os.close(request_w)
                os.close(result_r)
                self._child(request_r, result_w)
            finally:
                os._exit(70)
        os.close(request_r)
        os.close(result_w)
        self.child = Child(pid=pid, pidfd=os.pidfd_open(pid), request_w=request_w, result_r=result_r)

    def run(self, limits: dict, payload: bytearray) -> tuple[dict, bytearray | None]:
        """Hand the payload to the waiting child; return how it ended and its (sealed) result frame."""
        child = self.child
        started = time.monotonic()
        with contextlib.suppress(BrokenPipeError):  # the child is gone: _wait reports how it ended
            write_frames(child.request_w, json.dumps(limits).encode(), payload)
        status, result = self._wait(child, started + float(limits["wall_s"]), limits)
        status["wall_s"] = round(time.monotonic() - started, 4)
        return status, result

    def recycle(self) -> bool:
        """After answering: end the child, wipe its directory, fork the next one; False to retire."""
        child, self.child = self.child, None
        child.close()
        if not self.empty_workdir():
            return False
        self.prefork()
        return True

    def _wait(self, child: "Child", deadline: float, limits: dict) -> tuple[dict, bytearray | None]:
        """Relay the child's result frame without looking into it; or say why there is none."""
        watched = [child.result_r, child.pidfd, 0]
        header = bytearray(4)
        got_header = 0
        result: bytearray | None = None
        got = 0
        limit = int(limits["result_max_bytes"])
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                child.kill()
                wipe(result)
                return {"ended": "timeout", "message": "wall-clock limit reached"}, None
            ready, _, _ = select.select(watched, [], [], remaining)
            if 0 in ready:
                # The server sends nothing while a call runs: this is its end (EOF). Go too.
                child.kill()
                sys.exit(0)
            if child.result_r in ready:
                if result is None:
                    count = os.readv(child.result_r, [memoryview(header)[got_header:]])
                    got_header += count
                    if got_header == 4:
                        size = struct.unpack(">I", header)[0]
                        if size > limit:
                            child.kill()
                            return {"ended": "too_large", "message": f"the result is over {limit} bytes"}, None
                        result = bytearray(size)
                else:
                    count = os.readv(child.result_r, [memoryview(result)[got:]])
                    got += count
                if result is not None and got == len(result):
                    return {"ended": "result"}, result
                if not count:
                    watched.remove(child.result_r)
            elif child.pidfd in ready:
                wipe(result)
                return self._ended(child, limits), None

    @staticmethod
    def _ended(child: "Child", limits: dict) -> dict:
        status, cpu_s = child.reap()
        if os.WIFSIGNALED(status):
            number = os.WTERMSIG(status)
            if number == signal.SIGXCPU or (number == signal.SIGKILL and cpu_s >= limits["cpu_s"]):
                return {"ended": "cpu", "message": "CPU-time limit reached"}
            return {"ended": "crashed", "message": f"killed by {signal.Signals(number).name}"}
        return {"ended": "crashed", "message": f"exited with status {os.WEXITSTATUS(status)}"}

    def output(self) -> bytearray:
        """What the code printed (the first ``OUTPUT_SHOWN`` bytes), sealed like a result.

        The code may have replaced the file by anything: only a regular file is read, and never
        waited on (a FIFO would block)."""
        buffer = bytearray(OUTPUT_SHOWN)
        try:
            fd = os.open(os.path.join(self.workdir, OUTPUT_NAME), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            return bytearray()
        try:
            count = os.readv(fd, [buffer]) if stat.S_ISREG(os.fstat(fd).st_mode) else 0
        except OSError:
            count = 0
        finally:
            os.close(fd)
        shown = buffer[:count]
        wipe(buffer)
        return shown

    def empty_workdir(self) -> bool:
        """Empty the working directory, whatever the code left there; False if something stays."""
        try:
            os.chmod(self.workdir, 0o700)
            for entry in os.scandir(self.workdir):
                _remove(entry.path)
            return not os.listdir(self.workdir)
        except (OSError, RecursionError):
            return False

    # --- In the child ---------------------------------------------------------------------------

    def _child(self, request_r: int, result_w: int) -> None:
        os.dup2(request_r, 0)
        os.dup2(result_w, RESULT_FD)
        os.chdir(self.workdir)
        output = os.open(OUTPUT_NAME, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        os.dup2(output, 1)
        os.dup2(output, 2)
        os.closerange(RESULT_FD + 1, 65536)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        resource.setrlimit(resource.RLIMIT_NOFILE, (32, 32))
        # No process and no thread: fork bombs end at the first fork.
        resource.setrlimit(resource.RLIMIT_NPROC, (0, 0))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        os.environ.clear()
        os.environ.update({"HOME": self.workdir, "TMPDIR": self.workdir})

        limits = receive()
        payload = receive_sealed(0)
        if limits is None or payload is None:
            os._exit(0)
        request = json.loads(payload)
        # Stdin is the request pipe: nothing more comes on it.
        os.close(0)
        cpu = max(1, int(limits["cpu_s"] + 0.999))
        memory = int(limits["memory_mb"]) * 1024 * 1024
        file_size = int(limits["file_mb"]) * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_size, file_size))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        reply = _call_user_code(request["code"], request["inputs"])
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        write_frame(RESULT_FD, reply)
        # Wait for the worker's SIGKILL rather than exit: tearing down the address space takes
        # about a millisecond, and the worker, woken on this CPU by the write, would wait for it.
        while True:
            signal.pause()


class Child:
    """The worker's handle on a forked child: its pid, a pidfd to wait on, the two pipes."""

    def __init__(self, *, pid: int, pidfd: int, request_w: int, result_r: int):
        self.pid, self.pidfd, self.request_w, self.result_r = pid, pidfd, request_w, result_r
        self.status: tuple[int, float] | None = None

    def kill(self) -> None:
        if self.status is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)

    def reap(self) -> tuple[int, float]:
        if self.status is None:
            _, status, usage = os.wait4(self.pid, 0)
            self.status = (status, usage.ru_utime + usage.ru_stime)
        return self.status

    def close(self) -> None:
        self.kill()
        self.reap()
        for fd in (self.pidfd, self.request_w, self.result_r):
            os.close(fd)


def _user_traceback(exc: BaseException) -> str:
    frames = [frame for frame in traceback.extract_tb(exc.__traceback__) if frame.filename == "<code>"]
    lines = traceback.format_list(frames) if frames else []
    return "".join(["Traceback (most recent call last):\n", *lines, *traceback.format_exception_only(exc)])


def _call_user_code(source: str, inputs: dict) -> bytes:
    linecache.cache["<code>"] = (len(source), None, source.splitlines(True), "<code>")
    try:
        namespace = {"__name__": "__weft_code__", "__builtins__": builtins}
        exec(compile(source, "<code>", "exec"), namespace)  # noqa: S102 - this is the sandbox child
        entry = namespace.get("main")
        if not callable(entry):
            return json.dumps({"ok": False, "kind": "invalid_code", "message": "define main(**inputs)"}).encode()
        result = entry(**inputs)
        if not isinstance(result, dict):
            message = f"main() must return a dict, not {type(result).__name__}"
            return json.dumps({"ok": False, "kind": "invalid_result", "message": message}).encode()
        try:
            return json.dumps({"ok": True, "result": result}, allow_nan=False).encode()
        except (TypeError, ValueError) as exc:
            message = f"main() returned a dict that is not JSON: {exc}"
            return json.dumps({"ok": False, "kind": "invalid_result", "message": message}).encode()
    except MemoryError:
        return b'{"ok": false, "kind": "memory", "message": "memory limit reached"}'
    except BaseException as exc:
        reply = {
            "ok": False,
            "kind": "exception",
            "type": type(exc).__name__,
            "message": str(exc)[:2000],
            "traceback": _user_traceback(exc)[-8000:],
        }
        return json.dumps(reply, default=str).encode()


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        os.chmod(path, 0o700)
        for entry in os.scandir(path):
            _remove(entry.path)
        os.rmdir(path)
    else:
        os.unlink(path)


def main() -> None:
    options = json.loads(sys.argv[1])
    # As PID 1 of its namespace the worker gets only the signals it handles: handle none.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    for name in PRELOADED:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    worker = Worker(options)
    if not worker.empty_workdir():
        send({"ready": False, "error": f"the working directory {worker.workdir} is not usable"})
        return
    worker.prefork()
    send({"ready": True, "pid": os.getpid(), "uid": os.getuid()})
    while (limits := receive()) is not None:
        payload = receive_sealed(0)
        if payload is None:
            break
        try:
            status, result = worker.run(limits, payload)
        finally:
            wipe(payload)
        output = worker.output()
        write_frames(1, json.dumps(status).encode(), result or b"", output)
        wipe(result)
        wipe(output)
        if not worker.recycle():
            sys.exit(RETIRED)


if __name__ == "__main__":
    main()
