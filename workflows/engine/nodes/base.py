"""The node-type contract: one class per type, registered by name.

Adding a node type is one class in a module of this package::

    @register
    class Upper(NodeType):
        type = "upper"
        config_schema = {"type": "object", "required": ["text"], "properties": {"text": {"type": "string"}}}
        outputs = frozenset({"text"})

        async def execute(self, ctx: NodeContext, config: dict) -> dict:
            return {"text": (await ctx.render(config["text"])).upper()}

- ``config_schema`` is a JSON Schema (draft 2020-12) for the node's ``config``; :meth:`check`
  adds rules a schema cannot say. Problems come back as ``GraphIssue(node, "config.<path>", message)``.
- ``outputs`` names the fields of the dict ``execute`` returns (None: not known in advance, e.g.
  a code node), so that ``{{ node.field }}`` references can be checked before a run.
- ``execute`` receives the raw config and renders what it needs with ``await ctx.render`` /
  ``await ctx.render_value`` over the variables the node may see (within the node's timeout and
  the operator's template budgets, never holding the event loop for long). It raises
  :class:`~workflows.engine.errors.RetryableError` (with ``retry_after`` seconds when the other
  side said so) or :class:`~workflows.engine.errors.NonRetryableError`; anything else counts as
  retryable. Timeout and cancellation arrive as ``asyncio.CancelledError`` at an ``await``:
  release what you hold (kill a child process, close a connection) in ``finally``/``except`` and
  re-raise. Blocking work goes to a thread or a process (``asyncio.to_thread``), never on the loop.
"""

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

from jsonschema import Draft202012Validator

from ..errors import RunCancelled
from ..graph import GraphIssue
from ..ports import NO_PORTS, NodePorts
from ..templating import arender_text, arender_value, strings_in

EmitFunction = Callable[[str, dict], Awaitable[None]]


async def _discard(event_type: str, data: dict) -> None:
    return None


@dataclass
class NodeContext:
    """What a node sees while it executes. Built by the executor; tests may build one directly."""

    run_id: str = ""
    workflow_id: str = ""
    node_id: str = ""
    node_type: str = ""
    attempt: int = 1
    #: The variables the node may read: ``start``, its ancestors' outputs by node id, ``sys``.
    variables: dict = field(default_factory=dict)
    #: Tells iterations of one node apart (``"loop[3]"``); empty outside an iteration.
    scope: str = ""
    #: ``loop.time()`` at which the node's timeout expires, or None without a timeout.
    deadline: float | None = None
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    emit: EmitFunction = _discard
    #: Runs a sub-graph (iteration); set by the executor.
    run_subgraph: Callable[..., Awaitable[dict]] | None = None
    #: What the node may ask of the platform (the run's owner, its conversation): see ``workflows.engine.ports``.
    ports: NodePorts = NO_PORTS

    async def render(self, source: str) -> str:
        """Render ``source`` as text over the node's variables."""
        return await arender_text(source, self.variables, deadline=self._render_deadline(), lane=self.run_id)

    async def render_value(self, value: Any) -> Any:
        """Render every string in ``value``; ``"{{ a.b }}"`` alone keeps the value's type."""
        return await arender_value(value, self.variables, deadline=self._render_deadline(), lane=self.run_id)

    def _render_deadline(self) -> float | None:
        """The node's deadline on ``time.monotonic()``, the clock a render in a thread can read."""
        left = self.time_left()
        return None if left is None else time.monotonic() + left

    async def delta(self, data: dict) -> None:
        """Stream a partial result (an llm token, a progress note) as a ``node.delta`` event."""
        await self.emit("node.delta", data)

    def time_left(self) -> float | None:
        """Seconds until the node's timeout, or None without one (pass it on to a subprocess or a socket)."""
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - asyncio.get_running_loop().time())

    def raise_if_cancelled(self) -> None:
        if self.cancelled.is_set():
            raise RunCancelled("The run was cancelled.")


