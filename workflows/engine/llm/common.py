"""What every provider kind shares: the errors, the answer, token estimates and key masking."""

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field

from ..errors import NonRetryableError, RetryableError

#: Tokens a chat message costs beyond its text (role and separators), as OpenAI counts them roughly.
MESSAGE_OVERHEAD_TOKENS = 4


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


class StreamFailed(Exception):
    """A provider reported an error in the middle of a streamed answer (``detail`` is its message)."""

    def __init__(self, detail: str):
        super().__init__(detail)
        self.detail = detail


@dataclass
class ChatResult:
    """One answer, in the same shape whatever the provider's kind."""

    text: str
    #: ``prompt_tokens``, ``completion_tokens``, ``total_tokens`` (``estimated: True`` when the server sent none).
    usage: dict
    #: ``stop``, ``length``, ``tool_calls`` or ``content_filter`` (OpenAI's words, for every kind).
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


def usage_of(prompt, completion, total=None) -> dict:
    """OpenAI-style usage from a provider's counts; empty when it sent none (the client estimates then)."""
    if not isinstance(prompt, int) and not isinstance(completion, int):
        return {}
    prompt = prompt if isinstance(prompt, int) else 0
    completion = completion if isinstance(completion, int) else 0
    total = total if isinstance(total, int) else prompt + completion
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": total}


def function_call(*, call_id: str, name: str, arguments: str) -> dict:
    """A tool call as :class:`ChatResult` carries it (and as the agent loop sends it back)."""
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def arguments_object(raw: str) -> dict:
    """A tool call's JSON arguments as the object Anthropic and Gemini want back; ``{}`` if they are not one."""
    try:
        value = json.loads(raw or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def text_of(content) -> str:
    """A message's content as text (OpenAI allows a list of parts; only the text parts are kept)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return "" if content is None else str(content)


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


def mask_strings(value, mask: Callable[[str], str]):
    """``value`` (parsed JSON) with ``mask`` applied to every string in it."""
    if isinstance(value, str):
        return mask(value)
    if isinstance(value, dict):
        return {key: mask_strings(item, mask) for key, item in value.items()}
    if isinstance(value, list):
        return [mask_strings(item, mask) for item in value]
    return value
