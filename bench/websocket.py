"""Live events: engine emit → websocket client receipt, in two shapes users make.

- ``1x200``: one run followed by 200 clients (a run shown on a big screen, a demo).
- ``500x2``: 500 runs started together, each followed by 2 clients (a busy server: every user
  watching their own run, in two tabs).

The clients connect to the live server's ``/ws/runs/<id>/`` (daphne, channels_redis) from a
process of their own (as clients are elsewhere: their parsing must not slow the server down,
nor the engine their receipt; see ``_ws_clients``). Latency is the receipt time minus the
event's ``at`` (when it was recorded; same clock); delivery is the fraction of (client, event)
pairs received of those stored after each client's snapshot.

The run of ``1x200`` is executed by the engine in this process (on one event loop, after a
warm-up run, as a worker runs them); its journal publishes each batch of events once it is
committed. The 500 runs of ``500x2`` cannot be: the engine gives each run in flight a database
connection of its own, and 500 are more than a PostgreSQL server allows by default. They are
played instead as their journals would write them: each run records its events node by node
(``NODE_S_MANY`` apart), every batch is committed (one transaction for what all runs recorded
meanwhile, as a worker's runs commit in their own) and then published with ``live.publish_batch``,
the journal's own call. The server side, which this bench is about, gets what 500 running runs send.
"""

import asyncio
import multiprocessing
import random
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime

from django.db import connection, transaction
from django.utils import timezone

from config.conf import weft_settings
from workflows.execution import live
from workflows.execution.runner import run_execute
from workflows.models import Run, RunEvent, RunStatus, Workflow

from . import _graphs
from ._ws_clients import clients_main

ORDER = 20


@dataclass(frozen=True)
class Scenario:
    name: str
    runs: int
    followers: int
    #: Nodes a run has; each takes ``node_s``: events come at the pace a run makes, not in one burst.
    nodes: int
    node_s: float
    target_ms: float
    #: Rounds, each with new runs and new clients: the figure is the median round's p99, as the
    #: other figures are medians, so that one scheduling hiccup of a shared machine does not decide it.
    rounds: int


ONE_RUN = Scenario("1x200", runs=1, followers=200, nodes=30, node_s=0.02, target_ms=100, rounds=3)
#: A run's nodes are further apart here: 500 runs at a node each 20 ms would send one server
#: 50,000 events a second, many times what an engine process makes (bench engine's runs_per_s).
#: At 250 ms they send 4,000 a second (8,000 frames to write), still more than one worker makes.
NODE_S_MANY = 0.25
MANY_RUNS = Scenario("500x2", runs=500, followers=2, nodes=8, node_s=NODE_S_MANY, target_ms=50, rounds=3)
#: Seconds the clients wait for their runs to end after the last one connected.
WAIT_S = 60


def run(ctx) -> list[dict]:
    if not ctx.redis_url:
        ctx.warn("no REDIS_URL: the websocket figures need channels_redis between the server and the engine.")
        return rows_for(ctx, MANY_RUNS, None) + rows_for(ctx, ONE_RUN, None)
    rows = []
    workflow = Workflow.objects.create(owner=ctx.user, name="bench: websocket")
    for scenario in (MANY_RUNS, ONE_RUN):
        rows += rows_for(ctx, scenario, [measure(ctx, workflow, scenario) for _ in range(scenario.rounds)])
    return rows


def rows_for(ctx, scenario: Scenario, rounds: list[tuple] | None) -> list[dict]:
    p99_name, delivery_name = f"ws_event_p99_ms_{scenario.name}", f"ws_delivery_{scenario.name}"
    if rounds is None:
        return [
            ctx.result(p99_name, None, "ms", target=scenario.target_ms),
            ctx.result(delivery_name, None, "fraction", target=1.0, higher_is_better=True),
        ]
    p99s = [ctx.percentile(latencies, 99) if latencies else None for latencies, _, _, _ in rounds]
    expected = sum(round_expected for _, round_expected, _, _ in rounds)
    received = sum(round_received for _, _, round_received, _ in rounds)
    every = [latency for latencies, _, _, _ in rounds for latency in latencies]
    measured = None not in p99s
    note = ""
    if measured:
        note = (
            f"median of {scenario.rounds} rounds' p99 ({', '.join(f'{p99:.1f}' for p99 in p99s)} ms); "
            f"{len(every)} receipts, p50 {ctx.percentile(every, 50):.1f} ms; {scenario.runs} run(s) x "
            f"{scenario.followers} clients, {rounds[0][3]} events a run, nodes {scenario.node_s * 1000:g} ms apart"
        )
    return [
        ctx.result(p99_name, ctx.median(p99s) if measured else None, "ms", target=scenario.target_ms, note=note),
        ctx.result(
            delivery_name, received / expected if expected else None, "fraction", target=1.0, higher_is_better=True
        ),
    ]


