"""The code sandbox: user Python runs in separate, isolated, warm worker processes, never here.

See :func:`run_code` for the contract with the user's code, ``pool.py`` for the settings and
``_zygote.py`` for how a worker isolates the code (namespaces, chroot, own uid, rlimits).
"""

from .jail import status as isolation_status
from .pool import (
    Limits,
    SandboxError,
    SandboxMemoryExceeded,
    SandboxNotIsolated,
    SandboxPool,
    SandboxResult,
    SandboxTimeout,
    SandboxUnavailable,
    get_pool,
    isolation_required,
    prewarm,
    run_code,
    shutdown,
)

__all__ = [
    "SandboxPool",
    "isolation_required",
    "isolation_status",
    "Limits",
    "SandboxError",
    "SandboxMemoryExceeded",
    "SandboxNotIsolated",
    "SandboxResult",
    "SandboxTimeout",
    "SandboxUnavailable",
    "get_pool",
    "prewarm",
    "run_code",
    "shutdown",
]
