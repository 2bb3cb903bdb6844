"""Where a run's history goes: the executor reports events and task changes to a journal.

The Django-backed journal (``workflows.execution.journal``) writes rows and streams events;
:class:`MemoryJournal` keeps them in lists (tests, golden histories).

Node outputs reach a journal checked and cleaned (:mod:`.outputs`); a journal that stores
values cleans whatever it writes by the same rule all the same (an error text, a streamed
delta), so that no value can make its write fail. If its store still refuses a node's success
for its data, it stores the node as failed instead, and a ``durable`` record of that success
raises :class:`OutputNotStored`: the node is done (its effect happened: it is not retried) and
its ``on_failure`` applies.
"""

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from .errors import NonRetryableError


class OutputNotStored(NonRetryableError):
    """The node succeeded, but its output could not be stored: it was recorded failed instead."""


@dataclass
class TaskChange:
    """The state of one node execution (``scope`` tells iterations apart) after an event."""

    node_id: str
    scope: str
    node_type: str
    name: str
    status: str
    attempt: int
    output: Any = None
    error: str = ""
    started: bool = False
    finished: bool = False


@dataclass
class TaskRecord:
    """A node execution found when a run resumes."""

    status: str
    attempt: int
    output: Any = None
    error: str = ""


class Journal(Protocol):
    async def completed(self) -> dict[tuple[str, str], TaskRecord]:
        """Task rows of this run by (scope, node id): what a resumed run does not redo."""

    async def record(
        self, event_type: str, node_id: str, data: dict, task: TaskChange | None = None, *, durable: bool = False
    ) -> None:
        """Store one event (and the task change it reports) and stream it once stored.

        The event gets the next ``seq`` at once; it may be stored a moment later together with
        others (group commit), in ``seq`` order. With ``durable`` it, and every event before it,
        is stored before this returns, and a success whose output was refused raises
        :class:`OutputNotStored`.
        """

    async def flush(self) -> None:
        """Return once every event recorded so far is stored."""

    async def finish(self, status: str, *, outputs: dict | None, error: str, data: dict) -> None:
        """End the run with ``status`` and its final event, stored (with all before it) before this returns."""

    async def heartbeat(self) -> str:
        """Renew the run's lease; ``"ok"``, ``"cancel"`` (a cancel was requested) or ``"lost"``."""


@dataclass
class MemoryJournal:
    """Keeps everything in memory. ``previous`` pretends to be the task rows of an earlier attempt.

    Each event keeps the task change it reported (``"task"``), so that the task rows as they stood
    after any prefix of the events can be rebuilt (a crash there, resumed: the golden replays).
    """

    previous: dict[tuple[str, str], TaskRecord] = field(default_factory=dict)
    events: list[dict] = field(default_factory=list)
    tasks: dict[tuple[str, str], TaskChange] = field(default_factory=dict)
    status: str = "running"
    outputs: dict | None = None
    error: str = ""
    cancel_requested: bool = False

    async def completed(self) -> dict[tuple[str, str], TaskRecord]:
        return dict(self.previous)

    async def record(
        self, event_type: str, node_id: str, data: dict, task: TaskChange | None = None, *, durable: bool = False
    ) -> None:
        self.events.append(
            {
                "seq": len(self.events) + 1,
                "type": event_type,
                "node": node_id,
                "data": data,
                "at": datetime.now(UTC),
                "task": task,
            }
        )
        if task is not None:
            self.tasks[(task.scope, task.node_id)] = task

    async def flush(self) -> None:
        return None  # everything is "stored" as it is recorded

    async def finish(self, status: str, *, outputs: dict | None, error: str, data: dict) -> None:
        self.status, self.outputs, self.error = status, outputs, error
        await self.record(f"run.{status}", "", data)

    async def heartbeat(self) -> str:
        return "cancel" if self.cancel_requested else "ok"
