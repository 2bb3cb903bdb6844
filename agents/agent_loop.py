"""The tool-calling loop of an agent, shared by the agent node and by chatting with an agent.

One **step** is one model call: the model gets the conversation and the agent's tools (OpenAI
``tools`` format, from each tool's ``parameters``); if it asks for tool calls, each one is run
(only tools the agent has that are approved now; arguments checked against the schema) and its
result, or its error, goes back to the model as a ``tool`` message; then the next step. The loop
ends with the model's first answer that calls no tool. It fails with :class:`AgentStepLimit` when
the model still calls tools after ``max_steps`` steps, and with :class:`AgentBudgetExceeded` as
soon as the tokens used (the provider's usage, or an estimate when it sends none) pass
``token_budget`` (0: no budget). Both are not retryable.

Every step is reported to ``on_step`` as it happens (the agent node sends it as a ``node.delta``
event ``{"step": {...}}``): ``{"step": n, "kind": "model", "text", "tool_calls", "usage"}`` after
a model call, ``{"step": n, "kind": "tool", "tool", "call_id", "ok", "result" | "error"}`` after
a tool call.
"""

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from observability.metrics import llm_tokens_count
from workflows.engine import EngineError, LLMClient, NonRetryableError, RunCancelled

from .models import Agent
from .rate_limits import provider_rate_limit_acquire
from .tools_runtime import (
    ToolNotRunnable,
    ToolSpec,
    openai_function_name,
    tool_arguments_parse,
    tool_definition,
    tool_execute,
    tools_runnable_for_owner,
)

#: A tool result sent back to the model is cut to this many characters.
TOOL_RESULT_MAX_CHARS = 20_000
MAX_STEPS_LIMIT = 100

StepCallback = Callable[[dict], Awaitable[None]]
ToolGate = Callable[[ToolSpec], Awaitable[None]]


class AgentNotUsable(NonRetryableError):
    """The agent does not exist for this owner, is archived, or has no provider or model."""


class AgentStepLimit(NonRetryableError):
    """The model still asked for tools when the step limit was reached."""


class AgentBudgetExceeded(NonRetryableError):
    """The loop used more tokens than its budget."""


@dataclass(frozen=True)
class AgentSpec:
    """An agent as the loop needs it, read once from the database."""

    id: str
    name: str
    owner_id: int
    provider: object  # an agents.models.LLMProvider row
    model: str
    system_prompt: str
    tools: tuple[ToolSpec, ...]
    max_steps: int
    token_budget: int


def agent_spec_load(*, agent_id, owner_id) -> AgentSpec:
    """The agent of ``owner_id`` with its provider and the tools it may run now (approved ones only).

    Blocking (ORM): call it from a thread in async code.
    """
    agent = Agent.objects.filter(pk=agent_id, owner_id=owner_id).select_related("provider").first()
    if agent is None:
        raise AgentNotUsable(f"No agent {str(agent_id)!r} among the workflow owner's agents.")
    if agent.status != Agent.Status.ACTIVE:
        raise AgentNotUsable(f"Agent {agent.name!r} is archived.")
    if agent.provider is None:
        raise AgentNotUsable(f"Agent {agent.name!r} has no LLM provider.")
    model = agent.model or agent.provider.model
    if not model:
        raise AgentNotUsable(f"Agent {agent.name!r} has no model and its provider has no default model.")
    runnable = tools_runnable_for_owner(owner_id=owner_id).filter(agents=agent).order_by("name")
    return AgentSpec(
        id=str(agent.pk),
        name=agent.name,
        owner_id=owner_id,
        provider=agent.provider,
        model=model,
        system_prompt=agent.system_prompt,
        tools=tuple(ToolSpec.from_tool(tool) for tool in runnable),
        max_steps=agent.max_steps,
        token_budget=agent.token_budget,
    )


@dataclass
class AgentResult:
    text: str
    steps: list[dict]
    usage: dict
    #: The messages the loop added after the input: assistant tool calls, tool results, the answer.
    messages: list[dict] = field(default_factory=list)


def _add_usage(total: dict, usage: dict) -> None:
    for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
        value = usage.get(key)
        if isinstance(value, int):
            total[key] += value
    if usage.get("estimated"):
        total["estimated"] = True


