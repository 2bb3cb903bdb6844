"""The node types that use what the agents app owns: LLM providers, tools and agents.

Registered with the engine when the app is ready (``AgentsConfig.ready``). The workflow's owner
(whose providers, tools and agents a run may use) and the conversation a run continues come
from the run's ports (``workflows.engine.ports``); the rows are read on a database thread.

**llm** — llm: one chat completion from a provider of any kind (openai, anthropic, gemini), streamed
as ``node.delta`` events.

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

**agent** — agent: an agent's tool-calling loop (``agents.agent_loop``) over its approved tools.

    {"id": "research", "type": "agent", "config": {
        "agent": "<agents id>", "input": "Find out about {{ start.topic }}",
        "max_steps": 6, "token_budget": 20000}}

The agent must be the workflow owner's; its provider, model, system prompt and tools come from
it, and ``max_steps`` / ``token_budget`` override its own (0 budget: none). Only tools that are
approved when the node runs are offered to the model, and each call checks again. Every step is
a ``node.delta`` event ``{"step": {"step", "kind": "model" | "tool", ...}}``. The output is
``{text, steps, usage}``; passing the step limit or the budget fails the node (not retried).
Model calls respect the provider's rate limit (``agents.rate_limits``).

**tool** — tool: run one approved tool with templated arguments.

    {"id": "sum", "type": "tool", "config": {
        "tool": "<tools id>", "arguments": {"expression": "{{ start.a }} + {{ start.b }}"}}}

The tool must be approved and be the workflow owner's or public; that is checked every time the
node runs, so a tool rejected after the workflow was published fails the node at once (not
retried) with the reason. ``arguments`` are rendered (``"{{ x.y }}"`` alone keeps its type) and
checked against the tool's ``parameters``. The output is ``{result}``: the tool's JSON answer
(or its text). See ``agents.tools_runtime`` for HTTP and built-in tools.
"""

import time
import uuid

from config.db import on_db_thread
from observability.metrics import llm_tokens_count
from workflows.engine import LLMClient, NodeContext, NodeType, NonRetryableError, register

from .agent_loop import AgentNotUsable, agent_loop_run, agent_spec_load
from .models import LLMProvider
from .rate_limits import provider_rate_limit_acquire
from .tools_runtime import tool_execute, tool_runnable_get

#: Deltas closer together than this are coalesced into one event.
DELTA_INTERVAL_S = 0.05
#: The most earlier rounds a node with memory may ask for (history.memory's default is 10).
MAX_MEMORY_ROUNDS = 100


class ProviderNotFound(NonRetryableError):
    """The provider does not exist or does not belong to the workflow's owner."""


async def _owner_id(ctx: NodeContext, why: str):
    owner = ctx.ports.need("owner_id", why)
    owner_id = await owner()
    if owner_id is None:
        raise NonRetryableError("The workflow of this run no longer exists.")
    return owner_id


@on_db_thread
def _provider_of(*, provider_id: str, owner_id):
    try:
        key = uuid.UUID(str(provider_id))
    except ValueError:
        return None
    return LLMProvider.objects.filter(id=key, owner_id=owner_id).first()


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
    """Asks a chat model of any provider kind (OpenAI-compatible, Anthropic, Gemini), streamed as ``node.delta`` events.

    ``provider`` is the id of one of the workflow owner's LLM providers; ``model`` defaults to the
    provider's. Give ``messages`` (their contents are rendered), or a ``prompt`` (the user message)
    with an optional ``system``. The output is ``{text, usage}``. With ``memory`` enabled, a run that
    continues a conversation (a ``chat_id`` of a released version) gives the model the earlier
    rounds, and the node stores its own round once the model has answered. With ``"cache": {"ttl_s": N}``
    beside its config (not with memory), the same messages to the same provider and model reuse the
    earlier answer for N seconds, without a call and without spending tokens (docs/cache.md).

    On failure: a provider that does not exist or is not the owner's fails the node without a retry;
    a rate limit, a timeout or a 5xx answer of the provider is retried as the error policy allows.
    """

    type = "llm"
    cacheable = True
    description = "Ask a chat model (OpenAI-compatible, Anthropic or Gemini); the answer streams as node.delta events."
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
    example_config = {
        "provider": "00000000-0000-0000-0000-000000000000",
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Weather in {{ start.city }}?"},
        ],
        "temperature": 0.2,
    }

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

    def cache_refusal(self, config: dict) -> str | None:
        if (config.get("memory") or {}).get("enabled"):
            return "An llm node with memory answers from its conversation, not only its inputs: it cannot be cached."
        return None

    def reused_output(self, output: dict) -> dict:
        """A reused answer cost no tokens: its usage says so, and the run is metered for none."""
        usage = output.get("usage") if isinstance(output.get("usage"), dict) else {}
        spent = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0, "cached": True}
        return {**output, "usage": {**usage, **spent}}

    async def execute(self, ctx: NodeContext, config: dict) -> dict:
        provider_id = await ctx.render(config["provider"])
        owner_id = await _owner_id(ctx, "An llm node uses its workflow owner's providers.")
        provider = await _provider_of(provider_id=provider_id, owner_id=owner_id)
        if provider is None:
            raise ProviderNotFound(
                f"No LLM provider {provider_id!r} among the workflow owner's providers: add one"
                " (console: Providers; API: POST /api/v1/providers/) and name it in this node's config.provider."
            )
        model = config.get("model") or provider.model
        if not model:
            raise NonRetryableError(f"No model given and provider {provider.name!r} has no default model.")
        if "messages" in config:
            messages = [{"role": m["role"], "content": await ctx.render(m["content"])} for m in config["messages"]]
        else:
            messages = [{"role": "system", "content": await ctx.render(config["system"])}] if "system" in config else []
            messages.append({"role": "user", "content": await ctx.render(config["prompt"])})
        memory = config.get("memory") or {}
        conversation = ctx.ports.memory if memory.get("enabled") else None
        if conversation is not None:
            earlier = await conversation.load(node_id=ctx.node_id, limits=_picked(memory, "rounds", "max_tokens"))
            messages, question = _with_memory(messages, earlier)
        deltas = _DeltaStream(ctx)
        await provider_rate_limit_acquire(provider=provider)
        result = await LLMClient.for_provider(provider, on_usage=llm_tokens_count).chat(
            model=model,
            messages=messages,
            temperature=config.get("temperature"),
            max_tokens=config.get("max_tokens"),
            stream=config.get("stream", True),
            on_delta=deltas.add,
        )
        await deltas.flush()
        if conversation is not None:
            limits = _picked(memory, "max_chars_per_message")
            await conversation.append(node_id=ctx.node_id, question=question, answer=result.text, limits=limits)
        usage = {**(result.usage or {}), "provider": str(provider.pk), "model": getattr(result, "model", "") or model}
        return {"text": result.text, "usage": usage}


