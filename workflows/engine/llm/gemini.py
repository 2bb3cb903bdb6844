"""The Gemini API (``generateContent`` / ``streamGenerateContent``; base URL
``https://generativelanguage.googleapis.com/v1beta``).

The mapping from Weft's OpenAI-shaped chat: ``system`` messages become ``systemInstruction``; the
assistant is the ``model`` role; ``tool_calls`` become ``functionCall`` parts and ``tool``
messages ``functionResponse`` parts (named after the call they answer, as Gemini matches them by
name); tool ``parameters`` go as ``parametersJsonSchema``, which takes JSON Schema as it is.
Gemini gives calls no id unless it has one: they get ``call_<n>``. The key goes in the
``x-goog-api-key`` header, not in the URL, so it cannot show in a logged or reported URL.
"""

import json
from urllib.parse import quote

from .adapter import Adapter, StreamReader, WireRequest
from .common import ChatResult, StreamFailed, arguments_object, function_call, text_of, usage_of

FILTERED = frozenset({"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY"})


def _contents(messages: list[dict]) -> tuple[list[str], list[dict]]:
    """The system texts and the ``contents`` (turns of ``user`` and ``model``) for ``messages``."""
    system: list[str] = []
    contents: list[dict] = []
    names: dict[str, str] = {}
    for message in messages:
        role = message.get("role")
        text = text_of(message.get("content"))
        if role == "system":
            system.append(text)
            continue
        parts: list[dict] = [{"text": text}] if text and role != "tool" else []
        if role == "assistant":
            role = "model"
            for call in message.get("tool_calls") or []:
                function = call.get("function") or {}
                names[call.get("id", "")] = function.get("name", "")
                arguments = arguments_object(function.get("arguments", ""))
                parts.append({"functionCall": {"name": function.get("name", ""), "args": arguments}})
        elif role == "tool":
            role = "user"
            name = names.get(message.get("tool_call_id", ""), "")
            parts.append({"functionResponse": {"name": name, "response": {"content": text}}})
        else:
            role = "user"
        if not parts:
            continue
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": role, "parts": parts})
    return [part for part in system if part], contents


def _declaration(definition: dict) -> dict:
    function = definition.get("function") or {}
    declaration = {"name": function.get("name", "")}
    if function.get("description"):
        declaration["description"] = function["description"]
    if function.get("parameters"):
        declaration["parametersJsonSchema"] = function["parameters"]
    return declaration


def _finish_reason(reason: str | None, *, has_calls: bool) -> str | None:
    if reason is None:
        return None
    if reason == "STOP":
        return "tool_calls" if has_calls else "stop"
    if reason == "MAX_TOKENS":
        return "length"
    return "content_filter" if reason in FILTERED else reason.lower()


def _usage(payload: dict) -> dict:
    usage = payload.get("usageMetadata") or {}
    return usage_of(usage.get("promptTokenCount"), usage.get("candidatesTokenCount"), usage.get("totalTokenCount"))


class _Chunk:
    """What one ``GenerateContentResponse`` (a whole answer, or one streamed piece) holds."""

    def __init__(self, payload: dict, *, first_call: int):
        if isinstance(payload.get("error"), dict):
            raise StreamFailed(str(payload["error"].get("message", "")))
        candidates = payload.get("candidates") or [{}]
        candidate = candidates[0]
        self.text = ""
        self.calls: list[dict] = []
        for part in (candidate.get("content") or {}).get("parts") or []:
            if part.get("thought"):
                continue
            if "text" in part:
                self.text += part.get("text") or ""
            elif isinstance(part.get("functionCall"), dict):
                call = part["functionCall"]
                self.calls.append(
                    function_call(
                        call_id=call.get("id") or f"call_{first_call + len(self.calls) + 1}",
                        name=call.get("name", ""),
                        arguments=json.dumps(call.get("args") or {}),
                    )
                )
        self.reason = candidate.get("finishReason")
        if not payload.get("candidates") and (payload.get("promptFeedback") or {}).get("blockReason"):
            self.reason = "SAFETY"
        self.usage = _usage(payload)
        self.model = payload.get("modelVersion", "")


class GeminiAdapter(Adapter):
    kind = "gemini"

    def headers(self, api_key: str) -> dict:
        return {"x-goog-api-key": api_key} if api_key else {}

    def chat_request(self, *, model, messages, temperature, max_tokens, tools, stream, extra) -> WireRequest:
        system, contents = _contents(messages)
        body: dict = {"contents": contents, **extra}
        if system:
            body["systemInstruction"] = {"parts": [{"text": text} for text in system]}
        config = dict(body.get("generationConfig") or {})
        if temperature is not None:
            config["temperature"] = temperature
        if max_tokens is not None:
            config["maxOutputTokens"] = max_tokens
        if config:
            body["generationConfig"] = config
        if tools:
            body["tools"] = [{"functionDeclarations": [_declaration(definition) for definition in tools]}]
        name = quote(model.removeprefix("models/"), safe="")
        if stream:
            return WireRequest(path=f"/models/{name}:streamGenerateContent", body=body, params={"alt": "sse"})
        return WireRequest(path=f"/models/{name}:generateContent", body=body)

    def read_answer(self, payload: dict) -> ChatResult:
        chunk = _Chunk(payload, first_call=0)
        return ChatResult(
            text=chunk.text,
            usage=chunk.usage,
            finish_reason=_finish_reason(chunk.reason, has_calls=bool(chunk.calls)),
            tool_calls=chunk.calls,
            model=chunk.model,
        )

    def stream_reader(self) -> StreamReader:
        return _GeminiStream()

    def model_ids(self, payload: dict) -> list[str]:
        return [
            entry["name"].removeprefix("models/")
            for entry in payload.get("models", [])
            if isinstance(entry, dict) and isinstance(entry.get("name"), str)
        ]


class _GeminiStream(StreamReader):
    def feed(self, event: dict) -> str:
        result = self.result
        chunk = _Chunk(event, first_call=len(result.tool_calls))
        result.tool_calls = [*result.tool_calls, *chunk.calls]
        result.usage = chunk.usage or result.usage
        result.model = chunk.model or result.model
        reason = _finish_reason(chunk.reason, has_calls=bool(result.tool_calls))
        result.finish_reason = reason or result.finish_reason
        return chunk.text
