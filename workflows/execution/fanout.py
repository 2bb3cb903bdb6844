"""One server process, many followers of a run: each event is received once per process.

Channels gives every websocket a channel of its own, so an event for a run that 200 clients
follow through one server process would cost 200 channel-layer deliveries and 200 consumer
wake-ups. Here a process's followers of a run share one channel-layer subscription
(``RunFanout``), and its receive loop hands each event to every follower (``live_event``), which
sends the event's text, encoded once when it was published, through its consumer's own ``send``.
A follower that is not up to date (sending its snapshot or stored events, or behind a gap)
queues the event and sends it, in order, once it has caught up.
"""

import asyncio
import logging
import weakref
from typing import Protocol

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer

from . import live

logger = logging.getLogger(__name__)

#: After the channel layer failed to deliver, wait this long before receiving again.
RECEIVE_RETRY_S = 0.5
#: Seconds without a live event after which a followed run's stored events are read.
CATCH_UP_S = 3.0


class Follower(Protocol):
    async def live_event(self, message: dict) -> None:
        """An event of the followed run (a ``live.wire`` payload).

        Awaited follower after follower, so it must not wait: a follower that would (for a read of
        stored events, or behind a send of its own) queues the event instead. An ASGI send does
        not wait for the client under daphne, whose send hands the frame to the socket's buffer."""


class _FollowedRun:
    __slots__ = ("run_id", "followers", "seen", "heard", "ended")

    def __init__(self, run_id, now: float):
        self.run_id, self.followers, self.seen, self.heard, self.ended = run_id, set(), 0, now, False


class RunFanout:
    """The followers of runs on one event loop, and the one channel they receive through.

    The channel layer delivers at most once, and a worker that dies between storing events and
    publishing them never publishes them: a run followed here that has been silent for
    ``CATCH_UP_S`` is looked up in the database (one query per run, not per follower) and the
    stored events after the last one seen are delivered as if live, until the run has ended.
    """

    def __init__(self, layer):
        self.layer = layer
        self.runs: dict[str, _FollowedRun] = {}
        self.channel: str | None = None
        self._tasks: list[asyncio.Task] = []
        self._membership = asyncio.Lock()
        self._delivering = asyncio.Lock()

    async def follow(self, run_id, follower: Follower) -> None:
        """From now on, ``follower`` gets the run's events (the group is joined when this returns)."""
        group = live.RUN_GROUP.format(run_id)
        async with self._membership:
            run = self.runs.get(group)
            if run is None:
                if self.channel is None:
                    self.channel = await self.layer.new_channel()
                    self._tasks = [
                        asyncio.create_task(self._receive_forever(self.channel)),
                        asyncio.create_task(self._catch_up_forever()),
                    ]
                await self.layer.group_add(group, self.channel)
                run = self.runs[group] = _FollowedRun(run_id, asyncio.get_running_loop().time())
            run.followers.add(follower)

    def seen(self, run_id, seq: int, *, ended: bool = False) -> None:
        """A follower has sent the run's events up to ``seq`` (from the database): none are missing before."""
        run = self.runs.get(live.RUN_GROUP.format(run_id))
        if run is not None:
            run.seen = max(run.seen, seq)
            run.ended = run.ended or ended

    async def unfollow(self, run_id, follower: Follower) -> None:
        group = live.RUN_GROUP.format(run_id)
        async with self._membership:
            run = self.runs.get(group)
            if run is None or follower not in run.followers:
                return
            run.followers.discard(follower)
            if run.followers:
                return
            del self.runs[group]
            await self.layer.group_discard(group, self.channel)
            if not self.runs:
                tasks, self._tasks, self.channel = self._tasks, [], None
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

    async def _receive_forever(self, channel: str) -> None:
        while True:
            try:
                message = await self.layer.receive(channel)
            except asyncio.CancelledError:
                raise
            except Exception:
                # The layer reconnects by itself; what was missed is caught up from the database.
                logger.exception("Receiving live events failed; retrying.")
                await asyncio.sleep(RECEIVE_RETRY_S)
                continue
            if message.get("type") in (live.HANDLER, live.BATCH_HANDLER):
                for payload in live.payloads(message):
                    await self.deliver(payload)

    async def _catch_up_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(CATCH_UP_S / 4)
            for run in list(self.runs.values()):
                if not run.ended and loop.time() - run.heard >= CATCH_UP_S:
                    run.heard = loop.time()
                    try:
                        await self._catch_up(run)
                    except Exception:
                        logger.exception("Reading the stored events of run %s failed.", run.run_id)

    async def _catch_up(self, run: _FollowedRun) -> None:
        while True:
            events = await database_sync_to_async(live.events_after)(run.run_id, run.seen)
            for event in events:
                await self.deliver(live.wire(event))
            if len(events) < live.REPLAY_BATCH:
                return

    async def deliver(self, message: dict) -> None:
        """Hand one event to each of its run's followers, in turn.

        One delivery at a time (the receive loop's and the catch-up's take turns), so that each
        follower gets a run's events in the order they are handed over.
        """
        async with self._delivering:
            run = self.runs.get(live.RUN_GROUP.format(message["run"]))
            if run is None:
                return
            run.heard = asyncio.get_running_loop().time()
            run.seen = max(run.seen, message["seq"])
            run.ended = run.ended or live.is_final(message["kind"])
            for follower in tuple(run.followers):
                try:
                    await follower.live_event(message)
                except Exception:
                    logger.exception("A follower failed to take a live event.")


_fanouts: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, RunFanout]" = weakref.WeakKeyDictionary()


def fanout() -> RunFanout:
    """The running loop's fan-out (daphne has one loop; tests may run many)."""
    loop = asyncio.get_running_loop()
    hub = _fanouts.get(loop)
    if hub is None:
        hub = _fanouts[loop] = RunFanout(get_channel_layer())
    return hub