class NodeType:
    """Base class of a node type. Instances are stateless; one is registered per type."""

    type: ClassVar[str]
    description: ClassVar[str] = ""
    config_schema: ClassVar[dict] = {"type": "object"}
    outputs: ClassVar[frozenset[str] | None] = None
    #: A valid ``config``, shown by the node reference (docs/nodes.md) and offered by the API.
    example_config: ClassVar[dict | None] = None
    #: Whether executing it acts outside the run (a request, a model or tool call). Before such a
    #: node executes, everything the run recorded before it is stored, and its outcome is stored
    #: before the run goes on. A node without effects (a computation) is simply executed again if
    #: a crash loses its outcome, so the run does not wait for the disk around it.
    effects: ClassVar[bool] = True
    #: Whether it only computes, in the engine's own process and quickly: no sandbox, network, model
    #: or wait. A run made only of such nodes may execute in the web process that waits for it.
    in_process: ClassVar[bool] = False
    #: Whether a node of this type may carry ``"cache": {"ttl_s": N}``: its output follows from its
    #: config and the values it reads, so an earlier execution's may be reused (``workflows.engine.cache``).
    cacheable: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        Draft202012Validator.check_schema(cls.config_schema)
        cls._validator = Draft202012Validator(cls.config_schema)

    def declared_outputs(self, config: dict) -> frozenset[str] | None:
        """The output fields for this config; None when they cannot be known before the run."""
        return self.outputs

    def handles(self, config: dict) -> frozenset[str]:
        """The ``source_handle`` values its outgoing edges may carry ("" is a plain edge)."""
        return frozenset({""})

    def taken_handles(self, config: dict, output: dict) -> frozenset[str] | None:
        """The handles to follow after ``output``; None follows every plain edge."""
        return None

    def check(self, config: dict) -> Iterable[tuple[str, str]]:
        """Rules beyond the schema, as ``(field under config, message)``; run only if the schema passed."""
        return ()

    def template_strings(self, config: dict) -> Iterator[tuple[str, str]]:
        """The strings of the config that are templates, with their field: checked for references."""
        return strings_in(config, "config")

    def cache_refusal(self, config: dict) -> str | None:
        """Why a node of a cacheable type may not be cached with this config (None: it may)."""
        return None

    def reused_output(self, output: dict) -> dict:
        """The output of a node whose stored result is reused (a cache hit): by default the stored one."""
        return output

    def subgraphs(self, config: dict) -> Iterator[tuple[str, dict, dict]]:
        """Sub-graphs this node runs as ``(field, graph, extra variables)``: validated with the graph."""
        return iter(())

    def validate_config(self, node_id: str, config: Any) -> list[GraphIssue]:
        issues = [
            GraphIssue(node_id, _field_of(error), error.message)
            for error in sorted(self._validator.iter_errors(config), key=lambda e: list(e.absolute_path))
        ]
        if not issues:
            issues = [
                GraphIssue(node_id, f"config.{name}" if name else "config", msg) for name, msg in self.check(config)
            ]
        return issues

    async def execute(self, ctx: NodeContext, config: dict) -> dict:
        raise NotImplementedError


def _field_of(error) -> str:
    path = "config"
    for part in error.absolute_path:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    if error.validator == "required":
        missing = next((name for name in error.validator_value if repr(name) in error.message), None)
        if missing:
            path += f".{missing}"
    return path


_registry: dict[str, NodeType] = {}
#: Where node types beyond the registered ones come from (the enabled plugins: ``..plugins``); a
#: registered type keeps its name.
_sources: list[Callable[[], dict[str, NodeType]]] = []
#: Moves on every registration: what a graph's validation found may no longer hold.
registry_version = 0


def register(cls: type[NodeType]) -> type[NodeType]:
    """Class decorator: make ``cls`` the node type named ``cls.type``."""
    name = cls.type
    if name in _registry and type(_registry[name]) is not cls:
        raise ValueError(f"Node type {name!r} is registered twice.")
    _registry[name] = cls()
    global registry_version
    registry_version += 1
    return cls


def registry_changed() -> None:
    """The node types a source gives changed."""
    global registry_version
    registry_version += 1


def node_type_source(source: Callable[[], dict[str, NodeType]]) -> None:
    """Look up node types in ``source()`` too, after the registered ones."""
    _sources.append(source)


def get_node_type(name: str) -> NodeType | None:
    node_type = _registry.get(name)
    if node_type is not None:
        return node_type
    for source in _sources:
        node_type = source().get(name)
        if node_type is not None:
            return node_type
    return None


def node_type_names() -> list[str]:
    return sorted(set(_registry).union(*(source() for source in _sources)))
