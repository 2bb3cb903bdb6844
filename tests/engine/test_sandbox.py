"""The code sandbox: what user code can do (return a dict, print) and what it cannot.

The isolation needs root (namespaces, chroot, a uid of its own). Without it the sandbox refuses
to run code at all (``SANDBOX_REQUIRE_ISOLATION``), so these tests fail rather than pass on a
sandbox that is not isolated.
"""

import asyncio
import os
import time
from pathlib import Path

import pytest

from workflows.engine.sandbox import (
    Limits,
    SandboxError,
    SandboxMemoryExceeded,
    SandboxNotIsolated,
    SandboxTimeout,
    get_pool,
    run_code,
    shutdown,
)
from workflows.engine.sandbox.pool import DEFAULTS, SandboxPool

PROJECT_FILE = Path(__file__).resolve().parents[2] / "manage.py"
UID_BASE = DEFAULTS["SANDBOX_UID_BASE"]


@pytest.fixture
def fresh_pool():
    """Workers started after the test's setup (e.g. after an environment variable is set)."""
    shutdown()
    yield
    shutdown()


def sandbox_processes() -> dict[int, dict]:
    """Processes running as a sandbox uid, and the workers (zygotes) of this test process."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
        if fields["State"].startswith("Z"):
            continue  # dead, waiting to be reaped by whoever adopted it
        uid = int(fields["Uid"].split()[0])
        ppid = int(fields["PPid"])
        if uid >= UID_BASE or ("_zygote.py" in cmdline and ppid == os.getpid()):
            found[int(entry.name)] = {"uid": uid, "ppid": ppid, "worker": "_zygote.py" in cmdline and uid == 0}
    return found


def test_this_machine_can_isolate_the_sandbox():
    assert os.geteuid() == 0, "The sandbox isolates code with namespaces, chroot and setuid: run the tests as root."


async def test_good_code_returns_its_dict_and_what_it_printed():
    code = "import math\ndef main(**inputs):\n    print('computing')\n    return {'root': math.sqrt(inputs['n'])}"
    outcome = await run_code(code=code, inputs={"n": 16})
    assert outcome.result == {"root": 4.0}
    assert outcome.output == "computing\n"


async def test_the_code_runs_in_another_process_under_an_unprivileged_uid():
    code = "import os\ndef main():\n    return {'pid': os.getpid(), 'uid': os.getuid(), 'euid': os.geteuid()}"
    result = (await run_code(code=code, inputs={})).result
    assert result["pid"] != os.getpid()
    assert result["uid"] >= UID_BASE
    assert result["euid"] == result["uid"]


async def test_the_code_cannot_read_the_servers_environment(monkeypatch, fresh_pool):
    monkeypatch.setenv("WEFT_SANDBOX_CANARY", "canary-7f3a9c")
    code = """
import os
def main():
    seen = {"environ": dict(os.environ)}
    for path in ("/proc/1/environ", "/proc/self/environ", "/proc/%d/environ" % os.getppid()):
        try:
            with open(path, "rb") as handle:
                seen[path] = handle.read().decode("latin-1")
        except OSError as exc:
            seen[path] = type(exc).__name__
    return seen
"""
    result = (await run_code(code=code, inputs={})).result
    assert "canary-7f3a9c" not in str(result)
    assert set(result["environ"]) <= {"HOME", "TMPDIR", "LANG", "LC_CTYPE"}
    assert result["/proc/1/environ"] == "FileNotFoundError"


async def test_the_code_cannot_read_the_projects_files(tmp_path):
    secret = Path("/tmp") / f"weft-sandbox-secret-{os.getpid()}"
    secret.write_text("root-only-secret")
    secret.chmod(0o600)
    code = """
import os
def main(paths):
    seen = {"root": sorted(os.listdir("/")), "cwd": os.getcwd()}
    for path in paths:
        try:
            with open(path) as handle:
                seen[path] = handle.read()
        except OSError as exc:
            seen[path] = type(exc).__name__
    return seen
"""
    try:
        paths = [str(PROJECT_FILE), str(secret), "/etc/passwd", "/proc/self/status"]
        result = (await run_code(code=code, inputs={"paths": paths})).result
    finally:
        secret.unlink()
    assert PROJECT_FILE.is_file()
    assert result[str(PROJECT_FILE)] == "FileNotFoundError"
    assert result[str(secret)] == "FileNotFoundError"
    assert result["/etc/passwd"] == "FileNotFoundError"
    assert result["/proc/self/status"] == "FileNotFoundError"
    assert result["root"] == ["w"]
    assert "root-only-secret" not in str(result)


async def test_the_code_cannot_reach_the_network_even_through_libc(listener):
    # ctypes calls socket(2)/connect(2) directly, past any Python-level restriction: only the
    # kernel (an empty network namespace) stands in the way.
    code = """
