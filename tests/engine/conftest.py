"""Node types that exist only for the engine's tests, and helpers to build and run graphs."""

import asyncio
from collections import Counter

import pytest

from workflows.engine.errors import NonRetryableError, RetryableError
from workflows.engine.executor import RunExecutor
from workflows.engine.journal import MemoryJournal
from workflows.engine.nodes import NodeContext, NodeType, get_node_type, register

#: Executions per (run id, node id, scope), across attempts and resumes.
EXECUTIONS: Counter = Counter()


def _count(ctx: NodeContext) -> int:
    EXECUTIONS[(ctx.run_id, ctx.node_id, ctx.scope)] += 1
    return EXECUTIONS[(ctx.run_id, ctx.node_id, ctx.scope)]


if get_node_type("test_flaky") is None:

    @register
    class Flaky(NodeType):
        """Fails its first ``failures`` executions (retryable, with ``retry_after``), then returns ``{"n"}``."""

        type = "test_flaky"
        config_schema = {
            "type": "object",
            "properties": {
                "failures": {"type": "integer"},
                "retry_after": {"type": "number"},
                "fatal": {"type": "boolean"},
            },
        }
        outputs = frozenset({"n"})

        async def execute(self, ctx: NodeContext, config: dict) -> dict:
            n = _count(ctx)
            if n <= config.get("failures", 0):
                if config.get("fatal"):
                    raise NonRetryableError(f"fatal failure {n}")
                raise RetryableError(f"failure {n}", retry_after=config.get("retry_after"))
            return {"n": n}

    @register
    class Sleep(NodeType):
        """Sleeps ``seconds`` (cancellable), then returns ``{"slept"}``."""

        type = "test_sleep"
        config_schema = {"type": "object", "properties": {"seconds": {"type": "number"}}}
        outputs = frozenset({"slept"})

        async def execute(self, ctx: NodeContext, config: dict) -> dict:
            _count(ctx)
            await asyncio.sleep(config.get("seconds", 0))
            return {"slept": config.get("seconds", 0)}

    @register
    class Probe(NodeType):
        """Acts outside the run (as a request would): returns the nodes whose success its run has stored."""

        type = "test_probe"
        config_schema = {"type": "object"}
        outputs = frozenset({"stored"})

        async def execute(self, ctx: NodeContext, config: dict) -> dict:
            def read() -> list[str]:
                from django.db import connection

                from workflows.models import RunEvent

                try:
                    stored = RunEvent.objects.filter(run_id=ctx.run_id, type="node.succeeded")
                    return sorted(stored.values_list("node_id", flat=True))
                finally:
                    connection.close()

            return {"stored": await asyncio.to_thread(read)}

    @register
    class Delta(NodeType):
        """Streams ``parts`` as node.delta events, then returns them joined."""

        type = "test_delta"
        config_schema = {"type": "object", "properties": {"parts": {"type": "array", "items": {"type": "string"}}}}
        outputs = frozenset({"text"})

        async def execute(self, ctx: NodeContext, config: dict) -> dict:
            for part in config.get("parts", []):
                await ctx.delta({"text": part})
            return {"text": "".join(config.get("parts", []))}


def node(node_id: str, node_type: str, config: dict | None = None, **error_policy) -> dict:
    result = {"id": node_id, "type": node_type, "config": config or {}}
    if error_policy:
        result["error_policy"] = error_policy
    return result


def edge(source: str, target: str, handle: str | None = None) -> dict:
    result = {"source": source, "target": target}
    if handle:
        result["source_handle"] = handle
    return result


def start(*names: str, **typed: str) -> dict:
    inputs = [{"name": name, "type": "string"} for name in names]
    inputs += [{"name": name, "type": kind} for name, kind in typed.items()]
    return node("start", "start", {"inputs": inputs})


def end(**outputs: str) -> dict:
    return node("end", "end", {"outputs": outputs})


def chain(*nodes: dict) -> dict:
    """A graph where each node follows the previous one."""
    return {
        "nodes": list(nodes),
        "edges": [edge(a["id"], b["id"]) for a, b in zip(nodes, nodes[1:], strict=False)],
    }


async def execute(graph: dict, inputs: dict | None = None, *, run_id: str = "run", **journal_args):
    journal = MemoryJournal(**journal_args)
    executor = RunExecutor(graph=graph, inputs=inputs or {}, system={"run_id": run_id}, journal=journal)
    result = await executor.run()
    return result, journal


def timeline(journal: MemoryJournal) -> list[tuple[str, str]]:
    return [(event["type"], event["node"]) for event in journal.events]


@pytest.fixture
def engine_settings(settings):
    """Set engine tunables for one test: ``engine_settings(CANCEL_POLL_S=0.05)``."""

    def override(**values):
        settings.WEFT = {**settings.WEFT, "ENGINE": {**settings.WEFT.get("ENGINE", {}), **values}}

    return override


@pytest.fixture(autouse=True)
def _no_embedded_reaper(engine_settings):
    """The embedded engine's reaper would race the tests that build orphaned runs on purpose."""
    engine_settings(EMBEDDED_REAPER=False)


@pytest.fixture
def fast_polls(engine_settings):
    """Cancel requests and lease renewals are looked at every 50 ms."""
    engine_settings(CANCEL_POLL_S=0.05, HEARTBEAT_S=0.05)


@pytest.fixture
def embedded(settings):
    """Runs execute in this process (the embedded engine), whether or not REDIS_URL is set."""
    settings.EMBEDDED = True
