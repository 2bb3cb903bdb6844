"""Live events: engine emit → websocket client receipt, with 200 clients following one run.

The clients connect to the live server's ``/ws/runs/<id>/`` (daphne, channels_redis) from a
process of their own (as clients are elsewhere: their parsing must not slow the engine down,
nor the engine their receipt; see ``_ws_clients``); the run is then executed in this process,
on one event loop after a warm-up run, as a worker runs them, and its journal publishes each
batch of events to the channel layer once it is committed. Latency is the receipt time minus
the event's ``at`` (when the engine recorded it; same clock); delivery is the fraction of
(client, event) pairs received of those stored after each client's snapshot.
"""

import asyncio
import multiprocessing

from workflows.execution.runner import run_execute
from workflows.models import Run, RunEvent, Workflow

from . import _graphs
from ._ws_clients import CLIENTS, clients_main

ORDER = 20
NODES = 30
#: Each node takes this long: events come at a pace a run makes, not in one burst.
NODE_S = 0.02


#: Rounds, each a new run followed by a new set of clients: the figure is the median round's p99,
#: as the other figures are medians, so that one scheduling hiccup of a shared machine does not
#: decide it.
ROUNDS = 3


def run(ctx) -> list[dict]:
    if not ctx.redis_url:
        ctx.warn("no REDIS_URL: the websocket figures need channels_redis between the server and the engine.")
        return [
            ctx.result("ws_event_p99_ms", None, "ms", target=25),
            ctx.result("ws_delivery_200", None, "fraction", target=1.0, higher_is_better=True),
        ]
    workflow = Workflow.objects.create(owner=ctx.user, name="bench: websocket")
    rounds = [measure(ctx, workflow) for _ in range(ROUNDS)]
    p99s = [ctx.percentile(latencies, 99) if latencies else None for latencies, _, _, _ in rounds]
    expected = sum(round_expected for _, round_expected, _, _ in rounds)
    received = sum(round_received for _, _, round_received, _ in rounds)
    every = [latency for latencies, _, _, _ in rounds for latency in latencies]
    measured = None not in p99s
    note = ""
    if measured:
        note = (
            f"median of {ROUNDS} runs' p99 ({', '.join(f'{p99:.1f}' for p99 in p99s)} ms); {len(every)} receipts, "
            f"p50 {ctx.percentile(every, 50):.1f} ms, {CLIENTS} clients, {rounds[0][3]} events a run"
        )
    return [
        ctx.result("ws_event_p99_ms", ctx.median(p99s) if measured else None, "ms", target=25, note=note),
        ctx.result(
            "ws_delivery_200", received / expected if expected else None, "fraction", target=1.0, higher_is_better=True
        ),
    ]


def measure(ctx, workflow: Workflow) -> tuple[list[float], int, int, int]:
    """One round: (latencies in ms, (client, event) pairs expected, pairs received, events stored)."""
    warm_up = Run.objects.create(
        workflow=workflow,
        graph=_graphs.chain([("bench_sleep", {"seconds": NODE_S})] * 2),
        inputs={},
        triggered_by=ctx.user,
    )
    graph = _graphs.chain([("bench_sleep", {"seconds": NODE_S})] * NODES)
    run_row = Run.objects.create(workflow=workflow, graph=graph, inputs={}, triggered_by=ctx.user)
    url = f"{ctx.ws_url}/ws/runs/{run_row.pk}/"
    parent, child = multiprocessing.get_context("spawn").Pipe()
    clients = multiprocessing.get_context("spawn").Process(
        target=clients_main, args=(url, ctx.base_url, child, ctx.token), name="bench-ws-clients", daemon=True
    )
    clients.start()

    async def execute() -> dict:
        # As in a worker, whose one event loop runs run after run: a warm-up run first (not
        # measured) opens this loop's connections (the database's, the channel layer's).
        await run_execute(run_id=warm_up.pk)
        if not await asyncio.to_thread(parent.poll, 60):
            raise RuntimeError(f"The {CLIENTS} websocket clients did not connect within 60 s.")
        snapshot_seq = parent.recv()
        await run_execute(run_id=run_row.pk)
        return snapshot_seq

    try:
        snapshot_seq = asyncio.run(execute())
        if not parent.poll(60):
            raise RuntimeError("The websocket clients did not report within 60 s.")
        seqs, latencies = parent.recv()
    finally:
        clients.join(10)
        if clients.is_alive():
            clients.kill()
    stored = RunEvent.objects.filter(run=run_row).count()
    expected = sum(stored - seq for seq in snapshot_seq.values())
    received = sum(len(client_seqs) for client_seqs in seqs.values())
    return latencies, expected, received, stored
