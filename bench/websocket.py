"""Live events: engine emit → websocket client receipt, with 200 clients following one run.

The clients connect to the live server's ``/ws/runs/<id>/`` (daphne, channels_redis) from a
thread of their own; the run is then executed in this process, whose journal publishes each
event to the channel layer once its batch is committed. Latency is the receipt time minus the
event's ``at`` (when the engine recorded it; same clock); delivery is the fraction of
(client, event) pairs received of those stored after each client's snapshot.
"""

import asyncio
import json
import threading
import time
from datetime import datetime

import websockets

from workflows.execution.services import run_execute
from workflows.models import Run, RunEvent, Workflow

from . import _graphs

ORDER = 20
CLIENTS = 200
NODES = 30
#: Each node takes this long: events come at a pace a run makes, not in one burst.
NODE_S = 0.02


def run(ctx) -> list[dict]:
    if not ctx.redis_url:
        ctx.warn("no REDIS_URL: the websocket figures need channels_redis between the server and the engine.")
        return [
            ctx.result("ws_event_p99_ms", None, "ms", target=25),
            ctx.result("ws_delivery_200", None, "fraction", target=1.0, higher_is_better=True),
        ]
    workflow = Workflow.objects.create(owner=ctx.user, name="bench: websocket")
    graph = _graphs.chain([("bench_sleep", {"seconds": NODE_S})] * NODES)
    run_row = Run.objects.create(workflow=workflow, graph=graph, inputs={}, triggered_by=ctx.user)
    url = f"{ctx.ws_url}/ws/runs/{run_row.pk}/?token={ctx.token}"
    clients = Clients(url, origin=ctx.base_url)
    clients.start()
    if not clients.connected.wait(60):
        raise RuntimeError(f"Only {clients.snapshots} of {CLIENTS} websocket clients connected.")
    asyncio.run(run_execute(run_id=run_row.pk))
    clients.finished.wait(30)
    clients.stop()
    stored = RunEvent.objects.filter(run=run_row).count()
    expected = sum(stored - seq for seq in clients.snapshot_seq.values())
    received = sum(len(seqs) for seqs in clients.seqs.values())
    latencies = clients.latencies
    return [
        ctx.result(
            "ws_event_p99_ms",
            ctx.percentile(latencies, 99) if latencies else None,
            "ms",
            target=25,
            note=f"{len(latencies)} receipts, p50 {ctx.percentile(latencies, 50):.1f} ms, {CLIENTS} clients, "
            f"{stored} events"
            if latencies
            else "",
        ),
        ctx.result(
            "ws_delivery_200", received / expected if expected else None, "fraction", target=1.0, higher_is_better=True
        ),
    ]


class Clients(threading.Thread):
    """``CLIENTS`` websocket clients on an event loop of their own."""

    def __init__(self, url: str, *, origin: str):
        super().__init__(name="bench-ws-clients", daemon=True)
        self.url, self.origin = url, origin
        self.connected, self.finished = threading.Event(), threading.Event()
        self.snapshots = 0
        self.snapshot_seq: dict[int, int] = {}
        self.seqs: dict[int, set] = {}
        self.latencies: list[float] = []
        self.done = 0
        self._halt: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def run(self) -> None:
        asyncio.run(self._main())

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._halt.set)
        self.join(15)

    async def _main(self) -> None:
        self._loop, self._halt = asyncio.get_running_loop(), asyncio.Event()
        tasks = [asyncio.create_task(self._client(index)) for index in range(CLIENTS)]
        await self._halt.wait()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _client(self, index: int) -> None:
        async with websockets.connect(self.url, origin=self.origin, max_queue=None, open_timeout=60) as socket:
            snapshot = json.loads(await socket.recv())
            self.snapshot_seq[index] = snapshot["seq"]
            self.seqs[index] = set()
            self.snapshots += 1
            if self.snapshots == CLIENTS:
                self.connected.set()
            async for raw in socket:
                now = time.time()
                event = json.loads(raw)
                at = datetime.fromisoformat(event["at"].replace("Z", "+00:00")).timestamp()
                self.latencies.append((now - at) * 1000)
                self.seqs[index].add(event["seq"])
                if event["type"].startswith("run.") and event["type"] != "run.started":
                    self.done += 1
                    if self.done == CLIENTS:
                        self.finished.set()
                    return
