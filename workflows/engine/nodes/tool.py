"""tool: run one approved tool with templated arguments.

    {"id": "sum", "type": "tool", "config": {
        "tool": "<tools id>", "arguments": {"expression": "{{ start.a }} + {{ start.b }}"}}}

The tool must be approved and be the workflow owner's or public; that is checked every time the
node runs, so a tool rejected after the workflow was published fails the node at once (not
retried) with the reason. ``arguments`` are rendered (``"{{ x.y }}"`` alone keeps its type) and
checked against the tool's ``parameters``. The output is ``{result}``: the tool's JSON answer
(or its text). See ``agents.tools_runtime`` for HTTP and built-in tools.
"""

import asyncio
import uuid

from django.db import connection

from ..errors import NonRetryableError
from .base import NodeContext, NodeType, register


def _workflow_owner_id(workflow_id: str):
    from workflows.models import Workflow

    return Workflow.objects.filter(pk=workflow_id).values_list("owner_id", flat=True).first()


def _runnable_tool(*, tool_id: str, workflow_id: str):
    """The tool as a ToolSpec if the workflow's owner may run it (in a thread of its own: closes its connection)."""
    from agents.tools_runtime import ToolNotRunnable, tool_runnable_get

    try:
        owner_id = _workflow_owner_id(workflow_id)
        if owner_id is None:
            raise ToolNotRunnable("The workflow of this run no longer exists.")
        return tool_runnable_get(tool_id=tool_id, owner_id=owner_id)
    finally:
        connection.close()


@register
class ToolNode(NodeType):
    type = "tool"
    description = "Run an approved tool (HTTP or built-in) with arguments checked against its schema."
    config_schema = {
        "type": "object",
        "required": ["tool"],
        "additionalProperties": False,
        "properties": {
            "tool": {"type": "string", "minLength": 1},
            "arguments": {"type": "object"},
            "timeout_s": {"type": "number", "exclusiveMinimum": 0},
        },
    }
    outputs = frozenset({"result"})

    def check(self, config: dict):
        try:
            uuid.UUID(config["tool"])
        except ValueError:
            if "{{" not in config["tool"]:
                yield "tool", "Must be the id of a tool."

    async def execute(self, ctx: NodeContext, config: dict) -> dict:
        from agents.tools_runtime import tool_execute

        if not ctx.workflow_id:
            raise NonRetryableError("A tool node runs only within a workflow (its owner's tools).")
        tool_id = (await ctx.render(config["tool"])).strip()
        spec = await asyncio.to_thread(_runnable_tool, tool_id=tool_id, workflow_id=ctx.workflow_id)
        arguments = await ctx.render_value(config.get("arguments", {}))
        timeout_s = config.get("timeout_s")
        left = ctx.time_left()
        if left is not None:
            timeout_s = left if timeout_s is None else min(timeout_s, left)
        return {"result": await tool_execute(spec=spec, arguments=arguments, timeout_s=timeout_s)}
