"""Ports: what a node may ask of the platform the engine runs in, injected by whoever runs the graph.

The engine is a library: it knows no application's tables. A node type that needs the platform
(whose resources a run may use, the conversation a run continues) asks its context's ``ports``;
the execution layer builds them for each run (``workflows.execution.ports``), and a test may
build its own. A port a run has not been given is ``None``: the node fails, not retried, with
:meth:`NodePorts.need`'s message.
"""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from .errors import NonRetryableError


class ConversationMemory(Protocol):
    """The earlier rounds of the conversation a run continues (a ``chat_id`` of a released version)."""

    async def load(self, *, node_id: str, limits: dict) -> list[dict]:
        """The earlier rounds of ``node_id`` as chat messages, oldest first, within ``limits``."""

    async def append(self, *, node_id: str, question: str, answer: str, limits: dict) -> None:
        """Store the round ``node_id`` just had."""


class PortMissing(NonRetryableError):
    """The node needs something of the platform that this run was not given."""


@dataclass(frozen=True)
class NodePorts:
    #: The id of the user whose resources (LLM providers, tools, agents) the run may use: its workflow's owner
    #: (None: the workflow is gone).
    owner_id: Callable[[], Awaitable[Any | None]] | None = None
    #: The conversation the run continues; None when it continues none.
    memory: ConversationMemory | None = None

    def need(self, name: str, why: str):
        """The port ``name``, or :class:`PortMissing` saying ``why`` the node needs it."""
        port = getattr(self, name)
        if port is None:
            raise PortMissing(f"{why} This run has no {name.replace('_', ' ')}.")
        return port


#: What a context built without ports (a test, a graph run outside the platform) has: nothing.
NO_PORTS = NodePorts()
