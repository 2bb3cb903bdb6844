"""The code sandbox: what user code can do (return a dict, print) and what it cannot.

The jail is bubblewrap with a seccomp allow-list, started by an unprivileged user (a test run
as root starts it as ``SANDBOX_USER``). Without bubblewrap the sandbox refuses to run code at
all (``SANDBOX_REQUIRE_ISOLATION``), so these tests fail rather than pass on a sandbox that is
not isolated. The escapes are in ``test_sandbox_escape.py``.
"""

import asyncio
import os
from pathlib import Path

import pytest

from workflows.engine.sandbox import (
    Limits,
    SandboxError,
    SandboxMemoryExceeded,
    SandboxNotIsolated,
    SandboxTimeout,
    get_pool,
    jail,
    run_code,
    shutdown,
)
from workflows.engine.sandbox.pool import SandboxPool

PROJECT_FILE = Path(__file__).resolve().parents[2] / "manage.py"


@pytest.fixture
def fresh_pool():
    """Workers started after the test's setup (e.g. after an environment variable is set)."""
    shutdown()
    yield
    shutdown()


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (by /proc's parent links)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = dict(line.split(":\t", 1) for line in (entry / "status").read_text().splitlines() if ":\t" in line)
        except OSError:
            continue
        if fields["State"].startswith("Z"):
            continue
        children.setdefault(int(fields["PPid"]), []).append(int(entry.name))
    found, queue = set(), [pid]
    while queue:
        for child in children.get(queue.pop(), []):
            found.add(child)
            queue.append(child)
    return found


def test_this_machine_can_isolate_the_sandbox():
    state = jail.status()
    assert state["isolated"], state["problem"]
    assert state["tool"] == "bubblewrap"
    assert state["limits"] == "rlimits"


async def test_good_code_returns_its_dict_and_what_it_printed():
    code = "import math\ndef main(**inputs):\n    print('computing')\n    return {'root': math.sqrt(inputs['n'])}"
    outcome = await run_code(code=code, inputs={"n": 16})
    assert outcome.result == {"root": 4.0}
    assert outcome.output == "computing\n"


async def test_the_code_runs_unprivileged_under_its_worker_in_a_pid_namespace_of_their_own():
    code = "import os\ndef main():\n    return {'pid': os.getpid(), 'ppid': os.getppid(), 'uid': os.getuid()}"
    result = (await run_code(code=code, inputs={})).result
    assert result["uid"] != 0
    # The worker is PID 1 of its namespace: no process of the host is numbered in it.
    assert result["ppid"] == 1
    assert result["pid"] != os.getpid()


async def test_no_process_of_the_sandbox_runs_as_root():
    await run_code(code="def main():\n    return {}", inputs={})
    workers = [worker.pid for worker in get_pool()._idle]
    assert workers
    for pid in {*workers, *(child for worker in workers for child in descendants(worker))}:
        status = Path(f"/proc/{pid}/status").read_text()
        uids = next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:]
        assert "0" not in uids, f"process {pid} runs with uid 0"


async def test_the_code_cannot_read_the_servers_environment(monkeypatch, fresh_pool):
    monkeypatch.setenv("WEFT_SANDBOX_CANARY", "canary-7f3a9c")
    code = """
import os
def main():
    seen = {"environ": dict(os.environ)}
    for path in ("/proc/1/environ", "/proc/self/environ"):
        try:
            with open(path, "rb") as handle:
                seen[path] = handle.read().decode("latin-1")
        except OSError as exc:
            seen[path] = type(exc).__name__
    return seen
"""
    result = (await run_code(code=code, inputs={})).result
    assert "canary-7f3a9c" not in str(result)
    assert set(result["environ"]) <= {"HOME", "TMPDIR"}
    assert result["/proc/1/environ"] == "FileNotFoundError"


