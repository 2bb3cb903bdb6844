"""llm: one chat completion from an OpenAI-compatible provider, streamed as ``node.delta`` events.

    {"id": "answer", "type": "llm", "config": {
        "provider": "<llm_providers id>", "model": "gpt-4o-mini",
        "messages": [{"role": "system", "content": "You are terse."},
                     {"role": "user", "content": "Weather in {{ start.city }}?"}],
        "temperature": 0.2}}

Instead of ``messages``, ``prompt`` (the user message) with an optional ``system`` will do.
Message contents are rendered. ``provider`` must be one of the workflow owner's providers;
``model`` defaults to the provider's. While the answer streams, its text arrives as
``node.delta`` events ``{"text": "..."}`` (pieces closer together than 50 ms are sent as one);
the output is ``{text, usage}``.

``"memory": {"enabled": true, "rounds": 10, "max_tokens": 2000, "max_chars_per_message": 4000}``
gives the node the earlier rounds of the same conversation (a run with a ``chat_id`` of a
released version, see :mod:`history.memory`): they are put before the last user message, and
the node stores its own round (that message and the answer) once the model has answered.
"""

import asyncio
import time
import uuid

from django.db import connection

from ..errors import NonRetryableError
from ..llm_client import LLMClient
from .base import NodeContext, NodeType, register

#: Deltas closer together than this are coalesced into one event.
DELTA_INTERVAL_S = 0.05
#: The most earlier rounds a node with memory may ask for (history.memory's default is 10).
MAX_MEMORY_ROUNDS = 100


class ProviderNotFound(NonRetryableError):
    """The provider does not exist or does not belong to the workflow's owner."""


def _provider_for(*, provider_id: str, workflow_id: str):
    """The provider if it belongs to the workflow's owner (run in a thread of its own: closes its connection)."""
    from agents.models import LLMProvider

    try:
        key = uuid.UUID(str(provider_id))
    except ValueError:
        return None
    try:
        return LLMProvider.objects.filter(id=key, owner__workflows__id=workflow_id).first()
    finally:
        connection.close()


def _memory_load(*, run_id: str, node_id: str, limits: dict):
    """The run's memory scope for the node (None without one) and the earlier rounds (closes its connection)."""
    from history.memory import memory_load, memory_scope_for_run

    try:
        scope = memory_scope_for_run(run_id=run_id, node_id=node_id)
        if scope is None:
            return None, []
        return scope, memory_load(scope=scope, **limits)
    finally:
        connection.close()


def _memory_append(*, scope, question: str, answer: str, limits: dict) -> None:
    from history.memory import memory_append

    try:
        memory_append(scope=scope, question=question, answer=answer, **limits)
    finally:
        connection.close()


def _picked(config: dict, *names: str) -> dict:
    """The settings among ``names`` the config gives (history.memory has the defaults)."""
    return {name: config[name] for name in names if name in config}


def _with_memory(messages: list[dict], earlier: list[dict]) -> tuple[list[dict], str]:
    """``messages`` with the earlier rounds before the last user message, and that message (the question)."""
    last_user = next((i for i in range(len(messages) - 1, -1, -1) if messages[i]["role"] == "user"), None)
    if last_user is None:
        return messages + earlier, ""
    return messages[:last_user] + earlier + messages[last_user:], messages[last_user]["content"]


class _DeltaStream:
    """Sends text pieces as ``node.delta`` events, at most one per ``DELTA_INTERVAL_S``."""

    def __init__(self, ctx: NodeContext):
        self.ctx = ctx
        self.pending: list[str] = []
        self.last_sent = 0.0

    async def add(self, text: str) -> None:
        self.pending.append(text)
        if time.monotonic() - self.last_sent >= DELTA_INTERVAL_S:
            await self.flush()

    async def flush(self) -> None:
        if self.pending:
            text, self.pending = "".join(self.pending), []
            self.last_sent = time.monotonic()
            await self.ctx.delta({"text": text})


