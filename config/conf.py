"""Weft's tunables: one registry, read from the environment once and through one accessor.

Every operator tunable is a :class:`Tunable` in :data:`TUNABLES`: its name, default, type,
environment variable and a line saying what it does. ``config/settings.py`` builds
``settings.WEFT`` from the environment with :func:`weft_from_environment`; code reads a tunable
as an attribute of :data:`weft_settings` (in the manner of DRF's ``api_settings``)::

    from config.conf import weft_settings
    weft_settings.LEASE_TTL_S

which is ``settings.WEFT`` over the defaults, so a test's ``settings.WEFT = {...}`` (a partial
dict included) is seen at once: the cached values are dropped on ``setting_changed``.

A tunable lives at the top of ``settings.WEFT`` or in a group (``settings.WEFT["ENGINE"]``,
``["QUOTAS"]``, ``["SCHEDULES"]``); its variable is ``WEFT_`` + the group's prefix + its name
(``WEFT_ENGINE_LEASE_TTL_S``, ``WEFT_QUOTA_RUNS_PER_DAY``). Names are unique across groups, so
the accessor needs no group.

This module lives in the project package, not in an app: ``config/settings.py`` imports it
before any app is loaded, and the engine (a library that imports no app) reads it too.
"""

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed

#: Where each group's variables are named from (``WEFT_QUOTA_*`` predates this registry).
GROUP_ENV_PREFIXES = {"ENGINE": "WEFT_ENGINE_", "QUOTAS": "WEFT_QUOTA_", "SCHEDULES": "WEFT_SCHEDULE_"}
TRUE_WORDS = frozenset({"true", "1", "yes", "on"})
FALSE_WORDS = frozenset({"false", "0", "no", "off"})
NULL_WORDS = frozenset({"null", "none"})
MIB = 1024 * 1024


@dataclass(frozen=True)
class Tunable:
    """One operator tunable: its place in ``settings.WEFT``, its variable, default, type and purpose."""

    name: str
    default: Any
    #: int, float, bool, str or list (a comma-separated list of strings in the environment).
    kind: type
    doc: str
    group: str | None = None
    #: Whether None is a value (``null`` in the environment), with a meaning the doc gives.
    nullable: bool = False

    @property
    def env(self) -> str:
        return GROUP_ENV_PREFIXES[self.group] + self.name if self.group else f"WEFT_{self.name}"

    def parsed(self, text: str) -> Any:
        """The value of the variable's ``text``; ImproperlyConfigured naming the variable if it is not one."""
        text = text.strip()
        if self.nullable and text.lower() in NULL_WORDS:
            return None
        try:
            return self._typed(text)
        except ValueError:
            expected = self.kind.__name__ + (" or null" if self.nullable else "")
            raise ImproperlyConfigured(f"{self.env} must be a {expected}, not {text!r}.") from None

    def _typed(self, text: str) -> Any:
        if self.kind is bool:
            if text.lower() not in TRUE_WORDS | FALSE_WORDS:
                raise ValueError(text)
            return text.lower() in TRUE_WORDS
        if self.kind is list:
            return [item.strip() for item in text.split(",") if item.strip()]
        if self.kind is str:
            # Values were JSON before this registry (WEFT_SANDBOX_USER="nobody"): a quoted one still reads.
            return json.loads(text) if len(text) > 1 and text[0] == text[-1] == '"' else text
        return self.kind(text)

    def configured(self, weft: Mapping) -> Any:
        """This tunable's value in a ``settings.WEFT``, which may leave it (or its group) out."""
        scope = weft.get(self.group, {}) if self.group else weft
        return scope.get(self.name, self.default)


def _engine(name: str, default: Any, kind: type, doc: str, **options) -> Tunable:
    return Tunable(name, default, kind, doc, group="ENGINE", **options)


def _quota(name: str, default: int, doc: str) -> Tunable:
    return Tunable(name, default, int, doc, group="QUOTAS")


