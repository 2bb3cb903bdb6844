"""The jail a sandbox worker runs in: bubblewrap, a seccomp allow-list, and nothing of the host but Python.

A worker is started as ``bwrap <arguments> python -I -S -X utf8 /sandbox/zygote.py`` by an
unprivileged user (bubblewrap uses unprivileged user namespaces; no root, no capability). Inside:

- its own user, PID, mount, network, IPC, UTS and cgroup namespaces (``--unshare-all``): the
  network namespace has no interface up, so no socket reaches anything, loopback included; the
  worker is PID 1 of its namespace (``--as-pid-1``), so the code it forks cannot signal it, and
  when it dies the kernel kills everything left in the namespace;
- a root that is read-only and empty but for the interpreter, its standard library and the
  shared libraries they load (found with ``ldd``), bound read-only at the paths they have on the
  host, ``/dev/null`` and ``/dev/urandom``; no ``/proc``, no ``/etc``, no site-packages, none of
  the extension modules in :data:`HIDDEN_EXTENSIONS` (``ctypes`` among them);
- one writable directory, ``/w``: a tmpfs capped at ``SANDBOX_TMPFS_MB``;
- no environment variable (``--clearenv``), a new session (no terminal), no capability;
- a seccomp filter (:func:`seccomp_program`): system calls outside :data:`ALLOWED_SYSCALLS` fail
  with EPERM; ``prlimit64`` only on the caller itself; ``clone`` without namespace flags;
  ``ioctl`` only for the few terminal and descriptor requests the interpreter makes.

Resource limits are rlimits, set per call in the child that runs the user's code (address
space, CPU time, file size, no new processes or threads, 32 descriptors): cgroup v2 is not used
by this version (see :func:`limits_mode`).
"""

import contextlib
import functools
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from dataclasses import dataclass
from pathlib import Path

PACKAGE = "bubblewrap"
SECCOMP_PACKAGE = "libseccomp2"
INSTALL_HINT = "install the Debian package bubblewrap (apt-get install bubblewrap)"
#: Where the worker program appears inside the jail.
PROGRAM_PATH = "/sandbox/zygote.py"
WORKDIR = "/w"

#: Extension modules of the standard library the jail does not contain: foreign function
#: interfaces, the interpreter's test modules, terminals, and process or shared-memory helpers
#: that have no use without ``fork``.
HIDDEN_EXTENSIONS = frozenset(
    {
        "_ctypes",
        "_ctypes_test",
        "_testbuffer",
        "_testcapi",
        "_testclinic",
        "_testimportmultiple",
        "_testinternalcapi",
        "_testmultiphase",
        "_xxtestfuzz",
        "_xxsubinterpreters",
        "xxlimited",
        "xxlimited_35",
        "_curses",
        "_curses_panel",
        "readline",
        "_tkinter",
        "termios",
        "ossaudiodev",
        "nis",
        "_crypt",
        "_dbm",
        "_gdbm",
        "_multiprocessing",
        "_posixshmem",
        "_ssl",
    }
)

#: What the interpreter, the worker and ordinary user code need. Everything else is EPERM:
#: among others bpf, keyctl, add_key, perf_event_open, ptrace, process_vm_*, mount, umount2,
#: unshare, setns, pivot_root, chroot, socket, connect, io_uring_*, userfaultfd, clone3 (ENOSYS,
#: so that the C library falls back to the checked clone), execveat, the *uid/*gid setters.
ALLOWED_SYSCALLS = (
    # files and descriptors (the only writable place is /w)
    "read", "write", "readv", "writev", "pread64", "pwrite64", "preadv", "pwritev", "preadv2",
    "pwritev2", "open", "openat", "creat", "close", "close_range", "lseek", "dup", "dup2", "dup3",
    "fcntl", "flock", "fsync", "fdatasync", "ftruncate", "truncate", "fallocate", "stat", "fstat",
    "lstat", "newfstatat", "statx", "statfs", "fstatfs", "access", "faccessat", "faccessat2",
    "readlink", "readlinkat", "getdents", "getdents64", "getcwd", "chdir", "fchdir", "mkdir",
    "mkdirat", "rmdir", "unlink", "unlinkat", "rename", "renameat", "renameat2", "link", "linkat",
    "symlink", "symlinkat", "chmod", "fchmod", "fchmodat", "umask", "utime", "utimes",
    "utimensat", "futimesat", "sendfile", "copy_file_range", "pipe", "pipe2", "socketpair",
    "select", "pselect6", "poll", "ppoll", "epoll_create", "epoll_create1", "epoll_ctl",
    "epoll_wait", "epoll_pwait", "eventfd", "eventfd2", "memfd_create",
    # memory
    "brk", "mmap", "munmap", "mremap", "mprotect", "madvise", "membarrier",
    # the process itself
    "exit", "exit_group", "getpid", "getppid", "gettid", "getuid", "geteuid", "getgid",
    "getegid", "getresuid", "getresgid", "getgroups", "getpgid", "getpgrp", "getsid",
    "getrlimit", "setrlimit", "getrusage", "getpriority", "uname", "sysinfo", "getrandom",
    "arch_prctl", "set_tid_address", "set_robust_list", "get_robust_list", "rseq", "futex",
    "sched_yield", "sched_getaffinity", "getcpu", "execve",
    # signals and time
    "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "rt_sigpending", "rt_sigsuspend",
    "rt_sigtimedwait", "sigaltstack", "restart_syscall", "pause", "alarm", "getitimer",
    "setitimer", "kill", "tkill", "tgkill", "clock_gettime", "clock_getres", "clock_nanosleep",
    "nanosleep", "gettimeofday", "time", "times",
    # the worker's children (the code itself may not fork: RLIMIT_NPROC is 0 there)
    "wait4", "waitid", "pidfd_open", "pidfd_send_signal",
)  # fmt: skip