async def test_the_code_sees_no_file_of_the_host_but_python():
    secret = Path("/tmp") / f"weft-sandbox-secret-{os.getpid()}"
    secret.write_text("root-only-secret")
    secret.chmod(0o644)  # readable by anyone: only the jail keeps it out
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
        paths = [str(PROJECT_FILE), str(secret), "/etc/passwd", "/proc/self/status", "/bin/sh"]
        result = (await run_code(code=code, inputs={"paths": paths})).result
    finally:
        secret.unlink()
    assert PROJECT_FILE.is_file()
    for path in paths:
        assert result[path] == "FileNotFoundError", path
    assert set(result["root"]) <= {"dev", "lib", "lib64", "sandbox", "usr", "w"}
    assert result["cwd"] == "/w"
    assert "root-only-secret" not in str(result)


async def test_the_standard_library_is_there_read_only_and_ctypes_is_not():
    code = """
import os
def main():
    seen = {}
    for module in ("ctypes", "_ctypes", "sqlite3", "statistics", "zoneinfo"):
        try:
            __import__(module)
            seen[module] = "imported"
        except ImportError as exc:
            seen[module] = "ImportError"
    try:
        open(os.__file__, "a")
        seen["write"] = "written"
    except OSError as exc:
        seen["write"] = type(exc).__name__
    return seen
"""
    result = (await run_code(code=code, inputs={})).result
    assert result["ctypes"] == result["_ctypes"] == "ImportError"
    assert result["statistics"] == result["zoneinfo"] == "imported"
    assert result["write"] in ("OSError", "PermissionError")


async def test_an_infinite_loop_is_killed_by_the_cpu_limit():
    # The wall limit is far away: what stops the loop is its CPU time (slower on a busy machine).
    with pytest.raises(SandboxTimeout, match="CPU"):
        await run_code(code="def main():\n    while True:\n        pass", inputs={}, limits=Limits(cpu_s=1, wall_s=60))


async def test_a_sleeping_code_is_killed_by_the_wall_clock_limit():
    with pytest.raises(SandboxTimeout, match="wall-clock"):
        await run_code(code="import time\ndef main():\n    time.sleep(60)", inputs={}, limits=Limits(wall_s=0.5))


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
    code = "def main():\n    return {}"
    pool = get_pool()
    for _ in range(3):  # a call takes an idle worker: the pool starts one more to keep min_idle
        await run_code(code=code, inputs={})
    while pool.idle_count() <= pool.min_idle:
        await asyncio.sleep(0.02)
    started = pool.started
    for _ in range(40):
        await run_code(code=code, inputs={})
    # The same warm workers served all 40 calls: none was started for a call.
    assert pool.started == started


async def test_the_worker_idle_longest_is_handed_out_first():
    # The one released last is still reaping its child and forking the next: a chain of code
    # nodes would wait for it at every node.
    pool = SandboxPool(max_workers=2, min_idle=0, require_isolation=True, user_share=2)
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


@pytest.mark.usefixtures("fresh_pool")  # the shared pool starts no worker while this one is watched
async def test_cancelling_a_call_kills_its_worker_and_the_code():
    pool = SandboxPool(max_workers=1, min_idle=0, require_isolation=True)
    before = descendants(os.getpid())
    try:
        call = asyncio.create_task(run_code(code="import time\ndef main():\n    time.sleep(60)", inputs={}, pool=pool))
        # The worker (bwrap), its PID 1 and the child running the code.
        for _ in range(100):
            during = descendants(os.getpid()) - before
            if len(during) >= 3:
                break
            await asyncio.sleep(0.05)
        assert len(during) >= 3
        await asyncio.sleep(0.2)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        for _ in range(50):
            if not during & descendants(os.getpid()):
                break
            await asyncio.sleep(0.1)
        assert not during & descendants(os.getpid()), "a process of the cancelled call outlived it"
    finally:
        pool.close()


async def test_concurrent_calls_run_side_by_side():
    # Each call notes when it started and ended: all four overlap (none waited for another).
    code = (
        "import time\ndef main(i):\n    start = time.time()\n    time.sleep(0.5)\n"
        "    return {'i': i, 'start': start, 'end': time.time()}"
    )
    results = [r.result for r in await asyncio.gather(*(run_code(code=code, inputs={"i": i}) for i in range(4)))]
    assert [r["i"] for r in results] == [0, 1, 2, 3]
    assert max(r["start"] for r in results) < min(r["end"] for r in results)


