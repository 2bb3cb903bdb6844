"""The chat client: one provider endpoint of some ``kind``, spoken to through the outbound guard.

It streams by default (server-sent events), handing each text delta to a callback and returning
the whole answer with its usage; a server that answers a streaming request with plain JSON, or
``stream=False``, is read in one piece. The kind's :class:`~.adapter.Adapter` maps the request and
the answer; everything else is here, the same for every kind: the guard, the size caps
(``OUTBOUND_MAX_BYTES``), error mapping (429, 408, 409 and 5xx raise :class:`LLMUnavailable`,
retryable with the server's ``Retry-After``; other 4xx raise :class:`LLMRequestError`) and the key.
The API key goes in one header and nowhere else: not in ``repr``, logs, error messages or
answers. A server that echoes it gets it masked as ``***`` in errors, in the answer's text and
tool calls, and in every streamed delta (:class:`KeyMasker` holds back a delta's tail while it
could be the start of the key).
"""

import json
from collections.abc import Awaitable, Callable

import httpx

from ..net import (
    guarded_async_client,
    iter_lines_limited,
    outbound_errors,
    outbound_policy,
    parse_retry_after,
    read_limited,
)
from .adapter import Adapter
from .anthropic import AnthropicAdapter
from .common import (
    ChatResult,
    KeyMasker,
    LLMRequestError,
    LLMUnavailable,
    StreamFailed,
    estimate_message_tokens,
    estimate_tokens,
    mask_strings,
)
from .gemini import GeminiAdapter
from .openai import OpenAIAdapter

RETRYABLE_STATUSES = frozenset({408, 409, 429})
ERROR_BODY_MAX_BYTES = 64 * 1024

ADAPTERS: dict[str, Adapter] = {
    adapter.kind: adapter for adapter in (OpenAIAdapter(), AnthropicAdapter(), GeminiAdapter())
}
#: The provider kinds the client speaks; ``openai`` (any OpenAI-compatible server) is the default.
LLM_KINDS = tuple(ADAPTERS)

DeltaCallback = Callable[[str], Awaitable[None]]


