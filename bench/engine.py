"""The engine's figures: per-node overhead (beside a bare Celery round trip), chains, start, throughput,
and how much a run rendering a heavy template delays another run of the same worker.

Runs are executed in this process by ``run_execute`` (the real executor and DatabaseJournal on
the bench's database), except ``start150_ms``, which goes through the live server's API and
the real dispatch (a Celery worker subprocess with Redis, the server's embedded engine without).
Per-node times come from the stored ``node.succeeded`` timestamps of consecutive nodes.
"""

import asyncio
import time
from datetime import UTC, datetime

from django.db import connection

from workflows.execution.runner import run_execute
from workflows.models import Run, RunEvent, Workflow
from workflows.services import workflow_create

from . import _graphs

ORDER = 10
CELERY_SAMPLES = 300
START_SAMPLES = 7
THROUGHPUT_WINDOW_S = 3.0
#: About a second of rendering within the default template budgets (131,071 macro calls of 200,000 steps).
HEAVY_TEMPLATE = "{% macro f(n) %}{% if n > 0 %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(16) }}"
NEIGHBOUR_SAMPLES = 7


def run(ctx) -> list[dict]:
    workflow = Workflow.objects.create(owner=ctx.user, name="bench: engine")
    rows = []
    execute(workflow, _graphs.noop_chain(20))  # warm-up: imports, connections, caches
    gaps = node_gaps(execute(workflow, _graphs.noop_chain(200)))
    rows.append(ctx.result("node_overhead_ms", ctx.median(gaps), "ms", note="median per no-op node, 200-node chain"))
    gaps = node_gaps(execute(workflow, _graphs.noop_chain(200, effects=True)))
    rows.append(
        ctx.result(
            "node_overhead_effects_ms",
            ctx.median(gaps),
            "ms",
            note="the same, each node treated as acting outside the run: a commit before it goes on",
        )
    )
    rows.append(celery_roundtrip(ctx))
    if rows[-1]["value"] is not None:
        for row in rows[:2]:
            row["ok"] = row["value"] < rows[-1]["value"]
            row["target"] = rows[-1]["value"]  # below celery_roundtrip_ms
    rows.append(chain40(ctx, workflow))
    rows.append(chain1000(ctx, workflow))
    rows.append(start150(ctx))
    for lanes in (1, 8, 32):
        rows.append(throughput(ctx, workflow, lanes))
    rows.append(noisy_neighbour(ctx, workflow))
    return rows


def execute(workflow: Workflow, graph: dict) -> Run:
    run = Run.objects.create(workflow=workflow, graph=graph, inputs={}, triggered_by=workflow.owner)
    status = asyncio.run(run_execute(run_id=run.pk))
    if status != "succeeded":
        run.refresh_from_db()
        raise RuntimeError(f"Bench run {run.pk} ended {status}: {run.error}")
    return run


def node_gaps(run: Run) -> list[float]:
    """Milliseconds between consecutive nodes' successes (chain order is seq order)."""
    times = list(
        RunEvent.objects.filter(run=run, type="node.succeeded", node_id__startswith="n")
        .order_by("seq")
        .values_list("at", flat=True)
    )
    return [(b - a).total_seconds() * 1000 for a, b in zip(times, times[1:], strict=False)]


def celery_roundtrip(ctx) -> dict:
    name = "celery_roundtrip_ms"
    if not ctx.redis_url:
        ctx.warn("no REDIS_URL: celery_roundtrip_ms is not measured.")
        return ctx.result(name, None, "ms")
    from . import _celery

    ctx.spawn(
        "-m",
        "celery",
        "-A",
        "bench._celery",
        "worker",
        "--pool=solo",
        "-Q",
        _celery.QUEUE,
        "-l",
        "warning",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        name="celery worker (bench ping)",
    )
    _celery.ping.delay(0).get(timeout=60)  # ready, and warm
    samples = []
    for index in range(CELERY_SAMPLES):
        began = time.perf_counter()
        assert _celery.ping.delay(index).get(timeout=10) == index
        samples.append((time.perf_counter() - began) * 1000)
    return ctx.result(
        name, ctx.median(samples), "ms", note="median of delay().get(): solo worker subprocess, Redis broker + pub/sub"
    )


def chain40(ctx, workflow: Workflow) -> dict:
    from workflows.engine.sandbox import prewarm

    prewarm()
    graph = _graphs.chain([("code", {"code": _graphs.CODE_10MS})] * 40)
    execute(workflow, graph)  # the sandbox's workers are warm from here on
    walls = []
    for _ in range(3):
        began = time.perf_counter()
        execute(workflow, graph)
        walls.append(time.perf_counter() - began)
    wall = ctx.median(walls)
    return ctx.result(
        "chain40_ratio", wall / 0.4, "ratio", target=1.3, note=f"median wall {wall * 1000:.0f} ms of 3, warm sandbox"
    )


def chain1000(ctx, workflow: Workflow) -> dict:
    """Per-node time over the last third of a 1,000-node chain / over its first: median of three runs.

    Each node commits on its own (a node with effects), so the per-node database work (journal,
    rows, events) is in the figure, at ~2 ms a node: large enough for the ratio not to be one of
    timer noise. Thirds, not the first and last 100 nodes, and three runs: the database's own
    phases (a checkpoint, an autovacuum of the tables the bench fills) move a 100-node median
    by 30% on a shared 2-core machine; a cost growing with the chain would move a third's by
    far more (linear growth per node: x3 between the thirds).
    """
    ratios, notes = [], []
    for _ in range(3):
        gaps = node_gaps(execute(workflow, _graphs.noop_chain(1000, effects=True)))
        third = len(gaps) // 3
        begin, finish = ctx.median(gaps[10:third]), ctx.median(gaps[-third:])
        ratios.append(finish / begin)
        notes.append(f"{begin:.2f} → {finish:.2f}")
    return ctx.result(
        "chain1000_growth",
        ctx.median(ratios),
        "ratio",
        target=1.2,
        note=f"median of 3; ms per node, first third → last third: {', '.join(notes)}",
    )