def _schedule(name: str, default: float, doc: str) -> Tunable:
    return Tunable(name, default, float, doc, group="SCHEDULES")


TUNABLES: tuple[Tunable, ...] = (
    # --- Outbound calls and client addresses --------------------------------------------------
    Tunable(
        "OUTBOUND_ALLOW",
        [],
        list,
        "Private networks, addresses or host names (each with an optional :port) outbound calls may reach.",
    ),
    Tunable(
        "OUTBOUND_TIMEOUT_S", 30.0, float, "Seconds an outbound call may wait to connect, and for each read or write."
    ),
    Tunable("OUTBOUND_MAX_BYTES", 10 * MIB, int, "The largest response body an outbound call reads."),
    Tunable("OUTBOUND_MAX_REDIRECTS", 5, int, "Redirects an outbound call follows, each hop checked again."),
    Tunable("TRUSTED_PROXIES", [], list, "Proxies whose X-Forwarded-For is believed (networks or addresses)."),
    Tunable("APP_RATE_LIMIT_PER_MINUTE", 600, int, "Calls a minute a client app may make when the app sets none."),
    # --- Input and output limits --------------------------------------------------------------
    Tunable("JSON_MAX_DEPTH", 64, int, "How deep JSON sent in may nest; deeper is a 400 json_too_deep."),
    Tunable("NODE_OUTPUT_MAX_BYTES", 50 * MIB, int, "Bytes of JSON a node's output may hold; larger fails the node."),
    Tunable(
        "OUTPUT_STORE_ABOVE_BYTES",
        256 * 1024,
        int,
        "Node and run outputs whose JSON is larger go to object storage (STORAGES['outputs']), a reference in the row.",
    ),
    Tunable(
        "OUTPUT_INLINE_MAX_BYTES",
        8 * MIB,
        int,
        "Bytes of stored outputs one answer (run, snapshot, wait, export line) inlines; past them, links.",
    ),
    Tunable("TEMPLATE_MAX_ITERATIONS", 200_000, int, "Loop iterations, calls and filters one template render may run."),
    Tunable("TEMPLATE_MAX_OUTPUT_CHARS", 16_000_000, int, "Characters one template render may write or build."),
    Tunable(
        "TEMPLATE_MAX_OPERAND", 1_000_000, int, "What one operation of a template may make ('x' * n, a ** b in bits)."
    ),
    Tunable("AGENT_CHAT_TIMEOUT_S", 60.0, float, "Seconds one turn of a session chat with an agent may take."),
    # --- Workers ------------------------------------------------------------------------------
    Tunable(
        "WORKER_USER_SHARE",
        None,
        int,
        "Runs of one user a worker process executes at once; null: half of its concurrency.",
        nullable=True,
    ),
    # --- The code sandbox (workflows/engine/sandbox/pool.py) ----------------------------------
    Tunable("SANDBOX_MAX_WORKERS", 8, int, "Warm sandbox workers per process."),
    Tunable("SANDBOX_MIN_IDLE", 2, int, "Sandbox workers kept started and idle."),
    Tunable(
        "SANDBOX_USER_SHARE",
        None,
        int,
        "Sandbox workers one user's code may hold at once; null: three quarters of them.",
        nullable=True,
    ),
    Tunable("SANDBOX_CPU_S", 5.0, float, "CPU seconds a code call gets when its node asks for none."),
    Tunable("SANDBOX_MAX_CPU_S", 60.0, float, "CPU seconds a code node may ask for."),
    Tunable("SANDBOX_WALL_S", 10.0, float, "Wall seconds a code call gets when its node asks for none."),
    Tunable("SANDBOX_MAX_WALL_S", 300.0, float, "Wall seconds a code node may ask for."),
    Tunable("SANDBOX_MEMORY_MB", 256, int, "Memory (MB) a code call gets when its node asks for none."),
    Tunable("SANDBOX_MAX_MEMORY_MB", 2048, int, "Memory (MB) a code node may ask for."),
    Tunable("SANDBOX_FILE_MB", 8, int, "The largest file (MB) code may write."),
    Tunable("SANDBOX_TMPFS_MB", 16, int, "The size (MB) of a code call's working directory."),
    Tunable("SANDBOX_RESULT_MAX_BYTES", 1 * MIB, int, "Bytes of JSON a code call may return."),
    Tunable("SANDBOX_USER", "nobody", str, "Whom a process running as root starts sandbox workers as."),
    Tunable(
        "SANDBOX_REQUIRE_ISOLATION",
        True,
        bool,
        "Refuse to run code where it cannot be isolated; false only on a developer's laptop.",
    ),
    # --- Housekeeping -------------------------------------------------------------------------
    Tunable(
        "RETENTION_DAYS",
        30,
        int,
        "Days finished runs and node history are kept before they are purged; null keeps everything.",
        nullable=True,
    ),
    Tunable("RETENTION_BATCH_SIZE", 1000, int, "Rows the retention purge deletes per transaction."),
    Tunable(
        "RETENTION_INTERVAL_S",
        3600,
        int,
        "Seconds between two retention purges (beat's; the server's in embedded mode).",
    ),
    Tunable("USAGE_SWEEP_BATCH_SIZE", 200, int, "Unmetered runs one usage sweep meters, at most."),
    Tunable("USAGE_SWEEP_GRACE_S", 30, int, "Seconds a finished run is left to its worker to meter."),
    Tunable("USAGE_SWEEP_LOOKBACK_S", 3600, int, "How far back (seconds, by creation) the minutely usage sweep looks."),
    # --- The engine (settings.WEFT["ENGINE"]) -------------------------------------------------
    _engine(
        "NODE_TIMEOUT_S",
        300.0,
        float,
        "A node's timeout when its error policy gives none; null: no timeout.",
        nullable=True,
    ),
    _engine("MAX_PARALLEL_NODES", 32, int, "Nodes of one run executing at once."),
    _engine("RETRY_MAX_ATTEMPTS", 10, int, "The most attempts a node's retry policy may ask for."),
    _engine("RETRY_MAX_DELAY_S", 600.0, float, "The longest delay between two attempts of a node."),
    _engine("ITERATION_MAX_CONCURRENCY", 16, int, "The most items an iteration node may run at once."),
    _engine("ITERATION_MAX_ITEMS", 1000, int, "The most items an iteration node may iterate over."),
    _engine("LEASE_TTL_S", 30.0, float, "Seconds a worker's lease on a run (and its held runs) lasts unrenewed."),
    _engine("HEARTBEAT_S", 10.0, float, "Seconds between two renewals of a worker's leases."),
    _engine("CANCEL_POLL_S", 1.0, float, "Seconds between two looks for a cancel request made elsewhere."),
    _engine(
        "MAX_DISPATCH_ATTEMPTS", 3, int, "Claims of one run (first dispatch and resumes) before the reaper fails it."
    ),
    _engine(
        "PENDING_REDISPATCH_S",
        60.0,
        float,
        "A pending run held by no worker this long after its last update is dispatched again.",
    ),
    _engine("REDISPATCH_GRACE_S", 60.0, float, "Seconds the reaper leaves a re-dispatched run to be claimed."),
    _engine("REAPER_INTERVAL_S", 30.0, float, "Seconds between two runs of the reaper (beat's and the embedded one)."),
    _engine("EMBEDDED_REAPER", True, bool, "Embedded mode: whether the in-process engine also runs the reaper."),
    _engine(
        "JOURNAL_SYNCHRONOUS_COMMIT",
        False,
        bool,
        "PostgreSQL: whether every journal commit waits for the WAL flush.",
    ),
    _engine("NODE_CACHE_MAX_TTL_S", 7 * 24 * 3600, int, "The longest ttl_s (seconds) a node's result cache may ask."),
    _engine(
        "NODE_CACHE_MAX_ENTRY_BYTES", 1 * MIB, int, "Bytes of JSON one cached node result may hold; larger is not kept."
    ),
    _engine("WAIT_TIMEOUT_S", 30.0, float, "Seconds `wait=true` holds a request before answering 202."),
    _engine(
        "RUNS_HERE_MAX",
        16,
        int,
        "Runs a web process executes itself at once: runs its requests wait for whose nodes all compute "
        "in-process (start, template, condition, aggregator, end). More go to a worker; 0 sends all.",
    ),
    _engine(
        "PLUGINS",
        [],
        list,
        "The installed node plugins (distribution names, docs/plugins.md) whose node types may be used.",
    ),
    _engine("PLUGIN_THREADS", 8, int, "Threads per process on which plugin nodes execute, abandoned ones included."),
    _engine("PLUGIN_IMPORT_TIMEOUT_S", 10.0, float, "Seconds an enabled plugin's import may take; longer: not used."),
    # --- Quotas: defaults for every user (settings.WEFT["QUOTAS"]; workflows/quotas.py) ------
    _quota("MAX_WORKFLOWS", 1000, "Workflows a user may own."),
    _quota("RUNS_PER_DAY", 10000, "Runs a user may start per UTC day."),
    _quota("CONCURRENT_RUNS", 200, "Runs of a user pending or running at once."),
    _quota("MAX_RUN_DURATION_S", 6 * 3600, "Seconds a run may run before the reaper fails it."),
    _quota("WORKFLOW_RUNS_PER_DAY", 10000, "Runs per UTC day of each workflow, whoever starts them."),
    # --- Schedules (settings.WEFT["SCHEDULES"]) -----------------------------------------------
    _schedule("MISFIRE_GRACE_S", 300.0, "A schedule's tick older than this (seconds) is not fired any more."),
    _schedule("TICK_INTERVAL_S", 5.0, "Seconds between two looks for due schedule ticks (beat and embedded mode)."),
    _schedule("RESULTS_LOOKBACK_S", 3600.0, "Schedules whose runs started or ended this recently get results."),
)
BY_NAME: dict[str, Tunable] = {tunable.name: tunable for tunable in TUNABLES}
if len(BY_NAME) != len(TUNABLES):
    raise ImproperlyConfigured("Two Weft tunables share a name: the accessor could not tell them apart.")


