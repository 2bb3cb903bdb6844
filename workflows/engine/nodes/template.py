"""template: text from a sandboxed Jinja2 template over the node's variables."""

from .base import NodeContext, NodeType, register


@register
class Template(NodeType):
    type = "template"
    effects = False
    in_process = True
    description = "Render a Jinja2 template (sandboxed)."
    config_schema = {
        "type": "object",
        "required": ["template"],
        "additionalProperties": False,
        "properties": {"template": {"type": "string"}},
    }
    outputs = frozenset({"text"})

    async def execute(self, ctx: NodeContext, config: dict) -> dict:
        return {"text": await ctx.render(config["template"])}
