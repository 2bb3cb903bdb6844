"""agent: an agent's tool-calling loop (``agents.agent_loop``) over its approved tools.

    {"id": "research", "type": "agent", "config": {
        "agent": "<agents id>", "input": "Find out about {{ start.topic }}",
        "max_steps": 6, "token_budget": 20000}}

The agent must be the workflow owner's; its provider, model, system prompt and tools come from
it, and ``max_steps`` / ``token_budget`` override its own (0 budget: none). Only tools that are
approved when the node runs are offered to the model, and each call checks again. Every step is
a ``node.delta`` event ``{"step": {"step", "kind": "model" | "tool", ...}}``. The output is
``{text, steps, usage}``; passing the step limit or the budget fails the node (not retried).
Model calls respect the provider's rate limit (``agents.rate_limits``).
"""

import asyncio
import uuid

from django.db import connection

from ..errors import NonRetryableError
from .base import NodeContext, NodeType, register


def _in_thread(function, **kwargs):
    """Run ORM code in a thread of its own, closing that thread's connection after."""

    def call():
        try:
            return function(**kwargs)
        finally:
            connection.close()

    return asyncio.to_thread(call)


def _load(*, agent_id: str, workflow_id: str):
    from agents.agent_loop import AgentNotUsable, agent_spec_load
    from workflows.models import Workflow

    owner_id = Workflow.objects.filter(pk=workflow_id).values_list("owner_id", flat=True).first()
    if owner_id is None:
        raise AgentNotUsable("The workflow of this run no longer exists.")
    try:
        key = uuid.UUID(agent_id)
    except ValueError:
        raise AgentNotUsable(f"{agent_id!r} is not an agent id.") from None
    return agent_spec_load(agent_id=key, owner_id=owner_id)


@register
class AgentNode(NodeType):
    type = "agent"
    description = "Run an agent: the model calls approved tools until it answers, within a step and token budget."
    config_schema = {
        "type": "object",
        "required": ["agent", "input"],
        "additionalProperties": False,
        "properties": {
            "agent": {"type": "string", "minLength": 1},
            "input": {"type": "string", "minLength": 1},
            "max_steps": {"type": "integer", "minimum": 1, "maximum": 100},
            "token_budget": {"type": "integer", "minimum": 0},
        },
    }
    outputs = frozenset({"text", "steps", "usage"})

    def check(self, config: dict):
        try:
            uuid.UUID(config["agent"])
        except ValueError:
            if "{{" not in config["agent"]:
                yield "agent", "Must be the id of an agent."

    async def execute(self, ctx: NodeContext, config: dict) -> dict:
        from agents.agent_loop import agent_loop_run
        from agents.tools_runtime import tool_runnable_get

        if not ctx.workflow_id:
            raise NonRetryableError("An agent node runs only within a workflow (its owner's agents).")
        agent_id = (await ctx.render(config["agent"])).strip()
        spec = await _in_thread(_load, agent_id=agent_id, workflow_id=ctx.workflow_id)
        messages = [{"role": "system", "content": spec.system_prompt}] if spec.system_prompt else []
        messages.append({"role": "user", "content": await ctx.render(config["input"])})

        async def tool_gate(tool) -> None:
            await _in_thread(tool_runnable_get, tool_id=tool.id, owner_id=spec.owner_id)

        async def on_step(step: dict) -> None:
            await ctx.delta({"step": step})

        result = await agent_loop_run(
            spec=spec,
            messages=messages,
            tool_gate=tool_gate,
            on_step=on_step,
            max_steps=config.get("max_steps"),
            token_budget=config.get("token_budget"),
            time_left=ctx.time_left,
        )
        return {"text": result.text, "steps": result.steps, "usage": result.usage}
