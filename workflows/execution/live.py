"""Streaming a run's events to websocket clients through the channel layer.

Every event goes to the group ``run.<run id>``; the run-level ones (``run.*``) also go to
``workflow.<workflow id>.runs`` for the pages listing a workflow's runs. A message on the wire
is ``{"type", "run", "node", "seq", "at", "data"}``. It is encoded to JSON once, when published:
the channel layer carries ``{"type": "run.event", "run", "seq", "kind", "text"}`` and every listener
sends ``text`` as it is (200 clients on a run cost one encoding, not 200). Events committed
together reach a run's group as one ``{"type": "run.events", "events": [...]}`` (``payloads``
unpacks either).

The in-memory channel layer (embedded mode) belongs to the event loop its consumers wait on;
the server's run loop is an event loop of its own, so its sends are handed over to the
consumers' loop (which a consumer registers on connect). channels_redis needs no such care.
"""

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from datetime import datetime

from channels.layers import InMemoryChannelLayer, get_channel_layer

from workflows.models import RUN_FINAL_STATUSES, RunEvent

RUN_GROUP = "run.{}"
#: Stored events are read this many at a time.
REPLAY_BATCH = 500
WORKFLOW_RUNS_GROUP = "workflow.{}.runs"
HANDLER = "run.event"
BATCH_HANDLER = "run.events"
#: The types of the events that end a run.
FINAL_EVENT_TYPES = frozenset(f"run.{status}" for status in RUN_FINAL_STATUSES)

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
    await publish_batch(workflow_id=workflow_id, messages=[message])


async def publish_batch(*, workflow_id, messages: list[dict]) -> None:
    """Send a run's events, committed together, to its group as one message (``run.events`` when
    there are several: a server then writes them to each socket at once); its run events
    (``run.started``, ``run.succeeded``...) also go to the workflow's runs group, likewise."""
    layer = get_channel_layer()
    if layer is None or not messages:
        return
    payloads = [wire(message) for message in messages]
    if len(payloads) == 1:
        await _send(layer, RUN_GROUP.format(messages[0]["run"]), payloads[0])
    else:
        await _send(layer, RUN_GROUP.format(messages[0]["run"]), {"type": BATCH_HANDLER, "events": payloads})
    ran = [payload for payload in payloads if payload["kind"].startswith("run.")]
    if ran:  # a short run starts and ends in one batch: one message, not two
        batch = ran[0] if len(ran) == 1 else {"type": BATCH_HANDLER, "events": ran}
        await _send(layer, WORKFLOW_RUNS_GROUP.format(workflow_id), batch)


def payloads(message: dict) -> list[dict]:
    """The event payloads a channel-layer message on a run's group carries (one, or a batch's)."""
    return message["events"] if message.get("type") == BATCH_HANDLER else [message]


def is_final(event_type: str) -> bool:
    """Whether an event of this type ends its run (``run.succeeded``, ``run.failed``, ``run.cancelled``)."""
    return event_type in FINAL_EVENT_TYPES


def events_after(run_id, seq: int) -> list[dict]:
    """The run's stored events after ``seq`` (at most ``REPLAY_BATCH``), as event messages."""
    return [
        event_message(
            run_id=run_id, seq=event.seq, event_type=event.type, node_id=event.node_id, data=event.data, at=event.at
        )
        for event in RunEvent.objects.filter(run_id=run_id, seq__gt=seq).order_by("seq")[:REPLAY_BATCH]
    ]


def wire(message: dict) -> dict:
    """The channel-layer payload of an event message: its JSON text, with what listeners filter on."""
    return {
        "type": HANDLER,
        "run": message["run"],
        "seq": message["seq"],
        "kind": message["type"],
        "text": json.dumps(message),
    }


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


class RunListener:
    """A channel in a run's group (see :func:`run_listening`): ``receive`` waits for its next message.

    One receive is in flight at a time and kept across timeouts: cancelling a receive is how a
    channel layer learns that the channel is gone (the pub/sub layer then drops its subscription).
    """

    def __init__(self, layer, channel: str):
        self.layer = layer
        self.channel = channel
        self._receiver: asyncio.Future | None = None

    async def receive(self, timeout: float) -> dict | None:
        """The next message, or None after ``timeout`` seconds without one."""
        if self._receiver is None:
            self._receiver = asyncio.ensure_future(self.layer.receive(self.channel))
        done, _ = await asyncio.wait({self._receiver}, timeout=timeout)
        if not done:
            return None
        receiver, self._receiver = self._receiver, None
        return receiver.result()

    async def close(self) -> None:
        receiver = self._receiver
        if receiver is None:
            receiver = asyncio.ensure_future(self.layer.receive(self.channel))
            await asyncio.sleep(0)  # let it start, so that its cancellation runs the layer's cleanup
        receiver.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await receiver


@contextlib.asynccontextmanager
async def run_listening(run_id) -> AsyncIterator[RunListener]:
    """Join the run's group for the block: read what is stored after joining, then what comes."""
    layer = get_channel_layer()
    channel = await layer.new_channel()
    group = RUN_GROUP.format(run_id)
    await layer.group_add(group, channel)
    listener = RunListener(layer, channel)
    try:
        yield listener
    finally:
        await layer.group_discard(group, channel)
        await listener.close()
