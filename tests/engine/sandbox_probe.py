"""A pool whose jail lets ``ctypes`` in: what the seccomp filter and the namespaces refuse is then
probed with raw system calls, past anything the interpreter itself would stop."""

import pytest

from workflows.engine.sandbox import jail
from workflows.engine.sandbox.pool import SandboxPool


@pytest.fixture
def probe_pool():
    pool = SandboxPool(
        max_workers=2,
        min_idle=0,
        require_isolation=True,
        hidden_extensions=jail.HIDDEN_EXTENSIONS - {"_ctypes"},
    )
    yield pool
    pool.close()
