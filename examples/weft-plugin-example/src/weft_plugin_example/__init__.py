"""An example Weft node plugin: ``example_reverse`` reverses a rendered text, word by word or letter by letter.

Weft finds it through the entry point in ``pyproject.toml``; the operator enables it with
``WEFT_ENGINE_PLUGINS=weft-plugin-example`` (see Weft's docs/plugins.md).
"""

from workflows.engine import NodeContext, NodeType, NonRetryableError


class Reverse(NodeType):
    type = "example_reverse"
    description = "Reverse a text, letter by letter or word by word (an example plugin)."
    config_schema = {
        "type": "object",
        "required": ["text"],
        "additionalProperties": False,
        "properties": {
            "text": {"type": "string", "description": "The text to reverse (a template)."},
            "by": {"type": "string", "enum": ["letter", "word"], "default": "letter"},
            "max_chars": {"type": "integer", "minimum": 1, "maximum": 100000, "default": 10000},
        },
    }
    outputs = frozenset({"text", "length"})
    example_config = {"text": "{{ start.text }}", "by": "word"}
    effects = False

    async def execute(self, ctx: NodeContext, config: dict) -> dict:
        text = await ctx.render(config["text"])
        if len(text) > config.get("max_chars", 10000):
            raise NonRetryableError(f"The text has {len(text)} characters, more than max_chars.")
        await ctx.delta({"text": f"reversing {len(text)} characters"})
        by_word = config.get("by", "letter") == "word"
        return {"text": " ".join(reversed(text.split(" "))) if by_word else text[::-1], "length": len(text)}