def start150(ctx) -> dict:
    graph = _graphs.wide_graph(150, 200)
    workflow = workflow_create(owner=ctx.user, name="bench: start150", graph=graph)
    if ctx.redis_url:
        ctx.spawn(
            "-m",
            "celery",
            "-A",
            "config",
            "worker",
            "--pool=prefork",
            "--concurrency=2",
            "-l",
            "warning",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            name="celery worker (weft)",
        )
    samples = []
    for attempt in range(START_SAMPLES + 1):
        began = datetime.now(UTC)
        response = ctx.client.post(f"/api/v1/workflows/{workflow.pk}/runs/", json={"inputs": {}})
        response.raise_for_status()
        run_id = response.json()["id"]
        first = wait_for_run(run_id, timeout=60 if attempt == 0 else 20)
        if attempt:  # the first one also waits for the worker to come up
            samples.append((first - began).total_seconds() * 1000)
    where = "Celery worker subprocess" if ctx.redis_url else "the server's embedded engine"
    return ctx.result(
        "start150_ms",
        ctx.median(samples),
        "ms",
        target=100,
        note=f"median of {START_SAMPLES}: POST .../runs/ → start node's node.started ({where})",
    )


def wait_for_run(run_id, *, timeout: float) -> datetime:
    """Wait until the run has finished; the time its first node started."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = Run.objects.filter(pk=run_id).values_list("status", flat=True).first()
        if run in ("succeeded", "failed", "cancelled"):
            if run != "succeeded":
                raise RuntimeError(f"Bench run {run_id} ended {run}.")
            return (
                RunEvent.objects.filter(run_id=run_id, type="node.started").order_by("seq").values_list("at", flat=True)
            )[0]
        time.sleep(0.02)
    raise RuntimeError(f"Bench run {run_id} did not finish in {timeout:g} s.")


def throughput(ctx, workflow: Workflow, lanes: int) -> dict:
    """``lanes`` runs in flight at once on one event loop (as in one engine process), for a few seconds."""
    graph = _graphs.template_chain(8)  # 10 nodes with start and end
    done = 0

    def create() -> Run:
        return Run.objects.create(workflow=workflow, graph=graph, inputs={}, triggered_by=workflow.owner)

    async def lane(deadline: float) -> None:
        nonlocal done
        while time.monotonic() < deadline:
            created = await asyncio.to_thread(create)
            status = await run_execute(run_id=created.pk)
            if status != "succeeded":
                raise RuntimeError(f"Bench run {created.pk} ended {status}.")
            done += 1

    async def measure() -> float:
        began = time.monotonic()
        await asyncio.gather(*(lane(began + THROUGHPUT_WINDOW_S) for _ in range(lanes)))
        return time.monotonic() - began

    elapsed = asyncio.run(measure())
    connection.close()
    return ctx.result(
        f"runs_per_s_{lanes}",
        done / elapsed,
        "runs/s",
        note=f"{done} runs of a 10-node graph in {elapsed:.1f} s, {lanes} at once in one engine process",
    )


def noisy_neighbour(ctx, workflow: Workflow) -> dict:
    """A one-template run's latency while another run of the same engine renders a heavy template, minus alone.

    Runs are handed to an embedded engine's loop from this thread, as the server hands them over:
    a run submitted while that loop is held waits for it, so the figure shows any hold. The
    samples are those submitted while the heavy run is still executing (median).
    """
    from workflows.execution.run_loop import RunLoop

    engine = RunLoop(reaper=False, name="bench-noisy-neighbour")
    trivial = _graphs.template_chain(1)

    def latency() -> float:
        run = Run.objects.create(workflow=workflow, graph=trivial, inputs={}, triggered_by=workflow.owner)
        began = time.perf_counter()
        status = engine.submit(run.pk).result(timeout=120)
        if status != "succeeded":
            raise RuntimeError(f"Bench run {run.pk} ended {status}.")
        return (time.perf_counter() - began) * 1000

    latency()  # warm-up: the engine's loop, its connection
    alone = ctx.median([latency() for _ in range(NEIGHBOUR_SAMPLES)])
    heavy = Run.objects.create(
        workflow=workflow,
        graph=_graphs.chain([("template", {"template": HEAVY_TEMPLATE})]),
        inputs={},
        triggered_by=workflow.owner,
    )
    rendering = engine.submit(heavy.pk)
    time.sleep(0.1)  # claimed, its start node done: its template node renders
    beside = []
    while not rendering.done():
        beside.append(latency())
    if rendering.result() != "succeeded":
        raise RuntimeError(f"Bench run {heavy.pk} ended {rendering.result()}.")
    name = "noisy_neighbour_delay_ms"
    if not beside:
        ctx.warn(f"{name}: the heavy run ended before a trivial run could be submitted beside it.")
        return ctx.result(name, None, "ms")
    delay = ctx.median(beside) - alone
    return ctx.result(
        name,
        delay,
        "ms",
        target=50,
        note=f"median of {len(beside)} beside a 131k-macro-call render, {ctx.median(beside):.1f} ms, minus "
        f"{alone:.1f} ms alone",
    )
