"""Node plugins: node types that installed packages declare, usable once the operator enables them.

A distribution declares entry points in the group ``weft.nodes``: the entry point's name is the node
type's, its value a :class:`~workflows.engine.nodes.base.NodeType` subclass (not ``@register``-ed)::

    [project.entry-points."weft.nodes"]
    example_reverse = "weft_plugin_example:Reverse"

Installed is not enabled: a plugin's code is not even imported until ``WEFT_ENGINE_PLUGINS`` names its
distribution. Its types then join the registry (after the built-in and app types, which win a name
they share). A graph that uses the type of a plugin that is not enabled or cannot be used (an import
that fails or never ends, an entry point that is not a node type, a type name taken twice) gets a
validation issue naming the plugin and its version, as a run started with it does.

A plugin's ``execute`` gets a :class:`~workflows.engine.nodes.base.NodeContext` like any node's, but
runs on a thread of its own with an event loop of its own: a plugin that blocks (``time.sleep``, a busy
loop inside ``async def execute``) holds that thread, never the loop on which the worker's other nodes
and runs execute. ``ctx.render``/``ctx.delta``/``ctx.emit`` and the ports work there as anywhere: what
touches the run (its journal, the platform's ports) is sent back to the run's loop. The executor's
bounds apply unchanged (the node's timeout and retries, the output checks, the run quotas). At most
``PLUGIN_THREADS`` such threads exist per process; a thread still busy when its node timed out or was
cancelled is abandoned (asked to stop, left to end on its own) and counted until it ends.
"""

import asyncio
import contextlib
import dataclasses
import inspect
import logging
import re
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, ClassVar

from django.core.signals import setting_changed

from config.conf import weft_settings

from .errors import NodeTimeout, NonRetryableError, RetryableError
from .nodes import base
from .nodes.base import NodeContext, NodeType
from .outputs import output_checked
from .ports import NodePorts

logger = logging.getLogger(__name__)

#: The entry point group a package declares its node types in.
ENTRY_POINT_GROUP = "weft.nodes"


