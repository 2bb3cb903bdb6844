"""Streaming a run's events to websocket clients through the channel layer.

Every event goes to the group ``run.<run id>``; the run-level ones (``run.*``) also go to
``workflow.<workflow id>.runs`` for the pages listing a workflow's runs. A message on the wire
is ``{"type", "run", "node", "seq", "at", "data"}``. It is encoded to JSON once, when published:
the channel layer carries ``{"type": "run.event", "seq", "kind", "text"}`` and every listener
sends ``text`` as it is (200 clients on a run cost one encoding, not 200).

The in-memory channel layer (embedded mode) belongs to the event loop its consumers wait on;
the embedded engine runs on a loop of its own, so its sends are handed over to the consumers'
loop (which a consumer registers on connect). channels_redis needs no such care.
"""

import asyncio
import json
from datetime import datetime

from channels.layers import InMemoryChannelLayer, get_channel_layer

RUN_GROUP = "run.{}"
WORKFLOW_RUNS_GROUP = "workflow.{}.runs"
HANDLER = "run.event"

_consumer_loop: asyncio.AbstractEventLoop | None = None


def bind_consumer_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Called by consumers: the loop the in-memory layer's receivers wait on."""
    global _consumer_loop
    _consumer_loop = loop


def event_message(*, run_id, seq: int, event_type: str, node_id: str, data: dict, at: datetime) -> dict:
    return {
        "type": event_type,
        "run": str(run_id),
        "node": node_id or None,
        "seq": seq,
        "at": at.isoformat().replace("+00:00", "Z"),
        "data": data,
    }


async def publish(*, workflow_id, message: dict) -> None:
    """Send one event message to its run's group (and the workflow's runs group for run events)."""
    layer = get_channel_layer()
    if layer is None:
        return
    groups = [RUN_GROUP.format(message["run"])]
    if message["type"].startswith("run."):
        groups.append(WORKFLOW_RUNS_GROUP.format(workflow_id))
    payload = wire(message)
    for group in groups:
        await _send(layer, group, payload)


def wire(message: dict) -> dict:
    """The channel-layer payload of an event message: its JSON text, with what listeners filter on."""
    return {"type": HANDLER, "seq": message["seq"], "kind": message["type"], "text": json.dumps(message)}


def unwire(payload: dict) -> dict:
    """The event message a channel-layer payload carries."""
    return json.loads(payload["text"])


async def _send(layer, group: str, payload: dict) -> None:
    loop = _consumer_loop
    foreign = loop is not None and loop.is_running() and loop is not asyncio.get_running_loop()
    if foreign and isinstance(layer, InMemoryChannelLayer):
        await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(layer.group_send(group, payload), loop))
        return
    await layer.group_send(group, payload)