CLONE_NAMESPACE_FLAGS = (
    0x00000080  # CLONE_NEWTIME
    | 0x00020000  # CLONE_NEWNS
    | 0x02000000  # CLONE_NEWCGROUP
    | 0x04000000  # CLONE_NEWUTS
    | 0x08000000  # CLONE_NEWIPC
    | 0x10000000  # CLONE_NEWUSER
    | 0x20000000  # CLONE_NEWPID
    | 0x40000000  # CLONE_NEWNET
)
#: ioctl requests the interpreter makes: TCGETS (isatty), FIONREAD, FIONBIO, FIOCLEX, FIONCLEX.
ALLOWED_IOCTLS = (0x5401, 0x541B, 0x5421, 0x5451, 0x5450)


class JailUnavailable(Exception):
    """This machine cannot build the jail; the message names what is missing and how to get it."""


def bwrap_path() -> str | None:
    return shutil.which("bwrap")


def interpreter() -> str:
    """The real interpreter behind this process's (a virtualenv's ``python`` is a link to it)."""
    return os.path.realpath(sys.executable)


def _stdlib() -> Path:
    base = {"base": sys.base_prefix, "platbase": sys.base_exec_prefix, "installed_base": sys.base_prefix}
    return Path(sysconfig.get_paths(vars=base)["stdlib"])


def _extension_dir(stdlib: Path) -> Path | None:
    path = stdlib / "lib-dynload"
    return path if path.is_dir() else None


def _shared_libraries(files: list[str]) -> set[str]:
    """Every shared library (and the loader) that ``files`` load, as ``ldd`` resolves them."""
    ldd = shutil.which("ldd")
    if ldd is None:
        raise JailUnavailable("ldd is missing: install the Debian package libc-bin")
    result = subprocess.run(  # noqa: S603 - ldd from PATH, our own file names
        [ldd, *files], capture_output=True, text=True, timeout=30, check=False
    )
    libraries = set()
    for line in result.stdout.splitlines():
        match = re.search(r"(?:=>\s*)?(/\S+)\s+\(0x", line)
        if match:
            libraries.add(match.group(1))
    if not libraries:
        raise JailUnavailable(f"ldd found no library of {files[0]}")
    return libraries


@dataclass(frozen=True)
class Layout:
    """What of the host the jail contains, all read-only."""

    interpreter: str
    stdlib: str
    #: Extension modules bound one by one into an otherwise empty lib-dynload.
    extensions: tuple[str, ...]
    extension_dir: str | None
    libraries: tuple[str, ...]
    #: Directories inside the standard library masked by an empty tmpfs (site-packages).
    masked: tuple[str, ...]


@functools.cache
def layout(hidden: frozenset[str] = HIDDEN_EXTENSIONS) -> Layout:
    """The files of the jail; ``hidden`` extension modules are left out (tests probe the jail with ctypes)."""
    stdlib = _stdlib()
    if not stdlib.is_dir():
        raise JailUnavailable(f"the standard library is not at {stdlib}")
    extension_dir = _extension_dir(stdlib)
    extensions = []
    if extension_dir is not None:
        for path in sorted(extension_dir.iterdir()):
            if path.name.endswith(".so") and path.name.split(".", 1)[0] not in hidden:
                extensions.append(str(path))
    python = interpreter()
    masked = tuple(str(stdlib / name) for name in ("site-packages", "dist-packages") if (stdlib / name).is_dir())
    return Layout(
        interpreter=python,
        stdlib=str(stdlib),
        extensions=tuple(extensions),
        extension_dir=str(extension_dir) if extension_dir else None,
        libraries=tuple(sorted(_shared_libraries([python, *extensions]))),
        masked=masked,
    )


