"""Escapes from the code sandbox: each is refused, and the pool keeps working after it.

Raw system calls are probed from a jail that lets ``ctypes`` in (``probe_pool``): the seccomp
filter and the namespaces must refuse them even to code that can call anything in libc. The rest
is tried as ordinary user code would, in the jail as it is deployed.
"""

import asyncio
import errno
import os
import signal

import pyseccomp
import pytest

from workflows.engine.sandbox import Limits, SandboxError, SandboxMemoryExceeded, SandboxTimeout, run_code
from workflows.engine.sandbox.pool import SandboxPool

TRIVIAL = "def main(n):\n    return {'n': n + 1}"


async def assert_the_pool_works(pool=None) -> None:
    for n in range(3):
        assert (await run_code(code=TRIVIAL, inputs={"n": n}, pool=pool)).result == {"n": n + 1}


@pytest.fixture
def one_worker():
    """A pool of one worker: the call after an escape is served by the same worker, or by a new one."""
    pool = SandboxPool(max_workers=1, min_idle=0, require_isolation=True)
    yield pool
    pool.close()


def worker_pids(pool: SandboxPool) -> set[int]:
    return {worker.pid for worker in pool._idle if worker.alive()}


# --- Raw system calls --------------------------------------------------------------------------

RAW_SYSCALLS = """
import ctypes
def main(calls):
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    seen = {}
    for name, (number, args) in calls.items():
        ctypes.set_errno(0)
        result = libc.syscall(ctypes.c_long(number), *(ctypes.c_long(arg) for arg in args))
        seen[name] = [result, ctypes.get_errno()]
    return seen
"""
CLONE_NEWUSER = 0x10000000
RLIMIT_NPROC = 6


def syscall(name: str) -> int:
    return pyseccomp.resolve_syscall(pyseccomp.system_arch(), name)


async def test_seccomp_refuses_the_dangerous_system_calls(probe_pool):
    refused = {
        "bpf": (syscall("bpf"), [0, 0, 0]),
        "keyctl": (syscall("keyctl"), [0, 0, 0]),
        "add_key": (syscall("add_key"), [0, 0, 0, 0, 0]),
        "perf_event_open": (syscall("perf_event_open"), [0, 0, -1, -1, 0]),
        "ptrace": (syscall("ptrace"), [16, 1, 0, 0]),  # PTRACE_ATTACH to the worker
        "process_vm_readv": (syscall("process_vm_readv"), [1, 0, 0, 0, 0, 0]),
        "mount": (syscall("mount"), [0, 0, 0, 0, 0]),
        "umount2": (syscall("umount2"), [0, 0]),
        "unshare": (syscall("unshare"), [CLONE_NEWUSER]),
        "setns": (syscall("setns"), [0, 0]),
        "pivot_root": (syscall("pivot_root"), [0, 0]),
        "chroot": (syscall("chroot"), [0]),
        "socket": (syscall("socket"), [2, 1, 0]),
        "clone_newuser": (syscall("clone"), [CLONE_NEWUSER | 17, 0, 0, 0, 0]),
        "prlimit_worker": (syscall("prlimit64"), [1, RLIMIT_NPROC, 0, 0]),
        "io_uring_setup": (syscall("io_uring_setup"), [1, 0]),
        "userfaultfd": (syscall("userfaultfd"), [0]),
        "setuid": (syscall("setuid"), [0]),
    }
    allowed = {"getpid": (syscall("getpid"), []), "prlimit_self": (syscall("prlimit64"), [0, RLIMIT_NPROC, 0, 0])}
    result = (await run_code(code=RAW_SYSCALLS, inputs={"calls": {**refused, **allowed}}, pool=probe_pool)).result
    for name in refused:
        assert result[name] == [-1, errno.EPERM], f"{name}: {result[name]}"
    assert result["getpid"][0] > 0
    assert result["prlimit_self"] == [0, 0]
    await assert_the_pool_works(probe_pool)


NETWORK = """
import socket
def main(ports):
    seen = {}
    for port in ports:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                seen[str(port)] = "connected"
        except OSError as exc:
            seen[str(port)] = type(exc).__name__
    return seen
"""


