"""code: run the user's Python in the sandbox; its output is the dict ``main`` returns.

    {"id": "total", "type": "code", "config": {
        "code": "def main(prices, rate):\\n    return {'total': sum(prices) * (1 + rate)}",
        "inputs": {"prices": "{{ start.prices }}", "rate": 0.2},
        "timeout_s": 5, "cpu_s": 2, "memory_mb": 128}}

The code defines ``def main(**inputs) -> dict`` (or names its parameters); ``inputs`` are
rendered (a lone ``{{ expression }}`` keeps its type) and passed as keyword arguments, as JSON.
The dict it returns must be JSON. It runs in a separate, isolated process (see
:mod:`workflows.engine.sandbox`), never in the engine's: a few standard modules, no network,
no files of the server, no subprocesses, limited CPU time, memory (``memory_mb`` is the
process's address space, of which the interpreter takes about 25 MB) and wall-clock time
(``timeout_s``; each capped by the operator's maximum).
"""

import ast
import json

from ..errors import NonRetryableError
from ..sandbox import Limits, run_code
from .base import NodeContext, NodeType, register

MAX_CODE_CHARS = 64 * 1024


def _defines_main(tree: ast.Module) -> bool:
    return any(isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == "main" for node in tree.body)


@register
class Code(NodeType):
    """Runs the user's Python in the sandbox: the code defines ``def main(**inputs) -> dict``.

    ``inputs`` are rendered (a lone ``{{ expression }}`` keeps its type) and passed to ``main`` as
    keyword arguments, as JSON; the dict it returns, which must be JSON, is the node's output. The
    code runs in a separate, isolated process, never in the engine's: a few standard modules, no
    network, no file of the server, no subprocess. ``timeout_s``, ``cpu_s`` and ``memory_mb`` limit
    its wall-clock time, CPU time and address space (of which the interpreter takes about 25 MB),
    each capped by the operator's maximum. With ``"cache": {"ttl_s": N}`` beside its config, the same
    code over the same inputs reuses the earlier result for N seconds, without running: cache only
    code whose result follows from its inputs (docs/cache.md).

    On failure: an exception in the code fails the node with the code's traceback and is not
    retried; neither is passing a limit or returning something that is not a JSON object. Code that
    does not parse or has no ``main`` is refused when the graph is validated.
    """

    type = "code"
    effects = False
    cacheable = True
    description = "Run Python (def main(**inputs) -> dict) in an isolated sandbox."
    config_schema = {
        "type": "object",
        "required": ["code"],
        "additionalProperties": False,
        "properties": {
            "code": {"type": "string", "minLength": 1, "maxLength": MAX_CODE_CHARS},
            "inputs": {"type": "object"},
            "timeout_s": {"type": "number", "exclusiveMinimum": 0},
            "cpu_s": {"type": "number", "exclusiveMinimum": 0},
            "memory_mb": {"type": "integer", "minimum": 32},
        },
    }
    outputs = None
    example_config = {
        "code": "def main(prices, rate):\n    return {'total': sum(prices) * (1 + rate)}",
        "inputs": {"prices": "{{ start.prices }}", "rate": 0.2},
        "timeout_s": 5,
    }

    def check(self, config: dict):
        # Parsed, never executed, here: the code only runs in the sandbox.
        try:
            tree = ast.parse(config["code"], filename="<code>")
        except SyntaxError as exc:
            yield "code", f"Line {exc.lineno}: {exc.msg}."
            return
        except (ValueError, RecursionError, MemoryError):
            yield "code", "The code cannot be parsed."
            return
        if not _defines_main(tree):
            yield "code", "Define def main(**inputs) -> dict at the top level."

    async def execute(self, ctx: NodeContext, config: dict) -> dict:
        inputs = await ctx.render_value(config.get("inputs", {}))
        if not isinstance(inputs, dict):
            raise NonRetryableError(f"inputs must be an object, got {type(inputs).__name__}.")
        try:
            json.dumps(inputs, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise NonRetryableError(f"inputs must be JSON: {exc}") from exc
        limits = Limits(cpu_s=config.get("cpu_s"), wall_s=config.get("timeout_s"), memory_mb=config.get("memory_mb"))
        outcome = await run_code(code=config["code"], inputs=inputs, limits=limits, owner=_owner(ctx))
        return outcome.result


def _owner(ctx: NodeContext) -> str:
    """Whom the call counts for in the sandbox's fair share: the user who started the run, else its workflow."""
    system = ctx.variables.get("sys", {})
    if system.get("user_id") is not None:
        return f"user:{system['user_id']}"
    return f"workflow:{system.get('workflow_id') or ctx.workflow_id}"
