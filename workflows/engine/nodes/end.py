"""end: its ``outputs`` mapping, rendered, becomes the run's outputs."""

from .base import NodeContext, NodeType, register


@register
class End(NodeType):
    """Where a run ends: its ``outputs`` mapping, rendered, becomes the run's outputs.

    A graph has at least one end. When branches end in several ends, the outputs of those that ran
    are merged, in the order of the graph's nodes.
    """

    type = "end"
    effects = False
    in_process = True
    description = "Where a run ends: what it returns."
    config_schema = {
        "type": "object",
        "additionalProperties": False,
        "properties": {"outputs": {"type": "object"}},
    }
    example_config = {"outputs": {"text": "{{ greet.text }}", "temperature": "{{ weather.json.temp }}"}}

    def declared_outputs(self, config: dict) -> frozenset[str]:
        return frozenset(config.get("outputs", {}))

    async def execute(self, ctx: NodeContext, config: dict) -> dict:
        return await ctx.render_value(config.get("outputs", {}))