import ctypes, struct
def main(port):
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.socket(2, 1, 0)
    if fd < 0:
        return {"socket": ctypes.get_errno(), "connect": None}
    address = struct.pack("<H", 2) + struct.pack("!H", port) + bytes([127, 0, 0, 1]) + bytes(8)
    result = libc.connect(fd, address, len(address))
    return {"socket": 0, "connect": result, "errno": ctypes.get_errno()}
"""
    result = (await run_code(code=code, inputs={"port": listener.port})).result
    assert result["connect"] in (-1, None)
    with pytest.raises(SandboxError, match="No module named 'socket'"):
        await run_code(code="def main():\n    import socket\n    return {}", inputs={})
    await asyncio.sleep(0.2)
    assert listener.connections == 0


async def test_the_code_cannot_start_processes():
    code = """
import os
def main():
    seen = {}
    attempts = {
        "fork": lambda: os.fork(),
        "spawn": lambda: os.posix_spawn("/bin/sh", ["sh", "-c", "true"], {}),
        "exec": lambda: os.execv("/bin/sh", ["sh"]),
    }
    for name, attempt in attempts.items():
        try:
            attempt()
            seen[name] = "started"
        except OSError as exc:
            seen[name] = type(exc).__name__
    try:
        import subprocess
        seen["subprocess"] = "imported"
    except ImportError:
        seen["subprocess"] = "ImportError"
    return seen