async def test_without_bubblewrap_no_code_runs_and_the_error_names_the_package(monkeypatch, fresh_pool):
    monkeypatch.setenv("PATH", "/nonexistent")
    state = jail.status()
    assert not state["isolated"]
    assert "bubblewrap" in state["problem"]
    with pytest.raises(SandboxNotIsolated, match="bubblewrap"):
        await run_code(code="def main():\n    return {'ran': True}", inputs={})


async def test_a_developer_may_run_code_unisolated_when_they_say_so(monkeypatch, settings, fresh_pool):
    monkeypatch.setenv("PATH", "/nonexistent")
    settings.WEFT = {**settings.WEFT, "SANDBOX_REQUIRE_ISOLATION": False}
    code = "import os\ndef main():\n    return {'uid': os.getuid()}"
    result = (await run_code(code=code, inputs={})).result
    assert result["uid"] != 0


# --- Fair shares -------------------------------------------------------------------------------

SLEEP_UNTIL_RELEASED = """
import os, time
def main(gate):
    start = time.time()
    while not os.path.exists(gate) and time.time() - start < 20:
        time.sleep(0.02)
    return {"start": start, "end": time.time()}
"""
TRIVIAL = "import time\ndef main():\n    return {'start': time.time(), 'end': time.time()}"


async def test_one_users_long_calls_leave_a_worker_for_another_user():
    # A holds every worker its share allows with calls that wait; B's trivial call still runs at once.
    pool = SandboxPool(max_workers=4, min_idle=0, require_isolation=True, user_share=3)
    gate = Path("/nonexistent-gate")  # never appears: A's calls end at their wall limit
    try:
        hog = [
            asyncio.create_task(
                run_code(
                    code=SLEEP_UNTIL_RELEASED,
                    inputs={"gate": str(gate)},
                    owner="A",
                    pool=pool,
                    limits=Limits(wall_s=3),
                )
            )
            for _ in range(5)
        ]
        while pool._held.get("A", 0) < 3:
            await asyncio.sleep(0.02)
        trivial = await run_code(code=TRIVIAL, inputs={}, owner="B", pool=pool)
        assert not any(task.done() for task in hog), "B waited for A's calls to end"
        assert pool._held.get("A") == 3  # A never held more than its share
        outcomes = await asyncio.gather(*hog, return_exceptions=True)
        assert all(isinstance(outcome, SandboxTimeout) for outcome in outcomes)
        assert trivial.result["end"] >= trivial.result["start"]
    finally:
        pool.close()


async def test_a_free_worker_goes_to_the_waiting_owner_who_holds_fewest():
    pool = SandboxPool(max_workers=2, min_idle=0, require_isolation=True, user_share=2)
    try:
        a1, a2 = await pool.acquire("A"), await pool.acquire("A")
        order: list[str] = []

        async def wait_for(owner: str) -> None:
            worker = await pool.acquire(owner)
            order.append(owner)
            pool.release(worker)

        a3 = asyncio.create_task(wait_for("A"))
        await asyncio.sleep(0.1)  # A waits first
        b1 = asyncio.create_task(wait_for("B"))
        await asyncio.sleep(0.1)
        pool.release(a1)
        await asyncio.wait_for(asyncio.gather(a3, b1), 10)
        pool.release(a2)
        assert order == ["B", "A"]
    finally:
        pool.close()


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


async def test_a_call_finds_nothing_of_an_earlier_call_in_its_memory(probe_pool):
    # With ctypes let into the jail (a probe), the code reads its own memory, inherited from the worker.
    secret = f"weft-secret-{os.urandom(8).hex()}"
    leak = "def main(secret):\n    print(secret)\n    return {'echo': secret, 'again': secret * 3}"
    for _ in range(3):
        outcome = await run_code(code=leak, inputs={"secret": secret}, pool=probe_pool)
        assert outcome.result["echo"] == secret
    scan = await run_code(
        code=MEMORY_SCAN, inputs={"needle_reversed": secret[::-1]}, limits=Limits(wall_s=60), pool=probe_pool
    )
    assert scan.result["pages"] > 1000
    assert scan.result["hits"] == 0
