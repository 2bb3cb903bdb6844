"""Graphs the benches run, and node types that exist only in the bench process."""

import asyncio

from workflows.engine.nodes import NodeContext, NodeType, get_node_type, register

if get_node_type("bench_noop") is None:

    @register
    class Noop(NodeType):
        """Does nothing: what remains of a node's cost is the engine's."""

        type = "bench_noop"
        config_schema = {"type": "object"}
        outputs = frozenset()
        effects = False

        async def execute(self, ctx: NodeContext, config: dict) -> dict:
            return {}

    @register
    class NoopWithEffects(Noop):
        """Does nothing, but is treated as acting outside the run: its inputs and outcome are stored first."""

        type = "bench_noop_effects"
        effects = True

    @register
    class Sleep(NodeType):
        """Waits ``seconds`` (an asyncio sleep): a node that takes a little while, as real ones do."""

        type = "bench_sleep"
        config_schema = {"type": "object", "properties": {"seconds": {"type": "number"}}}
        outputs = frozenset()

        async def execute(self, ctx: NodeContext, config: dict) -> dict:
            await asyncio.sleep(config.get("seconds", 0))
            return {}


def chain(kinds: list[tuple[str, dict]]) -> dict:
    """start → the given nodes, in order → end."""
    nodes = [{"id": "start", "type": "start", "config": {"inputs": []}}]
    nodes += [{"id": f"n{index:04d}", "type": kind, "config": config} for index, (kind, config) in enumerate(kinds)]
    nodes.append({"id": "end", "type": "end", "config": {"outputs": {}}})
    edges = [{"source": a["id"], "target": b["id"]} for a, b in zip(nodes, nodes[1:], strict=False)]
    return {"nodes": nodes, "edges": edges}


def noop_chain(length: int, *, effects: bool = False) -> dict:
    return chain([("bench_noop_effects" if effects else "bench_noop", {})] * length)


def template_chain(length: int) -> dict:
    return chain([("template", {"template": "ok"})] * length)


def wide_graph(nodes: int, edges: int) -> dict:
    """``nodes`` nodes (start, templates, end) and ``edges`` edges: a chain plus skip-one edges."""
    graph = template_chain(nodes - 2)
    ids = [node["id"] for node in graph["nodes"]]
    extra = edges - len(graph["edges"])
    graph["edges"] += [{"source": ids[i], "target": ids[i + 2]} for i in range(extra)]
    return graph


CODE_10MS = "import time\n\ndef main(**inputs):\n    time.sleep(0.01)\n    return {}\n"