async def test_no_network_not_even_loopback_or_the_database(listener):
    result = (await run_code(code=NETWORK, inputs={"ports": [listener.port, 5432, 6379]})).result
    assert set(result.values()) == {"PermissionError"}
    await asyncio.sleep(0.2)
    assert listener.connections == 0
    await assert_the_pool_works()


async def test_no_network_through_libc_either(listener, probe_pool):
    code = """
import ctypes, struct
def main(port):
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.socket(2, 1, 0)
    if fd < 0:
        return {"socket": ctypes.get_errno()}
    address = struct.pack("<H", 2) + struct.pack("!H", port) + bytes([127, 0, 0, 1]) + bytes(8)
    return {"socket": 0, "connect": libc.connect(fd, address, len(address))}
"""
    result = (await run_code(code=code, inputs={"port": listener.port}, pool=probe_pool)).result
    assert result == {"socket": errno.EPERM}
    await asyncio.sleep(0.2)
    assert listener.connections == 0


# --- Processes ---------------------------------------------------------------------------------

PROCESSES = """
import os, subprocess, threading
def main(host_pid):
    seen = {}
    attempts = {
        "fork": lambda: os.fork(),
        "spawn": lambda: os.posix_spawn("/usr/bin/python3.11", ["python3"], {}),
        "exec_shell": lambda: os.execv("/bin/sh", ["sh"]),
        "subprocess": lambda: subprocess.run(["/bin/true"]),
        "thread": lambda: threading.Thread(target=lambda: None).start(),
        "signal_host": lambda: os.kill(host_pid, 0),
        "proc": lambda: os.listdir("/proc"),
    }
    for name, attempt in attempts.items():
        try:
            attempt()
            seen[name] = "done"
        except Exception as exc:
            seen[name] = type(exc).__name__
    return seen
"""


async def test_no_process_no_thread_no_proc_no_host_process():
    result = (await run_code(code=PROCESSES, inputs={"host_pid": os.getpid()})).result
    assert result["fork"] == "BlockingIOError"
    assert result["spawn"] in ("BlockingIOError", "PermissionError")
    assert result["exec_shell"] == "FileNotFoundError"
    assert result["subprocess"] in ("BlockingIOError", "FileNotFoundError")
    assert result["thread"] == "RuntimeError"
    assert result["signal_host"] == "ProcessLookupError"
    assert result["proc"] == "FileNotFoundError"
    await assert_the_pool_works()


async def test_a_fork_bomb_ends_at_the_first_fork():
    with pytest.raises(SandboxError, match="BlockingIOError"):
        await run_code(code="import os\ndef main():\n    while True:\n        os.fork()", inputs={})
    await assert_the_pool_works()


async def test_a_memory_bomb_is_stopped():
    code = "def main():\n    hog = []\n    while True:\n        hog.append(' ' * 10**7)"
    with pytest.raises(SandboxMemoryExceeded):
        await run_code(code=code, inputs={}, limits=Limits(memory_mb=128))
    await assert_the_pool_works()


# --- Floods ------------------------------------------------------------------------------------


async def test_an_output_flood_is_cut_and_bounded_on_disk():
    code = "import sys\ndef main():\n    for _ in range(100):\n        sys.stdout.write('x' * 10**6)\n    return {}"
    # The file size limit stops the writes (EFBIG); what was printed before is cut.
    with pytest.raises(SandboxError, match="File too large") as failed:
        await run_code(code=code, inputs={})
    assert 0 < len(failed.value.output) <= 8192
    await assert_the_pool_works()


async def test_filling_the_working_directory_is_bounded_and_wiped():
    code = """
import os
def main():
    written = 0
    try:
        for index in range(10000):
            with open(f"f{index}", "wb") as handle:
                handle.write(b"x" * 2**20)
            written += 1
    except OSError as exc:
        return {"written": written, "error": exc.errno}
    return {"written": written, "error": 0}
"""
    result = (await run_code(code=code, inputs={})).result
    assert result["error"] == errno.ENOSPC
    assert result["written"] < 64
    listing = "import os\ndef main():\n    return {'files': os.listdir('.')}"
    assert (await run_code(code=listing, inputs={})).result["files"] == [".output"]


