"""A small fake of Anthropic's Messages API the tests start on loopback (a real HTTP server in a thread).

It serves ``POST /v1/messages`` (streaming as the API's server-sent events, or one JSON message)
and ``GET /v1/models``, scripted with the same :class:`~tests.fakes.openai_server.Answer` as the
OpenAI fake. It holds requests to the API's rules, answering 400 as the API does: the
``anthropic-version`` header, ``max_tokens``, turns that alternate from ``user``, no ``system``
role in ``messages``, and each ``tool_result`` answering a ``tool_use`` of the turn before.
"""

import json

from .llm_handler import ScriptedHandler
from .openai_server import Answer, FakeOpenAI


class FakeAnthropic(FakeOpenAI):
    """Start with :meth:`start` (or use the ``fake_anthropic`` fixture); ``base_url`` ends in ``/v1``."""

    kind = "anthropic"

    def handler_class(self):
        return type("AnthropicHandler", (_AnthropicHandler,), {"fake": self})

    def last_user_text(self, body: dict) -> str:
        for message in reversed(body.get("messages", [])):
            if message.get("role") == "user" and isinstance(message.get("content"), str):
                return message["content"]
        return ""


def _usage(body: dict, answer: Answer) -> dict:
    if answer.usage is not None:
        return {"input_tokens": answer.usage["prompt_tokens"], "output_tokens": answer.usage["completion_tokens"]}
    prompt = sum(len(json.dumps(m.get("content", "")).split()) for m in body.get("messages", []))
    return {"input_tokens": prompt, "output_tokens": len(answer.text.split())}


def _turn_problem(body: dict) -> str | None:
    messages = body.get("messages") or []
    previous_tool_uses: set[str] = set()
    for number, message in enumerate(messages):
        role = message.get("role")
        if role not in ("user", "assistant"):
            return f"messages.{number}.role: Input should be 'user' or 'assistant'"
        if role != ("user" if number % 2 == 0 else "assistant"):
            return "messages: roles must alternate between 'user' and 'assistant', starting with 'user'"
        content = message.get("content")
        blocks = content if isinstance(content, list) else []
        if isinstance(content, list) and not content:
            return f"messages.{number}: content must not be empty"
        for block in blocks:
            if block.get("type") == "tool_result" and block.get("tool_use_id") not in previous_tool_uses:
                return f"messages.{number}: unexpected tool_use_id found in tool_result blocks"
        previous_tool_uses = {block.get("id") for block in blocks if block.get("type") == "tool_use"}
    return None


class _AnthropicHandler(ScriptedHandler):
    key_header = "x-api-key"

    def chat_route(self, path: str) -> bool:
        return path.rstrip("/") == "/v1/messages"

    def models_route(self, path: str) -> bool:
        return path.rstrip("/") == "/v1/models"

    def error_payload(self, status: int, message: str) -> dict:
        kinds = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error"}
        kind = kinds.get(status, "rate_limit_error" if status == 429 else "api_error")
        return {"type": "error", "error": {"type": kind, "message": message}}

    def check_body(self, body: dict, query: dict) -> str | None:
        if not self.headers.get("anthropic-version"):
            return "anthropic-version: header is required"
        if not isinstance(body.get("max_tokens"), int):
            return "max_tokens: Field required"
        return _turn_problem(body)

    def models_payload(self) -> dict:
        return {"data": [{"id": self.fake.model, "type": "model"}], "has_more": False}

    def streaming(self, body: dict, query: dict) -> bool:
        return bool(body.get("stream"))

    def answer_payload(self, body: dict, answer: Answer) -> dict:
        content = [{"type": "text", "text": answer.text}] if answer.text else []
        content += [
            {"type": "tool_use", "id": c["id"], "name": c["name"], "input": json.loads(c["arguments"])}
            for c in answer.tool_calls
        ]
        return {
            "id": "msg_fake",
            "type": "message",
            "role": "assistant",
            "model": body.get("model", self.fake.model),
            "content": content,
            "stop_reason": "tool_use" if answer.tool_calls else "end_turn",
            "usage": _usage(body, answer),
        }

    def stream_events(self, body: dict, answer: Answer):
        usage = _usage(body, answer)
        start_usage = {"input_tokens": usage["input_tokens"], "output_tokens": 1}
        message = {"id": "msg_fake", "type": "message", "role": "assistant", "content": [], "model": body.get("model")}
        if not answer.omit_usage:
            message["usage"] = start_usage
        yield "message_start", {"type": "message_start", "message": message}, False
        index = 0
        if answer.deltas():
            block = {"type": "text", "text": ""}
            yield "content_block_start", {"type": "content_block_start", "index": 0, "content_block": block}, False
            yield "ping", {"type": "ping"}, False
            for piece in answer.deltas():
                delta = {"type": "text_delta", "text": piece}
                yield "content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta}, True
            yield "content_block_stop", {"type": "content_block_stop", "index": 0}, False
            index = 1
        for offset, call in enumerate(answer.tool_calls, start=index):
            block = {"type": "tool_use", "id": call["id"], "name": call["name"], "input": {}}
            yield "content_block_start", {"type": "content_block_start", "index": offset, "content_block": block}, False
            half = len(call["arguments"]) // 2
            for part in (call["arguments"][:half], call["arguments"][half:]):
                delta = {"type": "input_json_delta", "partial_json": part}
                yield "content_block_delta", {"type": "content_block_delta", "index": offset, "delta": delta}, False
            yield "content_block_stop", {"type": "content_block_stop", "index": offset}, False
        stop = {"stop_reason": "tool_use" if answer.tool_calls else "end_turn", "stop_sequence": None}
        end = {"type": "message_delta", "delta": stop}
        if not answer.omit_usage:
            end["usage"] = {"output_tokens": usage["output_tokens"]}
        yield "message_delta", end, False
        yield "message_stop", {"type": "message_stop"}, False
