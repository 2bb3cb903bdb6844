"""The websocket clients of the live-events bench, in a process of their own (spawned: no Django here).

Clients are elsewhere in production (browsers on other machines); here up to 1,000 of them share one
process and the server's two cores, so each is kept as light as a client can be: websockets'
sans-I/O protocol driven straight from the socket's callback (no task, no queue per message),
the receipt time taken when the bytes arrive, the JSON read after the run. uvloop runs the
loop when it is installed.
"""

import asyncio
import json
import time
from datetime import datetime

from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.typing import Origin
from websockets.uri import parse_uri

#: Clients connecting at once: the figures are about events, not about a storm of connections
#: (daphne drops a websocket whose handshake waits over 5 s).
HANDSHAKES = 20
#: How the text of a run-level event starts (``live.event_message``'s first key), and of its first one.
RUN_EVENT = b'{"type": "run.'
RUN_STARTED = b'{"type": "run.started"'


def clients_main(urls: list[str], origin: str, pipe, token: str, wait_s: float) -> None:
    """In a process of its own: a client follows each of ``urls`` (a run's URL once per follower) until
    its run ends or ``wait_s`` has passed; their figures go back through ``pipe``."""
    clients = Clients(urls, origin=origin, pipe=pipe, token=token, wait_s=wait_s)
    try:
        import uvloop
    except ImportError:
        asyncio.run(clients.main())
    else:
        uvloop.run(clients.main())


class Clients:
    def __init__(self, urls: list[str], *, origin: str, pipe, token: str, wait_s: float):
        self.urls, self.origin, self.pipe, self.token, self.wait_s = urls, origin, pipe, token, wait_s
        self.followers: list[Follower] = []

    async def main(self) -> None:
        loop = asyncio.get_running_loop()
        everyone = asyncio.Event()
        connected = 0

        def on_snapshot() -> None:
            nonlocal connected
            connected += 1
            if connected == len(self.urls):
                everyone.set()

        handshakes = asyncio.Semaphore(HANDSHAKES)

        async def connect(url: str) -> None:
            uri = parse_uri(url)
            follower = Follower(uri, Origin(self.origin), loop, on_snapshot, token=self.token)
            self.followers.append(follower)
            async with handshakes:
                await loop.create_connection(lambda: follower, uri.host, uri.port)
                await asyncio.wait([follower.snapshot, follower.done], return_when=asyncio.FIRST_COMPLETED)

        try:
            await asyncio.gather(*(connect(url) for url in self.urls))
            await asyncio.wait_for(everyone.wait(), timeout=60)
            self.pipe.send({index: f.snapshot_seq for index, f in enumerate(self.followers)})
            await asyncio.wait([f.done for f in self.followers], timeout=self.wait_s)
        finally:
            for follower in self.followers:
                follower.close()
            self.pipe.send(self.read())

    def read(self) -> tuple[dict[int, list[int]], list[float]]:
        seqs, latencies = {}, []
        for index, follower in enumerate(self.followers):
            seqs[index] = []
            for now, raw in follower.received:
                event = json.loads(raw)
                at = datetime.fromisoformat(event["at"].replace("Z", "+00:00")).timestamp()
                latencies.append((now - at) * 1000)
                seqs[index].append(event["seq"])
        return seqs, latencies


class Follower(asyncio.Protocol):
    """One client: handshake, snapshot, then every event's bytes with the time they arrived."""

    def __init__(self, uri, origin, loop, on_snapshot, *, token: str):
        self.token = token
        self.protocol = ClientProtocol(uri, origin=origin, max_size=None)
        self.on_snapshot = on_snapshot
        self.snapshot_seq: int | None = None
        self.received: list[tuple[float, bytes]] = []
        self.snapshot = loop.create_future()
        self.done = loop.create_future()
        self.transport = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        request = self.protocol.connect()
        request.headers["Authorization"] = f"Token {self.token}"  # a token in the URL is not accepted
        self.protocol.send_request(request)
        self._flush()

    def data_received(self, data: bytes) -> None:
        now = time.time()
        self.protocol.receive_data(data)
        for event in self.protocol.events_received():
            if isinstance(event, Response):
                if self.protocol.handshake_exc is not None:
                    self._finish(self.protocol.handshake_exc)
            elif isinstance(event, Frame) and event.opcode is Opcode.TEXT:
                self._message(now, event.data)
        self._flush()

    def _message(self, now: float, data: bytes) -> None:
        if self.snapshot_seq is None:
            self.snapshot_seq = json.loads(data)["seq"]
            self.snapshot.set_result(None)
            self.on_snapshot()
            return
        self.received.append((now, data))
        if data.startswith(RUN_EVENT) and not data.startswith(RUN_STARTED):
            self._finish(None)  # closed once every client is done: closing now would delay the others

    def _flush(self) -> None:
        for data in self.protocol.data_to_send():
            if data and self.transport is not None:
                self.transport.write(data)

    def _finish(self, error) -> None:
        if not self.done.done():
            if error is None:
                self.done.set_result(None)
            else:
                self.done.set_exception(error)

    def connection_lost(self, exc) -> None:
        self.transport = None
        self._finish(exc or ConnectionError("The server closed the connection before the run ended."))

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
        if self.done.done() and not self.done.cancelled():
            self.done.exception()  # retrieved: no "never retrieved" warning
