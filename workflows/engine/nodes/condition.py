"""condition: if / elif / else over variables; the first matching case picks the branch.

    {"cases": [
        {"id": "hot", "logic": "and",
         "conditions": [{"variable": "{{ start.temp }}", "operator": "gt", "value": 30}]},
        {"id": "named", "expression": "{{ start.name and start.name.startswith('A') }}"}]}

Outgoing edges carry ``source_handle`` = a case id, or ``else`` when no case matches. The
output is ``{"case": <id or "else">}``. ``variable`` and ``value`` are rendered (a lone
expression keeps its type); ``expression`` is a lone Jinja2 expression tested for truth.
"""

import operator
from collections.abc import Callable
from typing import Any

from ..errors import NonRetryableError
from .base import NodeContext, NodeType, register

ELSE = "else"
RESERVED_HANDLES = {ELSE, "error", ""}


def _contains(container: Any, item: Any) -> bool:
    return item in container


OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": operator.eq,
    "ne": operator.ne,
    "gt": operator.gt,
    "ge": operator.ge,
    "lt": operator.lt,
    "le": operator.le,
    "contains": _contains,
    "not_contains": lambda left, right: not _contains(left, right),
    "in": lambda left, right: _contains(right, left),
    "not_in": lambda left, right: not _contains(right, left),
    "starts_with": lambda left, right: str(left).startswith(str(right)),
    "ends_with": lambda left, right: str(left).endswith(str(right)),
    "empty": lambda left, right: left in (None, "", [], {}),
    "not_empty": lambda left, right: left not in (None, "", [], {}),
}


@register
class Condition(NodeType):
    """Picks a branch: the first case that holds, else ``else`` (if / elif / else).

    A case gives either ``conditions`` (each compares a rendered ``variable`` with a rendered
    ``value`` by an ``operator``; ``logic`` ``and``, the default, or ``or`` combines them) or one
    ``expression``, a Jinja2 expression tested for truth. The node's outgoing edges carry a
    ``source_handle``: a case id, or ``else``. The nodes on the branches not taken are skipped. The
    output is ``{case}``: the id of the case taken, or ``else``.

    On failure: an operator that cannot compare its operands (``gt`` on a string and a number)
    fails the node without a retry.
    """

    type = "condition"
    effects = False
    in_process = True
    description = "Branch: the first case whose conditions hold, else `else`."
    config_schema = {
        "type": "object",
        "required": ["cases"],
        "additionalProperties": False,
        "properties": {
            "cases": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "required": ["id"],
                    "additionalProperties": False,
                    "properties": {
                        "id": {"type": "string", "minLength": 1, "maxLength": 64},
                        "logic": {"enum": ["and", "or"]},
                        "expression": {"type": "string"},
                        "conditions": {
                            "type": "array",
                            "minItems": 1,
                            "items": {
                                "type": "object",
                                "required": ["variable", "operator"],
                                "additionalProperties": False,
                                "properties": {
                                    "variable": {"type": "string"},
                                    "operator": {"enum": list(OPERATORS)},
                                    "value": {},
                                },
                            },
                        },
                    },
                },
            }
        },
    }
    outputs = frozenset({"case"})
    example_config = {
        "cases": [
            {"id": "hot", "conditions": [{"variable": "{{ weather.json.temp }}", "operator": "gt", "value": 30}]},
            {"id": "named", "expression": "{{ start.name and start.name.startswith('A') }}"},
        ]
    }

    def check(self, config: dict):
        seen: set[str] = set()
        for index, case in enumerate(config["cases"]):
            if case["id"] in RESERVED_HANDLES:
                yield f"cases[{index}].id", f"{case['id']!r} is reserved; name the case otherwise."
            elif case["id"] in seen:
                yield f"cases[{index}].id", f"Case {case['id']!r} is defined twice."
            seen.add(case["id"])
            if ("expression" in case) == ("conditions" in case):
                yield f"cases[{index}]", "Give either `expression` or `conditions`."

    def handles(self, config: dict) -> frozenset[str]:
        return frozenset(case["id"] for case in config["cases"]) | {ELSE}

    def taken_handles(self, config: dict, output: dict) -> frozenset[str]:
        return frozenset({output["case"]})

    async def execute(self, ctx: NodeContext, config: dict) -> dict:
        for case in config["cases"]:
            if await self._holds(ctx, case):
                return {"case": case["id"]}
        return {"case": ELSE}

    async def _holds(self, ctx: NodeContext, case: dict) -> bool:
        if "expression" in case:
            return bool(await ctx.render_value(case["expression"]))
        every = case.get("logic", "and") == "and"
        for condition in case["conditions"]:
            if await self._compare(ctx, condition) != every:
                return not every  # and: the first false one decides; or: the first true one
        return every

    async def _compare(self, ctx: NodeContext, condition: dict) -> bool:
        # The operators are linear in their operands, which the render bounds (TEMPLATE_MAX_OUTPUT_CHARS).
        left = await ctx.render_value(condition["variable"])
        right = await ctx.render_value(condition.get("value"))
        try:
            return bool(OPERATORS[condition["operator"]](left, right))
        except TypeError as exc:
            raise NonRetryableError(
                f"Cannot apply {condition['operator']} to {type(left).__name__} and {type(right).__name__}."
            ) from exc
