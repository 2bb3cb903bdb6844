"""The websocket clients of the live-events bench, in a process of their own (spawned: no Django here)."""

import asyncio
import json
import time
from datetime import datetime

import websockets

CLIENTS = 200


def clients_main(url: str, origin: str, pipe) -> None:
    """In a process of its own: ``CLIENTS`` clients follow the run; their figures go back through ``pipe``."""
    asyncio.run(Clients(url, origin=origin, pipe=pipe).main())


class Clients:
    def __init__(self, url: str, *, origin: str, pipe):
        self.url, self.origin, self.pipe = url, origin, pipe
        self.snapshot_seq: dict[int, int] = {}
        self.seqs: dict[int, list] = {}
        self.latencies: list[float] = []

    async def main(self) -> None:
        everyone = asyncio.Event()
        tasks = [asyncio.create_task(self._client(index, everyone)) for index in range(CLIENTS)]
        try:
            await asyncio.wait_for(everyone.wait(), timeout=60)
            self.pipe.send(self.snapshot_seq)
            await asyncio.wait(tasks, timeout=45)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.pipe.send((self.seqs, self.latencies))

    async def _client(self, index: int, everyone: asyncio.Event) -> None:
        async with websockets.connect(self.url, origin=self.origin, max_queue=None, open_timeout=60) as socket:
            snapshot = json.loads(await socket.recv())
            self.snapshot_seq[index] = snapshot["seq"]
            self.seqs[index] = []
            if len(self.snapshot_seq) == CLIENTS:
                everyone.set()
            async for raw in socket:
                now = time.time()
                event = json.loads(raw)
                at = datetime.fromisoformat(event["at"].replace("Z", "+00:00")).timestamp()
                self.latencies.append((now - at) * 1000)
                self.seqs[index].append(event["seq"])
                if event["type"].startswith("run.") and event["type"] != "run.started":
                    return
