"""Chatting with a session's agent: one turn of the agent loop, appended to the session's messages.

``session_chat`` runs the same loop as the agent node (``agents.agent_loop``), synchronously
within ``WEFT["AGENT_CHAT_TIMEOUT_S"]`` (60 s by default). The model sees the agent's system
prompt, the session's last ``CHAT_HISTORY_MESSAGES`` user and assistant answers (earlier turns'
tool exchanges are left out), and the new message. When the turn succeeds, the user's message,
the assistant's tool calls, the tool results and the answer are appended in one transaction
with the session locked, so their sequence numbers are consecutive. When it fails nothing is
appended, and the caller can send the message again.
"""

import asyncio
import math
from dataclasses import dataclass

from asgiref.sync import async_to_sync, sync_to_async
from django.db import transaction

from config.conf import weft_settings
from config.errors import InvalidInput, RateLimited, WeftError
from workflows.engine import NonRetryableError, RetryableError

from .agent_loop import (
    AgentBudgetExceeded,
    AgentNotUsable,
    AgentResult,
    AgentSpec,
    AgentStepLimit,
    agent_loop_run,
    agent_spec_load,
)
from .models import Message, Session
from .selectors import session_messages
from .services import message_create
from .tools_runtime import tool_runnable_get

CHAT_HISTORY_MESSAGES = 40


class AgentChatFailed(WeftError):
    """The agent could not answer: the provider refused, or the loop hit its step limit or budget."""

    status_code = 502
    default_code = "agent_failed"


class AgentUnavailable(WeftError):
    """The provider is failing for now; try again later."""

    status_code = 503
    default_code = "agent_unavailable"


class AgentChatTimeout(WeftError):
    status_code = 504
    default_code = "agent_timeout"


@dataclass
class ChatTurn:
    messages: list[Message]
    text: str
    steps: list[dict]
    usage: dict


def _history(session: Session) -> list[dict]:
    """The last user messages and final assistant answers, oldest first."""
    rows = session_messages(session=session).filter(role__in=[Message.Role.USER, Message.Role.ASSISTANT])
    recent = list(rows.order_by("-sequence_number")[: CHAT_HISTORY_MESSAGES * 2])
    kept = [row for row in recent if not (row.metadata or {}).get("tool_calls")][:CHAT_HISTORY_MESSAGES]
    return [{"role": row.role, "content": row.content} for row in reversed(kept)]


async def _run_turn(*, spec: AgentSpec, messages: list[dict], timeout_s: float) -> AgentResult:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    check = sync_to_async(tool_runnable_get, thread_sensitive=True)

    async def tool_gate(tool) -> None:
        await check(tool_id=tool.id, owner_id=spec.owner_id)

    async with asyncio.timeout(timeout_s):
        return await agent_loop_run(
            spec=spec,
            messages=messages,
            tool_gate=tool_gate,
            time_left=lambda: max(0.0, deadline - loop.time()),
        )


def _turn_messages(result: AgentResult) -> list[tuple[str, str, dict]]:
    """The loop's new messages as (role, content, metadata) rows."""
    names: dict[str, str] = {}
    rows = []
    for message in result.messages:
        if message["role"] == "tool":
            metadata = {"tool_call_id": message["tool_call_id"], "tool": names.get(message["tool_call_id"], "")}
            rows.append((Message.Role.TOOL, message["content"], metadata))
        elif message.get("tool_calls"):
            for call in message["tool_calls"]:
                names[call.get("id", "")] = call["function"]["name"]
            rows.append((Message.Role.ASSISTANT, message.get("content") or "", {"tool_calls": message["tool_calls"]}))
        else:
            metadata = {"usage": result.usage, "steps": len([s for s in result.steps if s["kind"] == "model"])}
            rows.append((Message.Role.ASSISTANT, message.get("content") or "", metadata))
    return rows


def session_chat(*, session: Session, user, content: str) -> ChatTurn:
    """Send ``content`` to the session's agent and append the whole turn to the session."""
    if session.agent_id is None:
        raise InvalidInput(
            "This session has no agent; set the session's agent to chat.", field="agent", code="required"
        )
    try:
        spec = agent_spec_load(agent_id=session.agent_id, owner_id=session.owner_id)
    except AgentNotUsable as exc:
        raise InvalidInput(str(exc), field="agent", code="agent_not_usable") from exc
    messages = [{"role": "system", "content": spec.system_prompt}] if spec.system_prompt else []
    messages += _history(session)
    messages.append({"role": "user", "content": content})
    timeout_s = float(weft_settings.AGENT_CHAT_TIMEOUT_S)
    try:
        result = async_to_sync(_run_turn)(spec=spec, messages=messages, timeout_s=timeout_s)
    except TimeoutError as exc:
        raise AgentChatTimeout(f"The agent did not answer within {timeout_s:g} s.") from exc
    except AgentStepLimit as exc:
        raise AgentChatFailed(str(exc), code="step_limit") from exc
    except AgentBudgetExceeded as exc:
        raise AgentChatFailed(str(exc), code="token_budget") from exc
    except NonRetryableError as exc:
        raise AgentChatFailed(f"The agent could not answer: {exc}") from exc
    except RetryableError as exc:
        retry_after = math.ceil(exc.retry_after) if exc.retry_after else None
        if retry_after is not None:
            raise RateLimited(f"The agent's provider asks to wait: {exc}", retry_after=retry_after) from exc
        raise AgentUnavailable(f"The agent's provider is unavailable: {exc}") from exc
    with transaction.atomic():
        # One transaction: message_create locks the session row until the turn is all written.
        appended = [message_create(session=session, user=user, role=Message.Role.USER, content=content)]
        appended += [
            message_create(session=session, user=user, role=role, content=text, metadata=metadata)
            for role, text, metadata in _turn_messages(result)
        ]
    return ChatTurn(messages=appended, text=result.text, steps=result.steps, usage=result.usage)