@functools.cache
def seccomp_program() -> bytes:
    """The allow-list compiled to a BPF program for ``bwrap --seccomp`` (libseccomp does the compiling)."""
    try:
        import pyseccomp as seccomp
    except (ImportError, RuntimeError) as exc:  # RuntimeError: the binding did not find libseccomp
        raise JailUnavailable(f"libseccomp is missing: install the Debian package {SECCOMP_PACKAGE}") from exc
    errno_eperm, errno_enosys = 1, 38
    rules = seccomp.SyscallFilter(defaction=seccomp.ERRNO(errno_eperm))
    for name in ALLOWED_SYSCALLS:
        with contextlib.suppress(OSError, ValueError):  # a call this architecture does not have
            rules.add_rule(seccomp.ALLOW, name)
    rules.add_rule(seccomp.ALLOW, "prlimit64", seccomp.Arg(0, seccomp.EQ, 0))
    rules.add_rule(seccomp.ALLOW, "clone", seccomp.Arg(0, seccomp.MASKED_EQ, CLONE_NAMESPACE_FLAGS, 0))
    for request in ALLOWED_IOCTLS:
        rules.add_rule(seccomp.ALLOW, "ioctl", seccomp.Arg(1, seccomp.EQ, request))
    with contextlib.suppress(OSError, ValueError):
        rules.add_rule(seccomp.ERRNO(errno_enosys), "clone3")
    with tempfile.TemporaryFile() as program:
        rules.export_bpf(program)
        program.seek(0)
        return program.read()


def limits_mode() -> str:
    """Which mechanism bounds a call's memory, processes, CPU and files: rlimits, in this version."""
    return "rlimits"


def status() -> dict:
    """Whether code can be isolated here: ``{"isolated", "tool", "limits", "problem"}``, for /readyz and start-up."""
    try:
        if bwrap_path() is None:
            raise JailUnavailable(f"bwrap is missing: {INSTALL_HINT}")
        layout()
        seccomp_program()
    except JailUnavailable as exc:
        return {"isolated": False, "tool": PACKAGE, "limits": limits_mode(), "problem": str(exc)}
    return {"isolated": True, "tool": PACKAGE, "limits": limits_mode(), "problem": ""}


def command(
    *,
    program_fd: int,
    seccomp_fd: int,
    tmpfs_bytes: int,
    arguments: list[str],
    hidden: frozenset[str] = HIDDEN_EXTENSIONS,
) -> list[str]:
    """The bwrap command line that starts the worker program (read from ``program_fd``) in the jail."""
    bwrap = bwrap_path()
    if bwrap is None:
        raise JailUnavailable(f"bwrap is missing: {INSTALL_HINT}")
    parts = layout(hidden)
    argv = [
        bwrap,
        "--unshare-all",
        # Not --die-with-parent: its signal follows the *thread* that started bwrap, and workers are
        # started from short-lived threads. A worker whose server is gone reads EOF and exits.
        "--as-pid-1",
        "--new-session",
        "--clearenv",
        "--hostname",
        "sandbox",
        "--cap-drop",
        "ALL",
    ]
    for library in parts.libraries:
        argv += ["--ro-bind", library, library]
    argv += ["--ro-bind", parts.interpreter, parts.interpreter, "--ro-bind", parts.stdlib, parts.stdlib]
    # Empty tmpfs over site-packages and lib-dynload, read-only once lib-dynload has the allowed modules.
    for masked in parts.masked:
        argv += ["--tmpfs", masked, "--remount-ro", masked]
    if parts.extension_dir is not None:
        argv += ["--tmpfs", parts.extension_dir]
        for extension in parts.extensions:
            argv += ["--ro-bind", extension, extension]
        argv += ["--remount-ro", parts.extension_dir]
    argv += [
        "--dev-bind",
        "/dev/null",
        "/dev/null",
        "--ro-bind",
        "/dev/urandom",
        "/dev/urandom",
        "--ro-bind-data",
        str(program_fd),
        PROGRAM_PATH,
        "--size",
        str(tmpfs_bytes),
        "--perms",
        "0700",
        "--tmpfs",
        WORKDIR,
        "--remount-ro",
        "/",
        "--chdir",
        WORKDIR,
        "--seccomp",
        str(seccomp_fd),
        "--",
        parts.interpreter,
        "-I",
        "-S",
        "-X",
        "utf8",
        PROGRAM_PATH,
        *arguments,
    ]
    return argv
