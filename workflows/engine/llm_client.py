"""An OpenAI-compatible ``/chat/completions`` client over the outbound guard.

It streams by default (server-sent events: ``data: {...}`` lines ending with ``data: [DONE]``),
handing each text delta to a callback and returning the whole answer with its usage; a server
that answers a streaming request with plain JSON, or ``stream=False``, is read in one piece.
429, 408, 409 and 5xx answers raise :class:`LLMUnavailable` (retryable, with the server's
``Retry-After``); other 4xx raise :class:`LLMRequestError`. The API key goes in one header and
nowhere else: not in ``repr``, logs, error messages or answers. A server that echoes it gets it
masked as ``***`` in errors, in the answer's text and tool calls, and in every streamed delta
(:class:`KeyMasker` holds back a delta's tail while it could be the start of the key).
"""

import json
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httpx

from .errors import NonRetryableError, RetryableError
from .net import (
    guarded_async_client,
    iter_lines_limited,
    outbound_errors,
    outbound_policy,
    parse_retry_after,
    read_limited,
)

RETRYABLE_STATUSES = frozenset({408, 409, 429})
ERROR_BODY_MAX_BYTES = 64 * 1024
#: Tokens a chat message costs beyond its text (role and separators), as OpenAI counts them roughly.
MESSAGE_OVERHEAD_TOKENS = 4

DeltaCallback = Callable[[str], Awaitable[None]]


class LLMRequestError(NonRetryableError):
    """The provider refused the request (bad key, unknown model, bad input): trying again will not help."""

    def __init__(self, message: str, *, status: int | None = None):
        super().__init__(message)
        self.status = status


class LLMUnavailable(RetryableError):
    """The provider is rate limiting or failing for now; ``retry_after`` is what it asked for."""

    def __init__(self, message: str, *, status: int | None = None, retry_after: float | None = None):
        super().__init__(message, retry_after=retry_after)
        self.status = status


@dataclass
class ChatResult:
    text: str
    #: ``prompt_tokens``, ``completion_tokens``, ``total_tokens`` (``estimated: True`` when the server sent none).
    usage: dict
    finish_reason: str | None = None
    #: ``[{"id", "type": "function", "function": {"name", "arguments"}}]`` when the model called tools.
    tool_calls: list[dict] = field(default_factory=list)
    model: str = ""


def estimate_tokens(text: str) -> int:
    """A download-free token estimate: about four characters a token, never fewer than the words."""
    if not text:
        return 0
    return max(math.ceil(len(text) / 4), len(text.split()))


def estimate_message_tokens(messages: list[dict]) -> int:
    total = 0
    for message in messages:
        content = message.get("content") or ""
        if not isinstance(content, str):
            content = json.dumps(content)
        total += MESSAGE_OVERHEAD_TOKENS + estimate_tokens(content)
    return total