def plugin_key(name: str) -> str:
    """A distribution's name as ``WEFT_ENGINE_PLUGINS`` compares it (normalised as PyPI does: PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class PluginInfo:
    """One installed distribution that declares node types, and whether they may be used here."""

    name: str
    version: str
    #: The node type names its entry points declare.
    types: tuple[str, ...]
    enabled: bool
    #: Why its node types cannot be used although it is enabled; "" when they can (or it is not enabled).
    error: str = ""

    @property
    def label(self) -> str:
        return f"{self.name} {self.version}"


@dataclass
class _State:
    enabled: frozenset[str]
    plugins: dict[str, PluginInfo] = field(default_factory=dict)
    #: Every installed plugin type name, and the plugin declaring it.
    origins: dict[str, PluginInfo] = field(default_factory=dict)
    #: The usable types of the enabled plugins, by name.
    types: dict[str, NodeType] = field(default_factory=dict)


_lock = threading.RLock()
_state: _State | None = None
#: What loading each distribution (key, version) gave: its node types, or why it cannot be used. A plugin is
#: imported once per process (until ``plugins_reload``); an import that never ended is not tried again.
_loaded: dict[tuple[str, str], tuple[dict[str, NodeType], str]] = {}


def _current() -> _State:
    """The plugins as ``WEFT_ENGINE_PLUGINS`` says now, loaded the first time it says so."""
    global _state
    enabled = frozenset(plugin_key(name) for name in weft_settings.PLUGINS)
    state = _state
    if state is not None and state.enabled == enabled:
        return state
    with _lock:
        if _state is None or _state.enabled != enabled:
            _state = _discover(enabled)
            base.registry_changed()
        return _state


def plugins_load() -> None:
    """Import the enabled plugins now (a process starting) rather than at the first graph that needs them."""
    _current()


def plugins_reload() -> None:
    """Look for installed plugins again and load the enabled ones again (after an install into a running process)."""
    global _state
    with _lock:
        _state = None
        _loaded.clear()
    _current()


def plugins_installed() -> list[PluginInfo]:
    """Every installed plugin, by name, with its version, its node types and whether they are usable."""
    state = _current()
    found = []
    for info in state.plugins.values():
        taken = [name for name in info.types if name in state.types and get_plugin_of(name) is None]
        if info.enabled and not info.error and taken:
            info = dataclasses.replace(info, error=f"its node type {taken[0]!r} is already a built-in node type.")
        found.append(info)
    return sorted(found, key=lambda info: plugin_key(info.name))


def get_plugin_of(type_name: str) -> PluginInfo | None:
    """The plugin whose node type ``type_name`` executes (None for a built-in or an app's type)."""
    return getattr(base.get_node_type(type_name), "plugin", None)


def plugin_type_problem(type_name: str) -> str | None:
    """Why ``type_name``, the type of an installed plugin, cannot be used; None if no plugin declares it."""
    info = _current().origins.get(type_name)
    if info is None:
        return None
    if not info.enabled:
        return (
            f"Node type {type_name!r} comes from the plugin {info.label}, which is not enabled "
            "(an operator enables it in WEFT_ENGINE_PLUGINS)."
        )
    return f"Node type {type_name!r} comes from the plugin {info.label}, which cannot be used: {info.error}"


def _discover(enabled: frozenset[str]) -> _State:
    by_distribution: dict[str, list[metadata.EntryPoint]] = {}
    for entry_point in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if entry_point.dist is not None and entry_point.dist.name:  # metadata without a name: not a distribution
            by_distribution.setdefault(plugin_key(entry_point.dist.name), []).append(entry_point)
    state = _State(enabled=enabled)
    for key in sorted(by_distribution):
        entry_points = sorted(by_distribution[key], key=lambda entry_point: entry_point.name)
        distribution = entry_points[0].dist
        info = PluginInfo(
            distribution.name,
            distribution.version,
            tuple(entry_point.name for entry_point in entry_points),
            enabled=key in enabled,
        )
        if info.enabled:
            if (key, info.version) not in _loaded:
                _loaded[key, info.version] = _load(info, entry_points)
            types, error = _loaded[key, info.version]
            info = dataclasses.replace(info, error=error)
        taken = [name for name in info.types if name in state.types]
        if taken and info.enabled and not info.error:
            first = state.origins[taken[0]]
            info = dataclasses.replace(info, error=f"its node type {taken[0]!r} is declared by {first.label} too.")
        state.plugins[key] = info
        for name in info.types:
            if name not in state.origins or (info.enabled and not state.origins[name].enabled):
                state.origins[name] = info
        if info.enabled and not info.error:
            state.types.update(types)
    return state


def _load(info: PluginInfo, entry_points: list[metadata.EntryPoint]) -> tuple[dict[str, NodeType], str]:
    """Import a plugin's entry points on a thread, within PLUGIN_IMPORT_TIMEOUT_S: its types, or why not."""
    imported: dict[str, Any] = {}

    def import_them() -> None:
        try:
            imported["classes"] = [(entry_point.name, entry_point.load()) for entry_point in entry_points]
        except BaseException as exc:  # a plugin's import may raise anything, SystemExit included
            imported["error"] = exc

    timeout = weft_settings.PLUGIN_IMPORT_TIMEOUT_S
    thread = threading.Thread(target=import_them, name=f"weft-plugin-import-{info.name}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        logger.error("The plugin %s did not finish importing within %g s; it is not used.", info.label, timeout)
        return {}, f"its import did not finish within {timeout:g} s."
    if "error" in imported:
        exc = imported["error"]
        logger.error("The plugin %s failed to import; it is not used.", info.label, exc_info=exc)
        return {}, f"it failed to import: {type(exc).__name__}: {exc}"
    types: dict[str, NodeType] = {}
    for name, implementation in imported["classes"]:
        if not (isinstance(implementation, type) and issubclass(implementation, NodeType)):
            return {}, f"its entry point {name!r} is not a NodeType subclass."
        if getattr(implementation, "type", None) != name:
            declared = getattr(implementation, "type", None)
            return {}, f"its entry point {name!r} names a node type whose `type` is {declared!r}."
        try:
            types[name] = _isolated(implementation, info)
        except Exception as exc:  # an __init__ of the plugin's
            return {}, f"its node type {name!r} cannot be made: {type(exc).__name__}: {exc}"
    return types, ""


def _isolated(implementation: type[NodeType], info: PluginInfo) -> NodeType:
    """The node type the engine registers for a plugin's class: its declarations, executed off the loop."""
    attributes = {
        name: getattr(implementation, name)
        for name in ("type", "description", "config_schema", "outputs", "example_config", "effects")
    }
    wrapper = type(
        implementation.__name__,
        (PluginNodeType,),
        # Its module is the plugin's, so that the node reference (docs/nodes.md) does not take it for Weft's.
        {**attributes, "__module__": implementation.__module__, "implementation": implementation(), "plugin": info},
    )
    return wrapper()


def _plugin_types() -> dict[str, NodeType]:
    return _current().types


base.node_type_source(_plugin_types)


def _forget(*, setting: str, **kwargs) -> None:
    """A test's settings.WEFT may enable other plugins: the next lookup loads them (``_current``)."""
    if setting == "WEFT":
        base.registry_changed()


setting_changed.connect(_forget)


class PluginNodeType(NodeType):
    """A plugin's node type as the engine runs it. Its ``check`` and ``declared_outputs`` are the plugin's,
    their exceptions turned into validation issues; its branches and sub-graphs are a plain node's."""

    implementation: ClassVar[NodeType]
    plugin: ClassVar[PluginInfo]
    in_process = False

    def check(self, config: dict):
        try:
            return list(self.implementation.check(config))
        except Exception as exc:
            return [("", f"The plugin {self.plugin.label} failed to check it: {type(exc).__name__}: {exc}")]

    def declared_outputs(self, config: dict) -> frozenset[str] | None:
        try:
            return self.implementation.declared_outputs(config)
        except Exception:
            return None

    async def execute(self, ctx: NodeContext, config: dict) -> dict:
        return await _execute_on_thread(self, ctx, config)


# --- Executing a plugin's node on a thread of its own -------------------------------------------------


class _ThreadSlots:
    """At most PLUGIN_THREADS plugin threads in this process, whatever loop asks: a slot is taken when a
    thread starts and given back when it ends (an abandoned thread keeps its slot until then)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._busy = 0
        self._waiting: deque[tuple[asyncio.AbstractEventLoop, asyncio.Future]] = deque()
        self._abandoned: set[threading.Thread] = set()

    async def acquire(self) -> None:
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._busy < weft_settings.PLUGIN_THREADS and not self._waiting:
                self._busy += 1
                return
            waiter = (loop, loop.create_future())
            self._waiting.append(waiter)
        try:
            await waiter[1]
        except asyncio.CancelledError:
            with self._lock:
                if waiter in self._waiting:
                    self._waiting.remove(waiter)
                    raise
            if waiter[1].done() and not waiter[1].cancelled():
                self.release()  # handed a slot just as it was cancelled
            raise

    def release(self) -> None:
        """Give a slot back (from any thread): to the first waiter whose loop still runs, else to the pool."""
        with self._lock:
            while self._waiting:
                loop, future = self._waiting.popleft()
                try:
                    loop.call_soon_threadsafe(self._hand_over, future)
                    return
                except RuntimeError:  # its loop is closed
                    continue
            self._busy -= 1

    def _hand_over(self, future: asyncio.Future) -> None:
        if future.cancelled():
            self.release()
        else:
            future.set_result(None)

    def abandon(self, thread: threading.Thread) -> None:
        with self._lock:
            self._abandoned.add(thread)

    def stuck(self) -> int:
        with self._lock:
            self._abandoned = {thread for thread in self._abandoned if thread.is_alive()}
            return len(self._abandoned)


_slots = _ThreadSlots()


def plugin_threads_abandoned() -> int:
    """Plugin threads of this process still running a node that timed out or was cancelled."""
    return _slots.stuck()


async def _execute_on_thread(node_type: PluginNodeType, ctx: NodeContext, config: dict) -> dict:
    label = node_type.plugin.label
    outer = asyncio.get_running_loop()
    try:
        await _slots.acquire()
    except asyncio.CancelledError:
        if _timed_out(ctx):
            raise NodeTimeout(
                f"Plugin {label}: timed out waiting for one of the {weft_settings.PLUGIN_THREADS} plugin threads "
                f"({plugin_threads_abandoned()} abandoned)."
            ) from None
        raise
    try:
        loop = asyncio.new_event_loop()
        inner = _context_on(loop, ctx)
        task = loop.create_task(_call(node_type.implementation, inner, config))
        done = outer.create_future()
        thread = threading.Thread(
            target=_serve, args=(loop, task, outer, done), name=f"weft-plugin-{node_type.type}", daemon=True
        )
        thread.start()
    except BaseException:
        _slots.release()  # no thread took it
        raise
    try:
        return await done
    except asyncio.CancelledError:
        _stop(loop, task, inner)
        if thread.is_alive():
            _slots.abandon(thread)
            logger.warning(
                "A node %s of run %s (plugin %s) was stopped while its thread still ran: the thread is abandoned.",
                ctx.node_id,
                ctx.run_id,
                label,
            )
        if _timed_out(ctx):
            raise NodeTimeout(f"Plugin {label}: timed out (the node's timeout_s).") from None
        raise
    except NonRetryableError as exc:
        raise NonRetryableError(f"Plugin {label}: {exc}") from exc
    except RetryableError as exc:
        raise RetryableError(f"Plugin {label}: {exc}", retry_after=exc.retry_after) from exc
    except Exception as exc:
        logger.warning("A node %s of run %s (plugin %s) raised", ctx.node_id, ctx.run_id, label, exc_info=exc)
        raise RetryableError(f"Plugin {label}: {type(exc).__name__}: {exc}") from exc


async def _call(implementation: NodeType, ctx: NodeContext, config: dict) -> dict:
    """The plugin's ``execute``, called on the plugin's loop (the call itself, whatever it does before its first
    ``await``, happens on the plugin's thread), and its output checked there, so that a bad one names the plugin."""
    output = await implementation.execute(ctx, config)
    if not isinstance(output, dict):
        raise NonRetryableError(f"The node returned {type(output).__name__}, not an object.")
    return output_checked(output)


def _timed_out(ctx: NodeContext) -> bool:
    """Whether the cancel that came is the node's timeout alone (not the run's cancel as well)."""
    left = ctx.time_left()
    return left is not None and left <= 0 and asyncio.current_task().cancelling() <= 1


def _serve(loop: asyncio.AbstractEventLoop, task: asyncio.Task, outer: asyncio.AbstractEventLoop, done) -> None:
    """The plugin thread: run the node's task to its end, answer ``done`` on the run's loop, clean up."""
    asyncio.set_event_loop(loop)
    try:
        try:
            outcome: tuple[Any, BaseException | None] = (loop.run_until_complete(task), None)
        except Exception as exc:
            outcome = (None, exc)
        except BaseException as exc:  # SystemExit, a CancelledError of its own: never past this thread
            outcome = (None, RuntimeError(f"{type(exc).__name__}: {exc}"))
        with contextlib.suppress(RuntimeError):  # the run's loop is closed: nobody waits
            outer.call_soon_threadsafe(_settle, done, outcome)
        left = asyncio.all_tasks(loop)
        for leftover in left:
            leftover.cancel()
        loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.run_until_complete(loop.shutdown_default_executor())
    except BaseException:  # a plugin's cleanup that raises ends this thread, nothing more
        logger.warning("A plugin thread did not clean up", exc_info=True)
    finally:
        asyncio.set_event_loop(None)
        loop.close()
        _slots.release()


def _settle(done: asyncio.Future, outcome: tuple[Any, BaseException | None]) -> None:
    if done.done():
        return
    result, error = outcome
    if error is not None:
        done.set_exception(error)
    else:
        done.set_result(result)


def _stop(loop: asyncio.AbstractEventLoop, task: asyncio.Task, inner: NodeContext) -> None:
    """Ask the plugin's task to stop (its loop runs on the plugin thread)."""

    def stop() -> None:
        inner.cancelled.set()
        task.cancel()

    with contextlib.suppress(RuntimeError):  # it ended meanwhile
        loop.call_soon_threadsafe(stop)


def _context_on(loop: asyncio.AbstractEventLoop, ctx: NodeContext) -> NodeContext:
    """``ctx`` for the plugin's loop: the same node, deadline and variables; what reaches the run sent to its loop."""
    outer = asyncio.get_running_loop()
    left = ctx.time_left()
    cancelled = asyncio.Event()
    if ctx.cancelled.is_set():
        cancelled.set()
    return NodeContext(
        run_id=ctx.run_id,
        workflow_id=ctx.workflow_id,
        node_id=ctx.node_id,
        node_type=ctx.node_type,
        attempt=ctx.attempt,
        variables=ctx.variables,
        scope=ctx.scope,
        deadline=None if left is None else loop.time() + left,
        cancelled=cancelled,
        emit=_on_loop(outer, ctx.emit),
        ports=NodePorts(
            **{port.name: _port_on(outer, getattr(ctx.ports, port.name)) for port in dataclasses.fields(NodePorts)}
        ),
    )


def _on_loop(outer: asyncio.AbstractEventLoop, function: Callable) -> Callable:
    """``function``, awaited from the plugin's loop but called and awaited on the run's loop ``outer``."""

    async def across(*args, **kwargs):
        async def call():
            value = function(*args, **kwargs)
            return await value if inspect.isawaitable(value) else value

        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(call(), outer))

    return across


class _PortOnLoop:
    """A port object (the conversation memory) whose methods the plugin's loop awaits on the run's loop."""

    def __init__(self, outer: asyncio.AbstractEventLoop, port: Any):
        self._outer, self._port = outer, port

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._port, name)
        return _on_loop(self._outer, value) if callable(value) else value


def _port_on(outer: asyncio.AbstractEventLoop, port: Any) -> Any:
    if port is None:
        return None
    return _on_loop(outer, port) if callable(port) else _PortOnLoop(outer, port)