async def test_a_result_flood_is_refused():
    with pytest.raises(SandboxError, match="over"):
        await run_code(code="def main():\n    return {'x': 'y' * 50_000_000}", inputs={})
    await assert_the_pool_works()


# --- The worker survives what the code does around it ------------------------------------------

SURVIVED = {
    "fifo_output": "import os\ndef main():\n    os.unlink('.output')\n    os.mkfifo('.output')\n    return {}",
    "directory_output": (
        "import os\ndef main():\n    os.unlink('.output')\n    os.mkdir('.output')\n"
        "    open('.output/x', 'w').write('x')\n    return {}"
    ),
    "locked_directory": (
        "import os\ndef main():\n    os.makedirs('a/b/c')\n    open('a/b/c/f', 'w').write('x')\n"
        "    os.chmod('a/b/c', 0)\n    os.chmod('a', 0)\n    os.chmod('.', 0)\n    return {}"
    ),
    "signals": (
        "import os, signal\ndef main():\n    for target in (1, os.getppid(), 0, -1):\n"
        "        for number in (signal.SIGKILL, signal.SIGTERM, signal.SIGINT):\n"
        "            try:\n                os.kill(target, number)\n            except OSError:\n                pass\n"
        "    return {}"
    ),
    "lowered_limits": (
        "import resource\ndef main():\n    resource.setrlimit(resource.RLIMIT_NOFILE, (4, 4))\n"
        "    resource.setrlimit(resource.RLIMIT_CPU, (1, 1))\n    return {}"
    ),
    "worker_limits": (
        "import resource\ndef main():\n    try:\n        resource.prlimit(1, resource.RLIMIT_NPROC, (0, 0))\n"
        "    except PermissionError:\n        return {'refused': True}\n    return {'refused': False}"
    ),
    "closed_result": "import os\ndef main():\n    os.close(3)\n    return {}",
}


@pytest.mark.parametrize("name", SURVIVED)
async def test_the_worker_survives(name, one_worker):
    await assert_the_pool_works(one_worker)
    (worker,) = worker_pids(one_worker)
    try:
        outcome = await run_code(code=SURVIVED[name], inputs={}, pool=one_worker)
    except (SandboxError, SandboxTimeout):
        outcome = None
    if name == "worker_limits":
        assert outcome.result == {"refused": True}
    await assert_the_pool_works(one_worker)
    # The same worker (no restart): nothing the code did reached it.
    assert worker_pids(one_worker) == {worker}
    listing = (
        "import os\ndef main():\n    return {'files': sorted(os.listdir('.')), 'mode': os.stat('.').st_mode & 0o777}"
    )
    assert (await run_code(code=listing, inputs={}, pool=one_worker)).result == {"files": [".output"], "mode": 0o700}


async def test_a_directory_too_deep_to_wipe_retires_the_worker_and_the_next_call_gets_another(one_worker):
    deep = (
        "import os\ndef main():\n    for _ in range(1500):\n        os.mkdir('d')\n        os.chdir('d')\n    return {}"
    )
    await assert_the_pool_works(one_worker)
    (worker,) = worker_pids(one_worker)
    assert (await run_code(code=deep, inputs={}, pool=one_worker)).result == {}
    await assert_the_pool_works(one_worker)
    assert worker not in worker_pids(one_worker)
    listing = "import os\ndef main():\n    return {'files': os.listdir('.')}"
    assert (await run_code(code=listing, inputs={}, pool=one_worker)).result == {"files": [".output"]}


async def test_a_killed_worker_is_replaced(one_worker):
    await assert_the_pool_works(one_worker)
    (worker,) = worker_pids(one_worker)
    os.kill(worker, signal.SIGKILL)
    await asyncio.sleep(0.2)
    await assert_the_pool_works(one_worker)
    assert worker_pids(one_worker)
    assert worker not in worker_pids(one_worker)