@register
class LLM(NodeType):
    type = "llm"
    description = "Ask an OpenAI-compatible chat model; the answer streams as node.delta events."
    config_schema = {
        "type": "object",
        "required": ["provider"],
        "additionalProperties": False,
        "properties": {
            "provider": {"type": "string", "minLength": 1},
            "model": {"type": "string"},
            "messages": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "required": ["role", "content"],
                    "additionalProperties": False,
                    "properties": {
                        "role": {"enum": ["system", "user", "assistant"]},
                        "content": {"type": "string"},
                    },
                },
            },
            "prompt": {"type": "string"},
            "system": {"type": "string"},
            "temperature": {"type": "number", "minimum": 0, "maximum": 2},
            "max_tokens": {"type": "integer", "minimum": 1},
            "stream": {"type": "boolean"},
            "memory": {
                "type": "object",
                "required": ["enabled"],
                "additionalProperties": False,
                "properties": {
                    "enabled": {"type": "boolean"},
                    "rounds": {"type": "integer", "minimum": 1, "maximum": MAX_MEMORY_ROUNDS},
                    "max_tokens": {"type": "integer", "minimum": 1},
                    "max_chars_per_message": {"type": "integer", "minimum": 1},
                },
            },
        },
    }
    outputs = frozenset({"text", "usage"})

    def check(self, config: dict):
        if ("messages" in config) == ("prompt" in config):
            yield "messages", "Give messages, or a prompt (with an optional system), not both."
        if "system" in config and "prompt" not in config:
            yield "system", "system goes with prompt; put it in messages otherwise."
        try:
            uuid.UUID(config["provider"])
        except ValueError:
            if "{{" not in config["provider"]:
                yield "provider", "Must be the id of an LLM provider."

    async def execute(self, ctx: NodeContext, config: dict) -> dict:
        provider_id = await ctx.render(config["provider"])
        provider = None
        if ctx.workflow_id:
            provider = await asyncio.to_thread(_provider_for, provider_id=provider_id, workflow_id=ctx.workflow_id)
        if provider is None:
            raise ProviderNotFound(f"No LLM provider {provider_id!r} among the workflow owner's providers.")
        model = config.get("model") or provider.model
        if not model:
            raise NonRetryableError(f"No model given and provider {provider.name!r} has no default model.")
        if "messages" in config:
            messages = [{"role": m["role"], "content": await ctx.render(m["content"])} for m in config["messages"]]
        else:
            messages = [{"role": "system", "content": await ctx.render(config["system"])}] if "system" in config else []
            messages.append({"role": "user", "content": await ctx.render(config["prompt"])})
        memory = config.get("memory") or {}
        scope = None
        if memory.get("enabled") and ctx.run_id:
            limits = _picked(memory, "rounds", "max_tokens")
            scope, earlier = await asyncio.to_thread(
                _memory_load, run_id=ctx.run_id, node_id=ctx.node_id, limits=limits
            )
        if scope is not None:
            messages, question = _with_memory(messages, earlier)
        deltas = _DeltaStream(ctx)
        from agents.rate_limits import provider_rate_limit_acquire  # agents imports the engine

        await provider_rate_limit_acquire(provider=provider)
        result = await LLMClient.for_provider(provider).chat(
            model=model,
            messages=messages,
            temperature=config.get("temperature"),
            max_tokens=config.get("max_tokens"),
            stream=config.get("stream", True),
            on_delta=deltas.add,
        )
        await deltas.flush()
        if scope is not None:
            limits = _picked(memory, "max_chars_per_message")
            await asyncio.to_thread(_memory_append, scope=scope, question=question, answer=result.text, limits=limits)
        usage = {**(result.usage or {}), "provider": str(provider.pk), "model": getattr(result, "model", "") or model}
        return {"text": result.text, "usage": usage}
