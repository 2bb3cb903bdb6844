"""template: text from a sandboxed Jinja2 template over the node's variables."""

from .base import NodeContext, NodeType, register


@register
class Template(NodeType):
    """Renders text from a Jinja2 template, sandboxed, over the variables the node may read.

    The output is ``{text}``. Rendering is bounded in time and size by the operator's template limits.
    With ``"cache": {"ttl_s": N}`` beside its config, the same template over the same values reuses
    the earlier text for N seconds (docs/cache.md).

    On failure: a template that does not render (an undefined variable, a bad filter) fails the node
    without a retry; one that does not parse is refused when the graph is validated.
    """

    type = "template"
    effects = False
    in_process = True
    cacheable = True
    description = "Render a Jinja2 template (sandboxed)."
    config_schema = {
        "type": "object",
        "required": ["template"],
        "additionalProperties": False,
        "properties": {"template": {"type": "string"}},
    }
    outputs = frozenset({"text"})
    example_config = {"template": "Weather for {{ start.city }}: {{ weather.json.summary }}"}

    async def execute(self, ctx: NodeContext, config: dict) -> dict:
        return {"text": await ctx.render(config["template"])}