class KeyMasker:
    """Masks a key in text that arrives in pieces, where the key may be cut between two of them.

    :meth:`feed` returns what is safe to pass on: everything but a tail that could still grow
    into the key; :meth:`flush` returns that tail once nothing more comes.
    """

    def __init__(self, key: str):
        self._key = key
        self._pending = ""

    def mask(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key else text

    def feed(self, piece: str) -> str:
        if not self._key:
            return piece
        text = self.mask(self._pending + piece)
        held = self._open_prefix(text)
        self._pending = text[len(text) - held :] if held else ""
        return text[: len(text) - held]

    def flush(self) -> str:
        rest, self._pending = self._pending, ""
        return rest

    def _open_prefix(self, text: str) -> int:
        """The length of the longest end of ``text`` that begins the key (shorter than the key)."""
        for size in range(min(len(self._key) - 1, len(text)), 0, -1):
            if self._key.startswith(text[-size:]):
                return size
        return 0


class LLMClient:
    """One provider endpoint (``base_url`` like ``https://api.openai.com/v1``) and its key."""

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str = "",
        timeout_s: float | None = None,
        on_usage: Callable[..., None] | None = None,
    ):
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self.timeout_s = timeout_s
        #: Told of each answer's token usage: ``on_usage(base_url=, model=, usage=)`` (metrics, say).
        self.on_usage = on_usage

    def __repr__(self) -> str:
        return f"LLMClient(base_url={self.base_url!r})"

    @classmethod
    def for_provider(
        cls, provider, *, timeout_s: float | None = None, on_usage: Callable[..., None] | None = None
    ) -> "LLMClient":
        """A client for a provider (anything with ``base_url`` and ``api_key``: an ``LLMProvider`` row)."""
        return cls(base_url=provider.base_url, api_key=provider.api_key, timeout_s=timeout_s, on_usage=on_usage)

    def _headers(self) -> dict:
        headers = {"Accept": "text/event-stream, application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        return headers

    def _mask(self, text: str) -> str:
        return KeyMasker(self._api_key).mask(text)

    def _mask_tool_calls(self, calls: list[dict]) -> list[dict]:
        """Tool calls with the key masked in their names and arguments (they go to tools and events)."""
        return [_mask_strings(call, self._mask) for call in calls] if self._api_key else calls

    async def chat(
        self,
        *,
        model: str,
        messages: list[dict],
        temperature: float | None = None,
        max_tokens: int | None = None,
        tools: list[dict] | None = None,
        stream: bool = True,
        on_delta: DeltaCallback | None = None,
        extra: dict | None = None,
    ) -> ChatResult:
        """Ask for one completion; ``on_delta`` receives each piece of text as it streams in."""
        body: dict = {"model": model, "messages": messages, **(extra or {})}
        if temperature is not None:
            body["temperature"] = temperature
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        if tools:
            body["tools"] = tools
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        policy = outbound_policy()
        async with guarded_async_client(timeout_s=self.timeout_s, headers=self._headers(), policy=policy) as client:
            with outbound_errors():
                async with client.stream("POST", f"{self.base_url}/chat/completions", json=body) as response:
                    if response.status_code >= 400:
                        raise await self._error(response, max_bytes=policy.max_bytes)
                    if "text/event-stream" in response.headers.get("content-type", ""):
                        result = await self._read_stream(response, on_delta, max_bytes=policy.max_bytes)
                    else:
                        result = await self._read_whole(response, on_delta, max_bytes=policy.max_bytes)
        result.model = result.model or model
        if not result.usage:
            prompt = estimate_message_tokens(messages)
            completion = estimate_tokens(result.text)
            result.usage = {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
                "estimated": True,
            }
        if self.on_usage is not None:
            self.on_usage(base_url=self.base_url, model=result.model, usage=result.usage)
        return result

    async def list_models(self) -> list[str]:
        """The model ids the endpoint offers (``GET /models``): a cheap check that URL and key work."""
        policy = outbound_policy()
        async with guarded_async_client(timeout_s=self.timeout_s, headers=self._headers(), policy=policy) as client:
            with outbound_errors():
                async with client.stream("GET", f"{self.base_url}/models") as response:
                    if response.status_code >= 400:
                        raise await self._error(response, max_bytes=policy.max_bytes)
                    payload = self._json(await read_limited(response, max_bytes=policy.max_bytes))
        return [entry["id"] for entry in payload.get("data", []) if isinstance(entry, dict) and "id" in entry]

    async def _error(self, response: httpx.Response, *, max_bytes: int) -> Exception:
        raw = await read_limited(response, max_bytes=min(max_bytes, ERROR_BODY_MAX_BYTES))
        detail = raw.decode("utf-8", "replace")
        try:
            error = json.loads(detail).get("error")
            detail = error.get("message", detail) if isinstance(error, dict) else str(error or detail)
        except (ValueError, AttributeError):
            pass
        status = response.status_code
        message = self._mask(f"The model provider answered {status}: {detail[:500]}")
        if status in RETRYABLE_STATUSES or status >= 500:
            headers = response.headers
            retry_after = parse_retry_after(headers.get("retry-after"))
            if retry_after is None and headers.get("retry-after-ms"):
                retry_after = (parse_retry_after(headers["retry-after-ms"]) or 0) / 1000
            return LLMUnavailable(message, status=status, retry_after=retry_after)
        return LLMRequestError(message, status=status)

    def _json(self, raw: bytes) -> dict:
        try:
            payload = json.loads(raw)
        except ValueError as exc:
            raise LLMRequestError("The model provider answered with something that is not JSON.") from exc
        if not isinstance(payload, dict):
            raise LLMRequestError("The model provider answered with JSON that is not an object.")
        return payload

    async def _read_whole(self, response, on_delta: DeltaCallback | None, *, max_bytes: int) -> ChatResult:
        payload = self._json(await read_limited(response, max_bytes=max_bytes))
        choices = payload.get("choices") or [{}]
        message = choices[0].get("message") or {}
        text = self._mask(message.get("content") or "")
        if text and on_delta is not None:
            await on_delta(text)
        return ChatResult(
            text=text,
            usage=payload.get("usage") or {},
            finish_reason=choices[0].get("finish_reason"),
            tool_calls=self._mask_tool_calls(message.get("tool_calls") or []),
            model=payload.get("model", ""),
        )

    async def _read_stream(self, response, on_delta: DeltaCallback | None, *, max_bytes: int) -> ChatResult:
        parts: list[str] = []
        calls: dict[int, dict] = {}
        result = ChatResult(text="", usage={})
        masker = KeyMasker(self._api_key)
        async for line in iter_lines_limited(response, max_bytes=max_bytes):
            if not line.startswith("data:"):
                continue  # blank separators, ": keep-alive" comments, "event:" names
            data = line[5:].strip()
            if data == "[DONE]":
                break
            chunk = self._json(data.encode())
            if chunk.get("error"):
                error = chunk["error"]
                detail = error.get("message", "") if isinstance(error, dict) else str(error)
                raise LLMUnavailable(self._mask(f"The model provider failed mid-answer: {detail[:500]}"))
            result.model = chunk.get("model") or result.model
            result.usage = chunk.get("usage") or result.usage
            for choice in chunk.get("choices") or []:
                if choice.get("index", 0) != 0:
                    continue
                delta = choice.get("delta") or {}
                if delta.get("content"):
                    await self._pass_on(masker.feed(delta["content"]), parts, on_delta)
                for piece in delta.get("tool_calls") or []:
                    _merge_tool_call(calls.setdefault(piece.get("index", 0), {}), piece)
                result.finish_reason = choice.get("finish_reason") or result.finish_reason
        await self._pass_on(masker.flush(), parts, on_delta)
        result.text = "".join(parts)
        result.tool_calls = self._mask_tool_calls([calls[index] for index in sorted(calls)])
        return result

    @staticmethod
    async def _pass_on(text: str, parts: list[str], on_delta: DeltaCallback | None) -> None:
        if text:
            parts.append(text)
            if on_delta is not None:
                await on_delta(text)


def _mask_strings(value, mask: Callable[[str], str]):
    """``value`` (parsed JSON) with ``mask`` applied to every string in it."""
    if isinstance(value, str):
        return mask(value)
    if isinstance(value, dict):
        return {key: _mask_strings(item, mask) for key, item in value.items()}
    if isinstance(value, list):
        return [_mask_strings(item, mask) for item in value]
    return value


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
