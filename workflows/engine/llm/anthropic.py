"""Anthropic's Messages API (``POST {base_url}/messages``, base URL ``https://api.anthropic.com/v1``).

The mapping from Weft's OpenAI-shaped chat: ``system`` messages become the top-level ``system``;
an assistant's ``tool_calls`` become ``tool_use`` blocks and ``tool`` messages ``tool_result``
blocks of a user turn; consecutive turns of one role are merged, as the API wants them to
alternate. ``max_tokens`` is required there: :data:`DEFAULT_MAX_TOKENS` when the node gives none.
Streams are server-sent events (``message_start``, ``content_block_*``, ``message_delta``...).
"""

import json

from .adapter import Adapter, StreamReader, WireRequest
from .common import ChatResult, StreamFailed, arguments_object, function_call, text_of, usage_of

API_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096
FINISH_REASONS = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "tool_use": "tool_calls"}


def _text_blocks(text: str) -> list[dict]:
    return [{"type": "text", "text": text}] if text else []


def _turns(messages: list[dict]) -> tuple[str, list[dict]]:
    """The system prompt and the alternating user/assistant turns for ``messages``."""
    system: list[str] = []
    turns: list[dict] = []
    for message in messages:
        role = message.get("role")
        if role == "system":
            system.append(text_of(message.get("content")))
            continue
        if role == "tool":
            role = "user"
            blocks = [
                {
                    "type": "tool_result",
                    "tool_use_id": message.get("tool_call_id", ""),
                    "content": text_of(message.get("content")),
                }
            ]
        elif role == "assistant":
            blocks = _text_blocks(text_of(message.get("content")))
            for call in message.get("tool_calls") or []:
                function = call.get("function") or {}
                blocks.append(
                    {
                        "type": "tool_use",
                        "id": call.get("id", ""),
                        "name": function.get("name", ""),
                        "input": arguments_object(function.get("arguments", "")),
                    }
                )
        else:
            role = "user"
            blocks = _text_blocks(text_of(message.get("content")))
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:
            previous = turns[-1]["content"]
            turns[-1]["content"] = (_text_blocks(previous) if isinstance(previous, str) else previous) + blocks
        else:
            # A lone text block is sent as plain content, the form the API's own examples use.
            turns.append({"role": role, "content": blocks[0]["text"] if _plain(blocks) else blocks})
    return "\n\n".join(part for part in system if part), turns


def _plain(blocks: list[dict]) -> bool:
    return len(blocks) == 1 and blocks[0]["type"] == "text"


def _tool(definition: dict) -> dict:
    function = definition.get("function") or {}
    tool = {"name": function.get("name", ""), "input_schema": function.get("parameters") or {"type": "object"}}
    if function.get("description"):
        tool["description"] = function["description"]
    return tool


def _usage(usage: dict) -> dict:
    return usage_of(usage.get("input_tokens"), usage.get("output_tokens"))


class AnthropicAdapter(Adapter):
    kind = "anthropic"

    def headers(self, api_key: str) -> dict:
        headers = {"anthropic-version": API_VERSION}
        if api_key:
            headers["x-api-key"] = api_key
        return headers

    def chat_request(self, *, model, messages, temperature, max_tokens, tools, stream, extra) -> WireRequest:
        system, turns = _turns(messages)
        body: dict = {"model": model, "messages": turns, "max_tokens": max_tokens or DEFAULT_MAX_TOKENS, **extra}
        if system:
            body["system"] = system
        if temperature is not None:
            body["temperature"] = temperature
        if tools:
            body["tools"] = [_tool(definition) for definition in tools]
        if stream:
            body["stream"] = True
        return WireRequest(path="/messages", body=body)

    def read_answer(self, payload: dict) -> ChatResult:
        text = ""
        calls = []
        for block in payload.get("content") or []:
            if block.get("type") == "text":
                text += block.get("text") or ""
            elif block.get("type") == "tool_use":
                arguments = json.dumps(block.get("input") or {})
                name = block.get("name", "")
                calls.append(function_call(call_id=block.get("id", ""), name=name, arguments=arguments))
        return ChatResult(
            text=text,
            usage=_usage(payload.get("usage") or {}),
            finish_reason=FINISH_REASONS.get(payload.get("stop_reason"), payload.get("stop_reason")),
            tool_calls=calls,
            model=payload.get("model", ""),
        )

    def stream_reader(self) -> StreamReader:
        return _AnthropicStream()

    def model_ids(self, payload: dict) -> list[str]:
        return [entry["id"] for entry in payload.get("data", []) if isinstance(entry, dict) and "id" in entry]


class _AnthropicStream(StreamReader):
    def __init__(self):
        super().__init__()
        self._calls: dict[int, dict] = {}
        self._input: dict = {}
        self._output: dict = {}

    def feed(self, event: dict) -> str:
        kind = event.get("type")
        if kind == "error":
            error = event.get("error")
            raise StreamFailed(error.get("message", "") if isinstance(error, dict) else str(error))
        if kind == "message_start":
            message = event.get("message") or {}
            self.result.model = message.get("model") or self.result.model
            self._input = message.get("usage") or {}
        elif kind == "content_block_start":
            block = event.get("content_block") or {}
            if block.get("type") == "tool_use":
                call = function_call(call_id=block.get("id", ""), name=block.get("name", ""), arguments="")
                self._calls[event.get("index", 0)] = call
            elif block.get("type") == "text":
                return block.get("text") or ""
        elif kind == "content_block_delta":
            delta = event.get("delta") or {}
            if delta.get("type") == "text_delta":
                return delta.get("text") or ""
            if delta.get("type") == "input_json_delta" and event.get("index", 0) in self._calls:
                self._calls[event.get("index", 0)]["function"]["arguments"] += delta.get("partial_json") or ""
        elif kind == "message_delta":
            reason = (event.get("delta") or {}).get("stop_reason")
            self.result.finish_reason = FINISH_REASONS.get(reason, reason) or self.result.finish_reason
            self._output = event.get("usage") or self._output
        self._settle()
        return ""

    def _settle(self) -> None:
        # A tool_use block with no input streams no input_json_delta at all: its arguments are {}.
        self.result.tool_calls = [
            {**call, "function": {**call["function"], "arguments": call["function"]["arguments"] or "{}"}}
            for _, call in sorted(self._calls.items())
        ]
        self.result.usage = usage_of(
            self._input.get("input_tokens"), self._output.get("output_tokens", self._input.get("output_tokens"))
        )
