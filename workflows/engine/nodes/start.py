"""start: the run's inputs, declared with their types; ``{{ start.<name> }}`` reads them."""

from typing import Any

from .base import NodeContext, NodeType, register

IDENTIFIER = "^[A-Za-z_][A-Za-z0-9_]*$"

_TYPE_CHECKS = {
    "string": lambda value: isinstance(value, str),
    "number": lambda value: isinstance(value, int | float) and not isinstance(value, bool),
    "integer": lambda value: isinstance(value, int) and not isinstance(value, bool),
    "boolean": lambda value: isinstance(value, bool),
    "object": lambda value: isinstance(value, dict),
    "array": lambda value: isinstance(value, list),
}


@register
class Start(NodeType):
    """Where a run begins: it declares the run's inputs, which ``{{ start.<name> }}`` reads.

    Each input has a ``name``, a ``type`` (``string`` by default), and may be ``required`` or have a
    ``default``. A run's inputs are checked against them when it starts: a missing required input or
    a value of the wrong type is refused (a 400 naming ``inputs.<name>``). A graph has one start. Its
    output is the run's inputs.
    """

    type = "start"
    effects = False
    in_process = True
    description = "Where a run begins: its declared inputs."
    config_schema = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "inputs": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name"],
                    "additionalProperties": False,
                    "properties": {
                        "name": {"type": "string", "pattern": IDENTIFIER},
                        "type": {"enum": list(_TYPE_CHECKS)},
                        "required": {"type": "boolean"},
                        "default": {},
                        "description": {"type": "string"},
                    },
                },
            }
        },
    }

    example_config = {
        "inputs": [
            {"name": "city", "type": "string", "required": True},
            {"name": "days", "type": "integer", "default": 3},
        ]
    }

    def declared_outputs(self, config: dict) -> frozenset[str]:
        return frozenset(spec["name"] for spec in config.get("inputs", []))

    def check(self, config: dict):
        seen: set[str] = set()
        for index, spec in enumerate(config.get("inputs", [])):
            if spec["name"] in seen:
                yield f"inputs[{index}].name", f"Input {spec['name']!r} is declared twice."
            seen.add(spec["name"])

    def clean_inputs(self, config: dict, inputs: dict[str, Any]) -> tuple[dict, list[tuple[str, str]]]:
        """The inputs with defaults applied, and every problem as ``(input name, message)``."""
        problems: list[tuple[str, str]] = []
        specs = {spec["name"]: spec for spec in config.get("inputs", [])}
        cleaned: dict[str, Any] = {}
        problems.extend((name, "This workflow has no such input.") for name in inputs if name not in specs)
        for name, spec in specs.items():
            if name not in inputs or inputs[name] is None:
                if "default" in spec:
                    cleaned[name] = spec["default"]
                elif spec.get("required", False):
                    problems.append((name, "This input is required."))
                continue
            value = inputs[name]
            kind = spec.get("type", "string")
            if not _TYPE_CHECKS[kind](value):
                problems.append((name, f"Must be of type {kind}."))
                continue
            cleaned[name] = value
        return cleaned, problems

    async def execute(self, ctx: NodeContext, config: dict) -> dict:
        return dict(ctx.variables.get("start", {}))
