"""iteration: run a sub-graph once per item of a list, a few at a time.

    {"id": "each", "type": "iteration", "config": {
        "items": "{{ start.cities }}",
        "concurrency": 4,
        "graph": {"nodes": [
                      {"id": "in", "type": "start"},
                      {"id": "say", "type": "template", "config": {"template": "{{ index }}: {{ item }}"}},
                      {"id": "out", "type": "end", "config": {"outputs": {"line": "{{ say.text }}"}}}],
                  "edges": [{"source": "in", "target": "say"}, {"source": "say", "target": "out"}]}}}

The sub-graph is a DSL v1 graph of its own (one start, at least one end, validated with the
workflow). Inside it, ``{{ item }}`` and ``{{ index }}`` are the current item and its position;
the variables the iteration node itself may read (``start``, ``sys``, its ancestors) are
readable too. Each item's end outputs are one entry of ``results``, in the order of the items.
A sub-node's execution is a task with scope ``<iteration id>[<index>]``; if one item fails, the
others are cancelled and the iteration node fails (its own error policy then applies; items
that succeeded are not run again by a retry or a resume).
"""

import asyncio

from config.conf import weft_settings

from ..errors import NonRetryableError
from .base import NodeContext, NodeType, register

ITEM_VARIABLES = frozenset({"item", "index"})


@register
class Iteration(NodeType):
    """Runs a sub-graph once per item of a list, ``concurrency`` at a time.

    ``items`` renders to a list; ``graph`` is a DSL v1 graph of its own (one start, at least one
    end), validated with the workflow. Inside it, ``{{ item }}`` and ``{{ index }}`` are the current
    item and its position, and the variables the iteration node may read are readable too. The
    output is ``{results}``: each item's end outputs, in the order of the items.

    On failure: if one item fails, the others are cancelled and the iteration node fails; its own
    error policy then applies. Items that succeeded are not run again by a retry or a resume.
    """

    type = "iteration"
    effects = False
    description = "Map a sub-graph over a list."
    config_schema = {
        "type": "object",
        "required": ["items", "graph"],
        "additionalProperties": False,
        "properties": {
            "items": {"type": "string"},
            "concurrency": {"type": "integer", "minimum": 1},
            "graph": {
                "type": "object",
                "required": ["nodes"],
                "properties": {"nodes": {"type": "array"}, "edges": {"type": "array"}},
            },
        },
    }
    outputs = frozenset({"results"})
    example_config = {
        "items": "{{ start.cities }}",
        "concurrency": 4,
        "graph": {
            "nodes": [
                {"id": "in", "type": "start"},
                {"id": "say", "type": "template", "config": {"template": "{{ index }}: {{ item }}"}},
                {"id": "out", "type": "end", "config": {"outputs": {"line": "{{ say.text }}"}}},
            ],
            "edges": [{"source": "in", "target": "say"}, {"source": "say", "target": "out"}],
        },
    }

    def check(self, config: dict):
        limit = weft_settings.ITERATION_MAX_CONCURRENCY
        if config.get("concurrency", 1) > limit:
            yield "concurrency", f"At most {limit}."

    def template_strings(self, config: dict):
        yield "config.items", config["items"]

    def subgraphs(self, config: dict):
        yield "config.graph", config["graph"], ITEM_VARIABLES

    async def execute(self, ctx: NodeContext, config: dict) -> dict:
        items = await ctx.render_value(config["items"])
        if not isinstance(items, list):
            raise NonRetryableError(f"items must be a list, got {type(items).__name__}.")
        if len(items) > weft_settings.ITERATION_MAX_ITEMS:
            raise NonRetryableError(f"At most {weft_settings.ITERATION_MAX_ITEMS} items, got {len(items)}.")
        slots = asyncio.Semaphore(config.get("concurrency", 1))
        prefix = f"{ctx.scope}/" if ctx.scope else ""

        async def one(index: int, item) -> dict:
            async with slots:
                return await ctx.run_subgraph(
                    graph=config["graph"],
                    variables={"item": item, "index": index},
                    scope=f"{prefix}{ctx.node_id}[{index}]",
                )

        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(one(index, item)) for index, item in enumerate(items)]
        except* Exception as failures:
            raise failures.exceptions[0] from None
        return {"results": [task.result() for task in tasks]}
