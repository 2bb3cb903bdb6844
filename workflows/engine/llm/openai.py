"""The OpenAI-compatible ``/chat/completions`` protocol (OpenAI, and the many servers that copy it).

Streams are server-sent events ``data: {...}`` ending with ``data: [DONE]``; the usage comes in a
last chunk when asked for with ``stream_options``. Tool calls stream in fragments keyed by index.
"""

from .adapter import Adapter, StreamReader, WireRequest
from .common import ChatResult, StreamFailed


class OpenAIAdapter(Adapter):
    kind = "openai"

    def headers(self, api_key: str) -> dict:
        return {"Authorization": f"Bearer {api_key}"} if api_key else {}

    def chat_request(self, *, model, messages, temperature, max_tokens, tools, stream, extra) -> WireRequest:
        body: dict = {"model": model, "messages": messages, **extra}
        if temperature is not None:
            body["temperature"] = temperature
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        if tools:
            body["tools"] = tools
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        return WireRequest(path="/chat/completions", body=body)

    def read_answer(self, payload: dict) -> ChatResult:
        choices = payload.get("choices") or [{}]
        message = choices[0].get("message") or {}
        return ChatResult(
            text=message.get("content") or "",
            usage=payload.get("usage") or {},
            finish_reason=choices[0].get("finish_reason"),
            tool_calls=message.get("tool_calls") or [],
            model=payload.get("model", ""),
        )

    def stream_reader(self) -> StreamReader:
        return _OpenAIStream()

    def model_ids(self, payload: dict) -> list[str]:
        return [entry["id"] for entry in payload.get("data", []) if isinstance(entry, dict) and "id" in entry]


class _OpenAIStream(StreamReader):
    def __init__(self):
        super().__init__()
        self._calls: dict[int, dict] = {}

    def feed(self, event: dict) -> str:
        if event.get("error"):
            error = event["error"]
            raise StreamFailed(error.get("message", "") if isinstance(error, dict) else str(error))
        result = self.result
        result.model = event.get("model") or result.model
        result.usage = event.get("usage") or result.usage
        text = ""
        for choice in event.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            text += delta.get("content") or ""
            for piece in delta.get("tool_calls") or []:
                _merge_tool_call(self._calls.setdefault(piece.get("index", 0), {}), piece)
            result.finish_reason = choice.get("finish_reason") or result.finish_reason
        result.tool_calls = [self._calls[index] for index in sorted(self._calls)]
        return text


def _merge_tool_call(call: dict, piece: dict) -> None:
    """Fold one streamed fragment of a tool call into the call (arguments arrive in pieces)."""
    if piece.get("id"):
        call["id"] = piece["id"]
    call["type"] = piece.get("type") or call.get("type") or "function"
    function = call.setdefault("function", {"name": "", "arguments": ""})
    fragment = piece.get("function") or {}
    if fragment.get("name"):
        function["name"] = fragment["name"]
    function["arguments"] += fragment.get("arguments") or ""