def measure(ctx, workflow: Workflow, scenario: Scenario) -> tuple[list[float], int, int, int]:
    """One round: (latencies in ms, (client, event) pairs expected, pairs received, events a run)."""
    graph = _graphs.chain([("bench_sleep", {"seconds": scenario.node_s})] * scenario.nodes)
    runs = Run.objects.bulk_create(
        Run(workflow=workflow, graph=graph, inputs={}, triggered_by=ctx.user) for _ in range(scenario.runs)
    )
    urls = [f"{ctx.ws_url}/ws/runs/{run_row.pk}/" for run_row in runs for _ in range(scenario.followers)]
    spawn = multiprocessing.get_context("spawn")
    parent, child = spawn.Pipe()
    clients = spawn.Process(
        target=clients_main, args=(urls, ctx.base_url, child, ctx.token, WAIT_S), name="bench-ws-clients", daemon=True
    )
    clients.start()
    if scenario.runs == 1:
        warm_up = Run.objects.create(
            workflow=workflow, graph=_graphs.chain([("bench_sleep", {})] * 2), inputs={}, triggered_by=ctx.user
        )
        execute = engine_executes(runs[0], warm_up)
    else:
        execute = journals_play(runs, scenario)

    async def follow() -> dict:
        async def connected() -> dict:
            if not await asyncio.to_thread(parent.poll, 120):
                raise RuntimeError(f"The {len(urls)} websocket clients did not connect within 120 s.")
            return parent.recv()

        return await execute(connected)

    try:
        snapshot_seq = asyncio.run(follow())
        if not parent.poll(WAIT_S + 30):
            raise RuntimeError("The websocket clients did not report in time.")
        seqs, latencies = parent.recv()
    finally:
        clients.join(10)
        if clients.is_alive():
            clients.kill()
        connection.close()
    stored = dict.fromkeys((run_row.pk for run_row in runs), 0)
    for run_id in RunEvent.objects.filter(run__in=runs).values_list("run_id", flat=True):
        stored[run_id] += 1
    if scenario.runs > 1:  # played, not executed: ended as the engine would have ended them
        now = timezone.now()
        for seq in set(stored.values()):
            ended = [run_id for run_id, run_seq in stored.items() if run_seq == seq]
            Run.objects.filter(pk__in=ended).update(status=RunStatus.SUCCEEDED, last_seq=seq, finished_at=now)
    run_of = [run_row.pk for run_row in runs for _ in range(scenario.followers)]
    expected = sum(stored[run_of[index]] - seq for index, seq in snapshot_seq.items())
    received = sum(len(client_seqs) for client_seqs in seqs.values())
    return latencies, expected, received, max(stored.values())


def engine_executes(run_row: Run, warm_up: Run):
    async def execute(connected) -> dict:
        # As in a worker, whose one event loop runs run after run: a warm-up run first (not
        # measured) opens this loop's connections (the database's, the channel layer's).
        await run_execute(run_id=warm_up.pk)
        snapshot_seq = await connected()
        await run_execute(run_id=run_row.pk)
        return snapshot_seq

    return execute


def journals_play(runs: list[Run], scenario: Scenario):
    """The events of ``runs`` as their journals write and publish them (see the module's docstring)."""

    async def execute(connected) -> dict:
        recorded: asyncio.Queue[list[dict]] = asyncio.Queue()
        database = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bench-journal")
        loop = asyncio.get_running_loop()
        snapshot_seq = await connected()

        async def play(run_row: Run) -> None:
            # Started together, each run on its own clock: users' runs do not end their nodes in step.
            await asyncio.sleep(random.uniform(0, scenario.node_s))
            seq = 0

            def record(kinds: list[tuple[str, str]]) -> None:
                nonlocal seq
                batch = []
                for kind, node_id in kinds:
                    seq += 1
                    at = datetime.now(UTC)
                    batch.append(
                        live.event_message(run_id=run_row.pk, seq=seq, event_type=kind, node_id=node_id, data={}, at=at)
                    )
                recorded.put_nowait(batch)

            record([("run.started", ""), ("node.started", "n0000")])
            for index in range(scenario.nodes):
                await asyncio.sleep(scenario.node_s)
                last = index + 1 == scenario.nodes
                record(
                    [
                        ("node.succeeded", f"n{index:04d}"),
                        ("run.succeeded", "") if last else ("node.started", f"n{index + 1:04d}"),
                    ]
                )

        async def write_forever() -> None:
            while True:
                batches = [await recorded.get()]
                while not recorded.empty():
                    batches.append(recorded.get_nowait())
                await loop.run_in_executor(database, store, batches, created)
                by_run: dict[str, list[dict]] = {}
                for batch in batches:
                    by_run.setdefault(batch[0]["run"], []).extend(batch)
                await asyncio.gather(
                    *(live.publish_batch(workflow_id=runs[0].workflow_id, messages=batch) for batch in by_run.values())
                )
                for _ in batches:
                    recorded.task_done()

        created = {str(run_row.pk): run_row.created_at for run_row in runs}  # run_events' partition key
        writer = loop.create_task(write_forever())
        try:
            await asyncio.gather(*(play(run_row) for run_row in runs))
            joined = loop.create_task(recorded.join())
            await asyncio.wait({joined, writer}, return_when=asyncio.FIRST_COMPLETED)
            if writer.done():  # it failed: say why, rather than wait for batches nobody writes
                joined.cancel()
                writer.result()
        finally:
            writer.cancel()
            await loop.run_in_executor(database, close_connection)
            database.shutdown()
        return snapshot_seq

    return execute


def close_connection() -> None:
    connection.close()  # this thread's


def store(batches: list[list[dict]], created: dict) -> None:
    # As a journal commits: a batch that ends its run waits for the WAL flush, the others do not
    # (JOURNAL_SYNCHRONOUS_COMMIT, off by default; workflows/execution/journal.py).
    final = any(live.is_final(message["type"]) for batch in batches for message in batch)
    with transaction.atomic():
        if connection.vendor == "postgresql" and not (final or weft_settings.JOURNAL_SYNCHRONOUS_COMMIT):
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL synchronous_commit = off")
        RunEvent.objects.bulk_create(
            RunEvent(
                run_id=message["run"],
                run_created_at=created[message["run"]],
                seq=message["seq"],
                type=message["type"],
                node_id=message["node"] or "",
                data=message["data"],
                at=datetime.fromisoformat(message["at"]),
            )
            for batch in batches
            for message in batch
        )
