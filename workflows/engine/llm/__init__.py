"""Chat with a model of any supported provider kind, through one client (:class:`LLMClient`).

``openai`` (the OpenAI-compatible ``/chat/completions`` API), ``anthropic`` (the Messages API)
and ``gemini`` (the Gemini API) each have an adapter module that maps Weft's OpenAI-shaped chat
to the wire and back; the client sends it over the outbound guard. See docs/models.md.
"""

from .client import LLM_KINDS, LLMClient
from .common import (
    ChatResult,
    KeyMasker,
    LLMRequestError,
    LLMUnavailable,
    estimate_message_tokens,
    estimate_tokens,
)

__all__ = [
    "LLM_KINDS",
    "ChatResult",
    "KeyMasker",
    "LLMClient",
    "LLMRequestError",
    "LLMUnavailable",
    "estimate_message_tokens",
    "estimate_tokens",
]