def weft_from_environment(environ: Mapping[str, str]) -> dict:
    """``settings.WEFT``: every tunable, from its variable in ``environ`` when set (and not empty), else its default."""
    weft: dict = {group: {} for group in GROUP_ENV_PREFIXES}
    for tunable in TUNABLES:
        text = environ.get(tunable.env, "")
        value = tunable.parsed(text) if text.strip() else tunable.default
        (weft[tunable.group] if tunable.group else weft)[tunable.name] = value
    return weft


class WeftSettings:
    """``settings.WEFT`` over the registry's defaults, as attributes; each value cached until WEFT changes."""

    def __init__(self, tunables: Mapping[str, Tunable]):
        self._tunables = tunables

    def __getattr__(self, name: str) -> Any:
        # Called only for a name not cached yet: a cached value is a plain attribute of the instance.
        if name.startswith("_") or name not in self._tunables:
            raise AttributeError(f"{name!r} is not a Weft setting (config/conf.py lists them).")
        value = self._tunables[name].configured(getattr(settings, "WEFT", {}))
        setattr(self, name, value)
        return value

    def reload(self) -> None:
        for name in self._tunables:
            self.__dict__.pop(name, None)


weft_settings = WeftSettings(BY_NAME)


def _reload_weft_settings(*, setting: str, **kwargs) -> None:
    if setting == "WEFT":
        weft_settings.reload()


setting_changed.connect(_reload_weft_settings)
