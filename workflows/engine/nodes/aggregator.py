"""aggregator: gathers values from the branches that ran (a skipped branch's values are absent).

``mode``: ``first`` the first value available, ``list`` every value available in order,
``merge`` the available objects merged left to right.
"""

from jinja2 import UndefinedError

from ..errors import NonRetryableError
from ..templating import TemplateRenderError
from .base import NodeContext, NodeType, register


@register
class Aggregator(NodeType):
    """Gathers values from the branches that ran, after a condition: a skipped branch's values are absent.

    ``variables`` are templates, each usually one lone reference (``"{{ hot.text }}"``); ``mode``
    says what to make of those that have a value: ``first`` (the default) the first one, ``list``
    all of them in order, ``merge`` the objects merged left to right. The output is ``{output}``.

    On failure: ``merge`` over a value that is not an object fails without a retry; so does a
    template that fails for another reason than a value being absent.
    """

    type = "aggregator"
    effects = False
    in_process = True
    description = "Join branches: pick or collect the values of those that ran."
    config_schema = {
        "type": "object",
        "required": ["variables"],
        "additionalProperties": False,
        "properties": {
            "variables": {"type": "array", "minItems": 1, "items": {"type": "string"}},
            "mode": {"enum": ["first", "list", "merge"]},
        },
    }
    outputs = frozenset({"output"})
    example_config = {"variables": ["{{ hot.text }}", "{{ mild.text }}"], "mode": "first"}

    async def execute(self, ctx: NodeContext, config: dict) -> dict:
        values = []
        for source in config["variables"]:
            try:
                values.append(await ctx.render_value(source))
            except TemplateRenderError as exc:
                if not isinstance(exc.__cause__, UndefinedError):
                    raise
        mode = config.get("mode", "first")
        if mode == "list":
            return {"output": values}
        if mode == "merge":
            merged: dict = {}
            for value in values:
                if not isinstance(value, dict):
                    raise NonRetryableError(f"merge needs objects, got {type(value).__name__}.")
                merged.update(value)
            return {"output": merged}
        return {"output": values[0] if values else None}
