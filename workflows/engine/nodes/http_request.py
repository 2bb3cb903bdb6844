"""http_request: call a URL through the outbound guard.

    {"id": "weather", "type": "http_request", "config": {
        "method": "GET", "url": "https://api.example.com/weather",
        "query": {"city": "{{ start.city }}"}, "headers": {"Accept": "application/json"},
        "timeout_s": 10}}

``url``, header values, ``query``, ``body`` (text) and ``json`` (any JSON, sent as the body)
are rendered. The output is ``{status, headers, body, json}``: ``body`` is the text,
``json`` the parsed body when it is JSON (else null), ``headers`` lower-cased. The whole exchange
is bounded by ``timeout_s`` and the body by ``max_bytes`` (both capped by the operator's
``OUTBOUND_TIMEOUT_S`` / ``OUTBOUND_MAX_BYTES``). With ``raise_for_status`` (the default) a
429, 408 or 5xx answer is a retryable failure that honours ``Retry-After``, and any other
4xx fails the node; without it every answer is an output for a condition to look at.
"""

import asyncio
import json

import httpx

from ..errors import NonRetryableError, RetryableError
from ..net import check_url, guarded_async_client, outbound_errors, outbound_policy, parse_retry_after, read_limited
from .base import NodeContext, NodeType, register

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
RETRYABLE_STATUSES = frozenset({408, 429})
SHOWN_BODY_CHARS = 300


class HTTPStatusRetryable(RetryableError):
    """The server answered 408, 429 or 5xx."""


class HTTPStatusFailed(NonRetryableError):
    """The server answered another 4xx."""


@register
class HTTPRequest(NodeType):
    """Calls a URL through the outbound guard, which refuses private and local addresses.

    ``url``, header values, ``query``, ``body`` (text) and ``json`` (any JSON, sent as the body)
    are rendered. The output is ``{status, headers, body, json}``: ``body`` is the text, ``json``
    the parsed body when it is JSON (else null), ``headers`` lower-cased. The whole exchange is
    bounded by ``timeout_s`` and the body by ``max_bytes``, both capped by the operator's limits.

    On failure: with ``raise_for_status`` (the default), a 429, 408 or 5xx answer is a retryable
    failure that honours ``Retry-After``, and any other 4xx fails the node without a retry; without
    it every answer is an output, for a condition to look at. A refused address, a timeout and a
    lost connection fail the node; a timeout and a lost connection are retried.
    """

    type = "http_request"
    description = "Call an HTTP(S) URL (SSRF-guarded, with a timeout and a size cap)."
    config_schema = {
        "type": "object",
        "required": ["url"],
        "additionalProperties": False,
        "properties": {
            "method": {"enum": list(METHODS)},
            "url": {"type": "string", "minLength": 1, "maxLength": 4096},
            "headers": {"type": "object", "additionalProperties": {"type": "string"}},
            "query": {"type": "object"},
            "body": {"type": "string"},
            "json": {},
            "timeout_s": {"type": "number", "exclusiveMinimum": 0},
            "max_bytes": {"type": "integer", "minimum": 1},
            "follow_redirects": {"type": "boolean"},
            "raise_for_status": {"type": "boolean"},
        },
    }
    outputs = frozenset({"status", "headers", "body", "json"})
    example_config = {
        "method": "GET",
        "url": "https://api.example.com/weather",
        "query": {"city": "{{ start.city }}"},
        "headers": {"Accept": "application/json"},
        "timeout_s": 10,
    }

    def check(self, config: dict):
        if "body" in config and "json" in config:
            yield "json", "Give body or json, not both."
        url = config["url"]
        if "{{" not in url and "{%" not in url:
            scheme = httpx.URL(url).scheme if _parses(url) else ""
            if scheme not in ("http", "https"):
                yield "url", "Must be an http:// or https:// URL."

    async def execute(self, ctx: NodeContext, config: dict) -> dict:
        policy = outbound_policy()
        timeout_s = min(config.get("timeout_s", policy.timeout_s), policy.timeout_s)
        max_bytes = min(config.get("max_bytes", policy.max_bytes), policy.max_bytes)
        url = check_url((await ctx.render(config["url"])).strip(), policy=policy)
        if config.get("query"):
            url = url.copy_merge_params(_query(await ctx.render_value(config["query"])))
        request: dict = {
            "headers": {name: await ctx.render(value) for name, value in config.get("headers", {}).items()}
        }
        if "json" in config:
            request["json"] = await ctx.render_value(config["json"])
        elif "body" in config:
            request["content"] = (await ctx.render(config["body"])).encode()
        follow = config.get("follow_redirects", True)
        async with guarded_async_client(timeout_s=timeout_s, follow_redirects=follow, policy=policy) as client:
            with outbound_errors():
                # The whole exchange, not only each read: a server trickling bytes cannot hold the node.
                async with asyncio.timeout(timeout_s):
                    async with client.stream(config.get("method", "GET"), url, **request) as response:
                        raw = await read_limited(response, max_bytes=max_bytes)
        output = _output(response, raw)
        if config.get("raise_for_status", True):
            _raise_for_status(response, output["body"])
        return output


def _parses(url: str) -> bool:
    try:
        httpx.URL(url)
    except httpx.InvalidURL:
        return False
    return True


def _query(value) -> dict:
    if not isinstance(value, dict):
        raise NonRetryableError(f"query must be an object, got {type(value).__name__}.")
    return {
        name: item if isinstance(item, list) else ("" if item is None else str(item)) for name, item in value.items()
    }


def _output(response: httpx.Response, raw: bytes) -> dict:
    body = raw.decode(response.encoding or "utf-8", "replace")
    parsed = None
    if "json" in response.headers.get("content-type", "") or body.lstrip()[:1] in ("{", "["):
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None
    headers: dict[str, str] = {}
    for name, value in response.headers.multi_items():
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return {"status": response.status_code, "headers": headers, "body": body, "json": parsed}


def _raise_for_status(response: httpx.Response, body: str) -> None:
    status = response.status_code
    if status < 400:
        return
    message = f"{response.request.method} {response.url.copy_with(query=None)} answered {status}: "
    message += body[:SHOWN_BODY_CHARS]
    if status in RETRYABLE_STATUSES or status >= 500:
        raise HTTPStatusRetryable(message, retry_after=parse_retry_after(response.headers.get("retry-after")))
    raise HTTPStatusFailed(message)
