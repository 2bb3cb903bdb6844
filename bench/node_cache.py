"""The node result cache (docs/cache.md): how long a code node takes when its result is reused, against
when it runs (a miss: the sandbox executes it).

Runs are executed in this process by ``run_execute`` (the real executor, DatabaseJournal and Django
cache: Redis with ``REDIS_URL``, local memory without). The times are the nodes' own
``duration_ms`` (a hit's is its lookup), medians over ``SAMPLES`` runs.
"""

import asyncio

from workflows.execution.runner import run_execute
from workflows.models import Run, RunEvent, Workflow

from . import _graphs

ORDER = 20
SAMPLES = 9


def run(ctx) -> list[dict]:
    from workflows.engine.sandbox import prewarm

    prewarm()
    workflow = Workflow.objects.create(owner=ctx.user, name="bench: node cache")
    graph = _graphs.chain([("code", {"code": _graphs.CODE_10MS, "inputs": {"n": "{{ start.n }}"}})])
    graph["nodes"][0]["config"]["inputs"] = [{"name": "n", "type": "integer"}]
    graph["nodes"][1]["cache"] = {"ttl_s": 600}
    node_time(workflow, graph, {"n": -1})  # warm-up: imports, connections, a sandbox worker
    misses = [node_time(workflow, graph, {"n": n}) for n in range(SAMPLES)]
    hits = [node_time(workflow, graph, {"n": 0}) for _ in range(SAMPLES)]
    if not all(cached for _, cached in hits) or any(cached for _, cached in misses):
        raise RuntimeError("The node cache did not hit and miss as the bench expects.")
    return [
        ctx.result(
            "node_cache_miss_ms",
            ctx.median([ms for ms, _ in misses]),
            "ms",
            note=f"median of {SAMPLES}: a code node that sleeps 10 ms, executed in the sandbox",
        ),
        ctx.result(
            "node_cache_hit_ms",
            ctx.median([ms for ms, _ in hits]),
            "ms",
            note=f"median of {SAMPLES}: the same node reused (digest, the run's one read of its owner, 2 cache reads)",
        ),
    ]


def node_time(workflow: Workflow, graph: dict, inputs: dict) -> tuple[float, bool]:
    """The code node's ``duration_ms`` in a new run, and whether its result was reused."""
    run = Run.objects.create(workflow=workflow, graph=graph, inputs=inputs, triggered_by=workflow.owner)
    status = asyncio.run(run_execute(run_id=run.pk))
    if status != "succeeded":
        run.refresh_from_db()
        raise RuntimeError(f"Bench run {run.pk} ended {status}: {run.error}")
    data = RunEvent.objects.get(run=run, node_id="n0000", type="node.succeeded").data
    return data["duration_ms"], bool(data.get("cached"))