class LLMClient:
    """One provider endpoint (``base_url`` like ``https://api.openai.com/v1``), its key and its ``kind``."""

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str = "",
        kind: str = "openai",
        timeout_s: float | None = None,
        on_usage: Callable[..., None] | None = None,
    ):
        if kind not in ADAPTERS:
            raise LLMRequestError(f"Unknown provider kind {kind!r}; use one of: {', '.join(LLM_KINDS)}.")
        self.base_url = base_url.rstrip("/")
        self.kind = kind
        self._adapter = ADAPTERS[kind]
        self._api_key = api_key
        self.timeout_s = timeout_s
        #: Told of each answer's token usage: ``on_usage(base_url=, model=, usage=)`` (metrics, say).
        self.on_usage = on_usage

    def __repr__(self) -> str:
        return f"LLMClient(kind={self.kind!r}, base_url={self.base_url!r})"

    @classmethod
    def for_provider(
        cls, provider, *, timeout_s: float | None = None, on_usage: Callable[..., None] | None = None
    ) -> "LLMClient":
        """A client for a provider (anything with ``base_url``, ``api_key`` and ``kind``: an ``LLMProvider`` row)."""
        return cls(
            base_url=provider.base_url,
            api_key=provider.api_key,
            kind=getattr(provider, "kind", "openai"),
            timeout_s=timeout_s,
            on_usage=on_usage,
        )

    def models_request(self) -> tuple[str, dict]:
        """The URL and headers that list the endpoint's models, for a caller that sends it itself (a sync test)."""
        return f"{self.base_url}{self._adapter.models_path}", self._adapter.headers(self._api_key)

    def _headers(self) -> dict:
        return {"Accept": "text/event-stream, application/json", **self._adapter.headers(self._api_key)}

    def _mask(self, text: str) -> str:
        return KeyMasker(self._api_key).mask(text)

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
        """Ask for one completion; ``on_delta`` receives each piece of text as it streams in.

        ``messages`` and ``tools`` are in OpenAI's shape whatever the kind; ``extra`` is merged
        into the provider's own request body as it is.
        """
        request = self._adapter.chat_request(
            model=model,
            messages=messages,
            temperature=temperature,
            max_tokens=max_tokens,
            tools=tools,
            stream=stream,
            extra=extra or {},
        )
        policy = outbound_policy()
        async with guarded_async_client(timeout_s=self.timeout_s, headers=self._headers(), policy=policy) as client:
            with outbound_errors():
                url = f"{self.base_url}{request.path}"
                async with client.stream("POST", url, json=request.body, params=request.params) as response:
                    if response.status_code >= 400:
                        raise await self._error(response, max_bytes=policy.max_bytes)
                    try:
                        if "text/event-stream" in response.headers.get("content-type", ""):
                            result = await self._read_stream(response, on_delta, max_bytes=policy.max_bytes)
                        else:
                            result = await self._read_whole(response, on_delta, max_bytes=policy.max_bytes)
                    except StreamFailed as exc:
                        # Not chained: the provider's own words, unmasked, would ride along in a traceback.
                        detail = self._mask(exc.detail)[:500]
                        raise LLMUnavailable(f"The model provider failed mid-answer: {detail}") from None
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
                async with client.stream("GET", f"{self.base_url}{self._adapter.models_path}") as response:
                    if response.status_code >= 400:
                        raise await self._error(response, max_bytes=policy.max_bytes)
                    payload = self._json(await read_limited(response, max_bytes=policy.max_bytes))
        return self._adapter.model_ids(payload)

    async def _error(self, response: httpx.Response, *, max_bytes: int) -> Exception:
        raw = await read_limited(response, max_bytes=min(max_bytes, ERROR_BODY_MAX_BYTES))
        detail = raw.decode("utf-8", "replace")
        try:
            # OpenAI, Anthropic and Gemini all answer {"error": {"message": ...}} (and more beside).
            error = json.loads(detail).get("error")
            detail = error.get("message", detail) if isinstance(error, dict) else str(error or detail)
        except (ValueError, AttributeError):
            pass
        status = response.status_code
        # Masked before it is cut: a key cut in two would not be recognised.
        message = f"The model provider answered {status}: {self._mask(detail)[:500]}"
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

    def _masked(self, result: ChatResult) -> ChatResult:
        """``result`` with the key masked in its tool calls (they go to tools and events)."""
        if self._api_key:
            result.tool_calls = [mask_strings(call, self._mask) for call in result.tool_calls]
        return result

    async def _read_whole(self, response, on_delta: DeltaCallback | None, *, max_bytes: int) -> ChatResult:
        result = self._adapter.read_answer(self._json(await read_limited(response, max_bytes=max_bytes)))
        result.text = self._mask(result.text)
        if result.text and on_delta is not None:
            await on_delta(result.text)
        return self._masked(result)

    async def _read_stream(self, response, on_delta: DeltaCallback | None, *, max_bytes: int) -> ChatResult:
        parts: list[str] = []
        reader = self._adapter.stream_reader()
        masker = KeyMasker(self._api_key)
        async for line in iter_lines_limited(response, max_bytes=max_bytes):
            if not line.startswith("data:"):
                continue  # blank separators, ": keep-alive" comments, "event:" names (the data says it too)
            data = line[5:].strip()
            if data == "[DONE]":
                break
            text = reader.feed(self._json(data.encode()))
            await self._pass_on(masker.feed(text), parts, on_delta)
        await self._pass_on(masker.flush(), parts, on_delta)
        result = reader.result
        result.text = "".join(parts)
        return self._masked(result)

    @staticmethod
    async def _pass_on(text: str, parts: list[str], on_delta: DeltaCallback | None) -> None:
        if text:
            parts.append(text)
            if on_delta is not None:
                await on_delta(text)
