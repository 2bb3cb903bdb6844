"""The one interface every provider kind implements: a mapping between Weft's chat and a wire protocol.

An adapter does no I/O. It turns a chat request (OpenAI-shaped ``messages`` and ``tools``, which
is what nodes, the agent loop and chat memory speak) into the provider's request, and the
provider's answer (whole, or streamed event by event) back into a :class:`ChatResult`. The
:class:`~.client.LLMClient` sends and reads, so the outbound guard, the size caps, key masking
and error mapping are the same for every kind.
"""

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from .common import ChatResult


@dataclass(frozen=True)
class WireRequest:
    """``POST {base_url}{path}`` with ``body`` as JSON (and ``params`` as the query)."""

    path: str
    body: dict
    params: dict = field(default_factory=dict)


class StreamReader(ABC):
    """Folds one streamed answer's events (each ``data:`` line's JSON) into a result."""

    def __init__(self):
        self.result = ChatResult(text="", usage={})

    @abstractmethod
    def feed(self, event: dict) -> str:
        """Take one event; return the text it adds (may be empty). Raise ``StreamFailed`` for an error event."""


class Adapter(ABC):
    #: The provider ``kind`` this adapter serves.
    kind: str
    #: ``GET {base_url}{models_path}`` lists the models (the provider test uses it too).
    models_path = "/models"

    @abstractmethod
    def headers(self, api_key: str) -> dict:
        """The headers of every request, the key among them (in a header, never in the URL)."""

    @abstractmethod
    def chat_request(
        self,
        *,
        model: str,
        messages: list[dict],
        temperature: float | None,
        max_tokens: int | None,
        tools: list[dict] | None,
        stream: bool,
        extra: dict,
    ) -> WireRequest:
        """The provider's request for one completion."""

    @abstractmethod
    def read_answer(self, payload: dict) -> ChatResult:
        """A whole (not streamed) answer."""

    @abstractmethod
    def stream_reader(self) -> StreamReader:
        """A fresh reader for one streamed answer."""

    @abstractmethod
    def model_ids(self, payload: dict) -> list[str]:
        """The model ids in the answer to ``GET {models_path}``."""