def _result_content(value) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text[:TOOL_RESULT_MAX_CHARS]


async def agent_loop_run(
    *,
    spec: AgentSpec,
    messages: list[dict],
    tool_gate: ToolGate,
    on_step: StepCallback | None = None,
    max_steps: int | None = None,
    token_budget: int | None = None,
    time_left: Callable[[], float | None] = lambda: None,
) -> AgentResult:
    """Run the loop from ``messages`` (system prompt first, if any) to the model's final answer.

    ``tool_gate`` is awaited before each tool call and raises :class:`ToolNotRunnable` if the tool
    may no longer run (say, it was rejected while the loop ran).
    """
    steps_allowed = min(max_steps or spec.max_steps, MAX_STEPS_LIMIT)
    budget = spec.token_budget if token_budget is None else token_budget
    names: set[str] = set()
    by_function: dict[str, ToolSpec] = {}
    definitions = []
    for tool in spec.tools:
        function_name = openai_function_name(tool.name, names)
        names.add(function_name)
        by_function[function_name] = tool
        definitions.append(tool_definition(tool, function_name=function_name))
    client = LLMClient.for_provider(spec.provider, on_usage=llm_tokens_count)
    conversation = list(messages)
    added: list[dict] = []
    steps: list[dict] = []
    usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}

    async def report(step: dict) -> None:
        steps.append(step)
        if on_step is not None:
            await on_step(step)

    for step in range(1, steps_allowed + 1):
        await provider_rate_limit_acquire(provider=spec.provider)
        answer = await client.chat(model=spec.model, messages=conversation, tools=definitions or None)
        _add_usage(usage, answer.usage)
        calls = [call for call in answer.tool_calls if (call.get("function") or {}).get("name")]
        await report(
            {
                "step": step,
                "kind": "model",
                "text": answer.text,
                "tool_calls": [
                    {
                        "id": call.get("id", ""),
                        "name": call["function"]["name"],
                        "arguments": call["function"]["arguments"],
                    }
                    for call in calls
                ],
                "usage": answer.usage,
            }
        )
        if budget and usage["total_tokens"] > budget:
            raise AgentBudgetExceeded(
                f"Agent {spec.name!r} used {usage['total_tokens']} tokens by step {step}, over its budget of {budget}."
            )
        if not calls:
            final = {"role": "assistant", "content": answer.text}
            added.append(final)
            return AgentResult(text=answer.text, steps=steps, usage=usage, messages=added)
        if step == steps_allowed:
            break
        assistant = {"role": "assistant", "content": answer.text or None, "tool_calls": calls}
        conversation.append(assistant)
        added.append(assistant)
        for call in calls:
            tool_message = await _tool_call(call, by_function, tool_gate, time_left, report, step)
            conversation.append(tool_message)
            added.append(tool_message)
    raise AgentStepLimit(f"Agent {spec.name!r} did not give a final answer within {steps_allowed} steps.")


async def _tool_call(call: dict, by_function: dict, tool_gate, time_left, report, step: int) -> dict:
    name = call["function"]["name"]
    call_id = call.get("id", "")
    tool = by_function.get(name)
    try:
        if tool is None:
            raise ToolNotRunnable(f"There is no tool {name!r}; use one of: {', '.join(by_function) or 'none'}.")
        arguments = tool_arguments_parse(spec=tool, raw=call["function"].get("arguments") or "")
        await tool_gate(tool)
        result = await tool_execute(spec=tool, arguments=arguments, timeout_s=time_left())
    except RunCancelled:
        raise
    except EngineError as exc:
        # The model reads the error and may try again differently: that is part of the loop.
        error = f"{type(exc).__name__}: {exc}"
        await report({"step": step, "kind": "tool", "tool": name, "call_id": call_id, "ok": False, "error": error})
        return {"role": "tool", "tool_call_id": call_id, "content": _result_content({"error": error})}
    await report({"step": step, "kind": "tool", "tool": name, "call_id": call_id, "ok": True, "result": result})
    return {"role": "tool", "tool_call_id": call_id, "content": _result_content(result)}