"""
    result = (await run_code(code=code, inputs={})).result
    # No new process (RLIMIT_NPROC 0 for a uid of its own), and nothing to execute (an empty root).
    assert result["fork"] == "BlockingIOError"
    assert result["spawn"] in ("BlockingIOError", "FileNotFoundError")
    assert result["exec"] == "FileNotFoundError"
    assert result["subprocess"] == "ImportError"


async def test_an_infinite_loop_is_killed_by_the_cpu_limit():
    # The wall limit is far away: what stops the loop is its CPU time (slower on a busy machine).
    with pytest.raises(SandboxTimeout, match="CPU"):
        await run_code(code="def main():\n    while True:\n        pass", inputs={}, limits=Limits(cpu_s=1, wall_s=60))


async def test_a_sleeping_code_is_killed_by_the_wall_clock_limit():
    started = time.monotonic()
    with pytest.raises(SandboxTimeout, match="wall-clock"):
        await run_code(code="import time\ndef main():\n    time.sleep(60)", inputs={}, limits=Limits(wall_s=0.5))
    assert time.monotonic() - started < 3


async def test_the_memory_limit_holds():
    code = "def main():\n    hog = bytearray(600 * 1024 * 1024)\n    return {'size': len(hog)}"
    with pytest.raises(SandboxMemoryExceeded):
        await run_code(code=code, inputs={}, limits=Limits(memory_mb=128))


async def test_a_file_written_by_one_call_is_gone_for_the_next():
    write = "def main():\n    open('note.txt', 'w').write('left behind')\n    return {'written': True}"
    read = "import os\ndef main():\n    return {'files': sorted(os.listdir('.'))}"
    assert (await run_code(code=write, inputs={})).result == {"written": True}
    for _ in range(3):
        assert "note.txt" not in (await run_code(code=read, inputs={})).result["files"]


@pytest.mark.parametrize(
    ("code", "kind", "message"),
    [
        ("def main():\n    return {'a': 1} / 0", "exception", "TypeError"),
        ("def main():\n    raise ValueError('bad input')", "exception", "ValueError: bad input"),
        ("def main(:\n    pass", "exception", "SyntaxError"),
        ("x = 1", "invalid_code", "main"),
        ("def main():\n    return [1, 2]", "invalid_result", "dict"),
        ("def main():\n    return {'f': float('nan')}", "invalid_result", "JSON"),
        ("def main():\n    return {'o': object()}", "invalid_result", "JSON"),
        ("import sys\ndef main():\n    sys.exit(3)", "exception", "SystemExit"),
    ],
)
async def test_broken_code_fails_with_what_went_wrong(code, kind, message):
    with pytest.raises(SandboxError, match=message) as failed:
        await run_code(code=code, inputs={})
    assert failed.value.kind == kind


async def test_a_traceback_shows_the_users_line():
    with pytest.raises(SandboxError) as failed:
        await run_code(code="def main(**inputs):\n    return {'x': inputs['missing']}", inputs={})
    assert 'File "<code>", line 2, in main' in failed.value.traceback
    assert "inputs['missing']" in failed.value.traceback


async def test_a_result_past_the_cap_is_refused(settings):
    settings.WEFT = {**settings.WEFT, "SANDBOX_RESULT_MAX_BYTES": 1000}
    with pytest.raises(SandboxError, match="over 1000 bytes"):
        await run_code(code="def main():\n    return {'x': 'y' * 5000}", inputs={})


async def test_workers_stay_warm_and_are_reused():
    code = "import os, time\ndef main():\n    time.sleep(0.01)\n    return {'worker': os.getppid()}"
    await run_code(code=code, inputs={})
    started = time.monotonic()
    workers = {(await run_code(code=code, inputs={})).result["worker"] for _ in range(40)}
    elapsed = time.monotonic() - started
    assert len(workers) <= get_pool().max_workers
    assert len(workers) <= 3
    # 40 x 10 ms of sleep is 0.4 s; starting an interpreter per call would add 40 x 50-200 ms.
    assert elapsed < 2.0, f"40 warm calls took {elapsed:.2f} s"


async def test_the_worker_idle_longest_is_handed_out_first():
    # The one released last is still reaping its child and forking the next: a chain of code
    # nodes would wait for it at every node.
    pool = SandboxPool(max_workers=2, min_idle=0, require_isolation=True)
    try:
        first, second = await pool.acquire(), await pool.acquire()
        pool.release(first)
        pool.release(second)
        assert await pool.acquire() is first
        assert await pool.acquire() is second
    finally:
        for worker in (first, second):
            worker.kill()
        pool.close()


async def test_cancelling_a_call_kills_its_worker_and_the_code():
    before = {pid for pid, info in sandbox_processes().items() if info["worker"]}
    call = asyncio.create_task(run_code(code="import time\ndef main():\n    time.sleep(60)", inputs={}))
    await asyncio.sleep(0.5)
    during = {pid for pid, info in sandbox_processes().items() if info["worker"]}
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    await asyncio.sleep(0.3)
    after = sandbox_processes()
    killed = (before | during) - set(after)
    assert killed, "the worker that ran the cancelled call is still alive"
    for worker in killed:
        assert all(info["uid"] != UID_BASE + worker for info in after.values()), "its child outlived it"


async def test_concurrent_calls_run_in_parallel():
    code = "import time\ndef main(i):\n    time.sleep(0.3)\n    return {'i': i}"
    started = time.monotonic()
    results = await asyncio.gather(*(run_code(code=code, inputs={"i": i}) for i in range(4)))
    assert [r.result["i"] for r in results] == [0, 1, 2, 3]
    assert time.monotonic() - started < 1.1


async def test_without_isolation_no_code_runs(settings, fresh_pool):
    # A tmpfs that cannot be mounted stands for any step of the isolation failing (e.g. not root).
    settings.WEFT = {**settings.WEFT, "SANDBOX_TMPFS_MB": -1}
    with pytest.raises(SandboxNotIsolated, match="cannot isolate"):
        await run_code(code="def main():\n    return {'ran': True}", inputs={})


# Reads every readable page near the heap (brk area and Python's object arenas) without crashing on
# unmapped ones: write(2) of an unmapped address to a pipe fails with EFAULT instead of a segfault.
MEMORY_SCAN = """
import ctypes, gc, os
def main(needle_reversed):
    # The needle is never whole in this process's memory: its two halves are looked for in turn.
    middle = len(needle_reversed) // 2
    first, second = needle_reversed[middle:][::-1].encode(), needle_reversed[:middle][::-1].encode()

    def found(data):
        position = data.find(first)
        while position != -1:
            if data[position + len(first) : position + len(first) + len(second)] == second:
                return True
            position = data.find(first, position + 1)
        return False

    libc = ctypes.CDLL(None, use_errno=True)
    libc.sbrk.restype = ctypes.c_void_p
    libc.write.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t]
    page = 4096
    regions = set()
    brk = libc.sbrk(0)
    regions.update(range(brk - 256 * 2**20, brk, 2**20))
    for obj in gc.get_objects():
        regions.add(id(obj) // 2**20 * 2**20)
    read_end, write_end = os.pipe()
    pages = hits = 0
    for start in sorted(regions):
        tail = b""
        for address in range(start, start + 2**20, page):
            if libc.write(write_end, address, page) != page:
                tail = b""
                continue
            data = os.read(read_end, page)
            pages += 1
            if found(tail + data):
                hits += 1
            tail = data[-64:]
    return {"pages": pages, "hits": hits}
"""


async def test_a_call_finds_nothing_of_an_earlier_call_in_its_memory():
    secret = f"weft-secret-{os.urandom(8).hex()}"
    leak = "def main(secret):\n    print(secret)\n    return {'echo': secret, 'again': secret * 3}"
    for _ in range(3):
        outcome = await run_code(code=leak, inputs={"secret": secret})
        assert outcome.result["echo"] == secret
    scan = await run_code(code=MEMORY_SCAN, inputs={"needle_reversed": secret[::-1]}, limits=Limits(wall_s=60))
    assert scan.result["pages"] > 1000
    assert scan.result["hits"] == 0