@on_db_thread
def _agent_spec(*, agent_id: str, owner_id):
    try:
        key = uuid.UUID(agent_id)
    except ValueError:
        raise AgentNotUsable(f"{agent_id!r} is not an agent id.") from None
    return agent_spec_load(agent_id=key, owner_id=owner_id)


@register
class AgentNode(NodeType):
    """Runs one of the workflow owner's agents: its model calls approved tools until it answers.

    ``agent`` is the agent's id; its provider, model, system prompt and tools come from it, and
    ``input`` (rendered) is the user message. ``max_steps`` and ``token_budget`` override the
    agent's own (0 budget: none). Only tools approved when the node runs are offered, and each call
    checks again. Every step is a ``node.delta`` event. The output is ``{text, steps, usage}``.

    On failure: passing the step limit or the token budget fails the node without a retry; so does
    an agent that does not exist or is not the owner's.
    """

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
    example_config = {
        "agent": "00000000-0000-0000-0000-000000000000",
        "input": "Find out about {{ start.topic }}",
        "max_steps": 6,
        "token_budget": 20000,
    }

    def check(self, config: dict):
        try:
            uuid.UUID(config["agent"])
        except ValueError:
            if "{{" not in config["agent"]:
                yield "agent", "Must be the id of an agent."

    async def execute(self, ctx: NodeContext, config: dict) -> dict:
        owner_id = await _owner_id(ctx, "An agent node runs its workflow owner's agents.")
        agent_id = (await ctx.render(config["agent"])).strip()
        spec = await _agent_spec(agent_id=agent_id, owner_id=owner_id)
        messages = [{"role": "system", "content": spec.system_prompt}] if spec.system_prompt else []
        messages.append({"role": "user", "content": await ctx.render(config["input"])})

        async def tool_gate(tool) -> None:
            await on_db_thread(tool_runnable_get)(tool_id=tool.id, owner_id=spec.owner_id)

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


@register
class ToolNode(NodeType):
    """Runs one approved tool (HTTP or built-in) with templated arguments.

    ``tool`` is the id of a tool that is approved and is the workflow owner's or public.
    ``arguments`` are rendered (``"{{ x.y }}"`` alone keeps its type) and checked against the tool's
    ``parameters``. ``timeout_s`` bounds the call, within the node's own timeout. The output is
    ``{result}``: the tool's JSON answer, or its text.

    On failure: whether the tool may run is checked every time the node runs, so a tool rejected
    after the workflow was published fails the node at once, without a retry, with the reason;
    arguments that do not match the tool's parameters fail it the same way.
    """

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
    example_config = {
        "tool": "00000000-0000-0000-0000-000000000000",
        "arguments": {"expression": "{{ start.a }} + {{ start.b }}"},
    }

    def check(self, config: dict):
        try:
            uuid.UUID(config["tool"])
        except ValueError:
            if "{{" not in config["tool"]:
                yield "tool", "Must be the id of a tool."

    async def execute(self, ctx: NodeContext, config: dict) -> dict:
        owner_id = await _owner_id(ctx, "A tool node runs its workflow owner's tools.")
        tool_id = (await ctx.render(config["tool"])).strip()
        spec = await on_db_thread(tool_runnable_get)(tool_id=tool_id, owner_id=owner_id)
        arguments = await ctx.render_value(config.get("arguments", {}))
        timeout_s = config.get("timeout_s")
        left = ctx.time_left()
        if left is not None:
            timeout_s = left if timeout_s is None else min(timeout_s, left)
        return {"result": await tool_execute(spec=spec, arguments=arguments, timeout_s=timeout_s)}
