"""Engine tunables: ``settings.WEFT["ENGINE"]`` over documented defaults (in the manner of DRF's api_settings).

from workflows.engine.conf import engine_settings
engine_settings.LEASE_TTL_S
"""

from django.conf import settings
from django.core.signals import setting_changed

DEFAULTS: dict = {
    # A node's timeout when its error_policy gives none (seconds; None: no timeout).
    "NODE_TIMEOUT_S": 300.0,
    # Nodes of one run executing at once.
    "MAX_PARALLEL_NODES": 32,
    # Upper bounds on what a graph may ask for.
    "RETRY_MAX_ATTEMPTS": 10,
    "RETRY_MAX_DELAY_S": 600.0,
    "ITERATION_MAX_CONCURRENCY": 16,
    "ITERATION_MAX_ITEMS": 1000,
    # Durability: a running run's lease, renewed every HEARTBEAT_S, expires after LEASE_TTL_S; so does a
    # worker's hold on the pending runs whose messages it took (workflows.execution.holds).
    "LEASE_TTL_S": 30.0,
    "HEARTBEAT_S": 10.0,
    # How often a worker looks for a cancel request made from another process.
    "CANCEL_POLL_S": 1.0,
    # Claims of one run (first dispatch + resumes) before the reaper fails it.
    "MAX_DISPATCH_ATTEMPTS": 3,
    # A run still pending, and held by no worker, this long after its last update is dispatched again by the
    # reaper (its message was lost before a worker took it).
    "PENDING_REDISPATCH_S": 60.0,
    # Grace the reaper leaves a re-dispatched run to be claimed before it looks at it again.
    "REDISPATCH_GRACE_S": 60.0,
    "REAPER_INTERVAL_S": 30.0,
    # Embedded mode: whether the in-process engine also runs the reaper (a Celery beat task otherwise).
    "EMBEDDED_REAPER": True,
    # PostgreSQL: whether a run's journal commits wait for the WAL flush. Off, a node's outcome is
    # committed (visible, and safe from a worker crash) without waiting for the disk: a crash of
    # the database server itself may lose the last fraction of a second of node outcomes, whose
    # nodes then run again on resume. Run creation and a run's final status always wait.
    "JOURNAL_SYNCHRONOUS_COMMIT": False,
    # How long `wait=true` holds the request before answering 202.
    "WAIT_TIMEOUT_S": 30.0,
}


class EngineSettings:
    def __init__(self, defaults: dict):
        self._defaults = defaults
        self._cache: dict = {}

    def __getattr__(self, name: str):
        if name not in self._defaults:
            raise AttributeError(f"Unknown engine setting {name!r}.")
        if name not in self._cache:
            self._cache[name] = getattr(settings, "WEFT", {}).get("ENGINE", {}).get(name, self._defaults[name])
        return self._cache[name]

    def reload(self) -> None:
        self._cache.clear()


engine_settings = EngineSettings(DEFAULTS)


def _reload(*, setting, **kwargs):
    if setting == "WEFT":
        engine_settings.reload()


setting_changed.connect(_reload)
