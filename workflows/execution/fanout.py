"""One server process, many followers of a run: each event is received once and framed once.

Channels gives every websocket a channel of its own, so an event for a run that 200 clients
follow through one daphne process costs 200 channel-layer deliveries, 200 consumer wake-ups and
200 framings by autobahn (about 0.1 ms each): a run's events then queue behind each other.
Here a process's followers of a run share one channel-layer subscription (``RunFanout``); each
event is framed once (autobahn's ``PreparedMessage``) and written straight to the socket of
every follower that is up to date (``DirectSocket``, which ``DirectSocketMiddleware`` finds under
daphne). A follower that is not up to date (sending its snapshot or stored events, or behind a
gap) or has no direct socket (another ASGI server, the test communicator) gets the event
through its consumer, in order, as before.
"""

import asyncio
import functools
import logging
import socket
import weakref
from collections.abc import Callable
from typing import Protocol

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer

from . import live

logger = logging.getLogger(__name__)

SCOPE_KEY = "weft.direct_socket"
#: After the channel layer failed to deliver, wait this long before receiving again.
RECEIVE_RETRY_S = 0.5
#: Seconds without a live event after which a followed run's stored events are read.
CATCH_UP_S = 3.0


class Follower(Protocol):
    def live_event(self, message: dict, frame: Callable[[], object]) -> None:
        """An event of the followed run; ``frame()`` is its frame for ``DirectSocket.send``."""


class DirectSocket:
    """A daphne websocket, written to without the ASGI send (and its per-socket framing).

    Frames given to ``send`` wait for the end of the loop's turn and leave in one write: events
    that arrive together (a node's end and the next one's start) cost one system call per socket.
    ``flush`` writes them at once; the consumer calls it before anything it sends through ASGI.
    """

    def __init__(self, server, protocol):
        self.server, self.protocol = server, protocol
        self.pending: list[bytes] = []

    @classmethod
    def of(cls, send) -> "DirectSocket | None":
        """The socket behind daphne's ASGI ``send`` (a partial of ``Server.handle_reply``), else None."""
        try:
            from daphne.server import Server
            from daphne.ws_protocol import WebSocketProtocol
        except ImportError:  # another ASGI server
            return None
        if not isinstance(send, functools.partial) or len(send.args) != 1:
            return None
        server, protocol = getattr(send.func, "__self__", None), send.args[0]
        if isinstance(server, Server) and isinstance(protocol, WebSocketProtocol):
            return cls(server, protocol)
        return None

    @staticmethod
    def frame(text: str):
        """``text`` as one websocket text frame, shareable by every socket."""
        from autobahn.websocket.protocol import PreparedMessage

        return PreparedMessage(text.encode("utf-8"), False, False, True)

    def open(self) -> bool:
        protocol = self.protocol
        if protocol.state != protocol.STATE_OPEN:
            return False
        connection = self.server.connections.get(protocol)
        return connection is not None and not connection.get("disconnected")

    def send(self, frame) -> bool:
        """Send ``frame`` after what the socket has been given; False once the socket is closing."""
        if not self.open():
            return False
        protocol = self.protocol
        if protocol.send_queue or protocol._perMessageCompress is not None:
            self.flush()
            protocol.sendPreparedMessage(frame)  # autobahn has sends queued, or compresses
            return True
        if not self.pending:
            if not _unflushed:
                asyncio.get_running_loop().call_soon(_flush_all)
            _unflushed.append(self)
        self.pending.append(frame.payloadHybi)
        return True

    def flush(self) -> None:
        if not self.pending:
            return
        data = self.pending[0] if len(self.pending) == 1 else b"".join(self.pending)
        self.pending.clear()
        if self.open():
            write_through(self.protocol.transport, data)


#: The sockets given frames during this turn of daphne's (one) event loop, flushed at its end.
_unflushed: list[DirectSocket] = []


def _flush_all() -> None:
    sockets = _unflushed[:]
    _unflushed.clear()
    for direct_socket in sockets:
        direct_socket.flush()


def write_through(transport, data: bytes) -> None:
    """``transport.write(data)``, but sent at once when nothing is buffered before it.

    Twisted buffers every write until the loop finds the socket writable: two epoll changes and
    a loop turn per socket and event, most of a fan-out's cost. A socket with nothing pending
    takes the bytes now; what it does not take (or any error) goes through ``write`` as before.
    """
    sock = getattr(transport, "socket", None)
    if (
        isinstance(sock, socket.socket)
        and getattr(transport, "TLS", True) is False
        and getattr(transport, "connected", False)
        and not getattr(transport, "disconnecting", True)
        and not getattr(transport, "_writeDisconnected", True)
        and getattr(transport, "dataBuffer", None) == b""
        and getattr(transport, "_tempDataBuffer", None) == []
    ):
        try:
            sent = sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            sent = 0  # twisted's own write meets the error and closes the connection
        data = data[sent:]
    if data:
        transport.write(data)


class DirectSocketMiddleware:
    """Outermost ASGI middleware: puts daphne's websocket in the scope (``SCOPE_KEY``) when there is one."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "websocket":
            socket = DirectSocket.of(send)
            if socket is not None:
                scope = {**scope, SCOPE_KEY: socket}
        return await self.app(scope, receive, send)


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
                    self.deliver(payload)

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
                self.deliver(live.wire(event))
            if len(events) < live.REPLAY_BATCH:
                return

    def deliver(self, message: dict) -> None:
        run = self.runs.get(live.RUN_GROUP.format(message["run"]))
        if run is None:
            return
        run.heard = asyncio.get_running_loop().time()
        run.seen = max(run.seen, message["seq"])
        run.ended = run.ended or live.is_final(message["kind"])
        frame = _Once(DirectSocket.frame, message["text"])
        for follower in tuple(run.followers):
            try:
                follower.live_event(message, frame)
            except Exception:
                logger.exception("A follower failed to take a live event.")


class _Once:
    """``f(arg)``, computed on the first call only."""

    __slots__ = ("f", "arg", "value")

    def __init__(self, f, arg):
        self.f, self.arg, self.value = f, arg, None

    def __call__(self):
        if self.value is None:
            self.value = self.f(self.arg)
        return self.value


_fanouts: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, RunFanout]" = weakref.WeakKeyDictionary()


def fanout() -> RunFanout:
    """The running loop's fan-out (daphne has one loop; tests may run many)."""
    loop = asyncio.get_running_loop()
    hub = _fanouts.get(loop)
    if hub is None:
        hub = _fanouts[loop] = RunFanout(get_channel_layer())
    return hub
