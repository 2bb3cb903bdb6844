"""Chat memory of llm nodes (seed 000's ``history_service``), kept in ``workflow_node_history``.

A round is one question and its answer, per (flow, app, chat_id, node, uid): the published
version that ran, the client app that called it, the conversation, the llm node and the end
user. An llm node with memory loads the earlier rounds before it asks the model and appends its
own round after the model answered (never when it failed). What is loaded is the newest
``rounds`` rounds, then the oldest of those dropped until the rest fit a token budget (tokens
estimated locally). What is stored is cut at ``max_chars_per_message`` characters per side.
"""

from dataclasses import dataclass

from django.db.models import QuerySet

from config.db import on_db_thread
from workflows.engine import estimate_message_tokens

from .models import WorkflowNodeHistory

DEFAULT_ROUNDS = 10
MAX_ROUNDS = 100
DEFAULT_MAX_TOKENS = 2000
DEFAULT_MAX_CHARS_PER_MESSAGE = 4000
TRUNCATED_MARK = "…"


@dataclass(frozen=True)
class MemoryScope:
    """Whose conversation a round belongs to."""

    flow_id: int
    app_id: int | None
    chat_id: str
    node_id: str
    uid: str = ""

    def rounds(self) -> QuerySet[WorkflowNodeHistory]:
        return WorkflowNodeHistory.objects.filter(
            flow_id=self.flow_id, app_id=self.app_id, chat_id=self.chat_id, node_id=self.node_id, uid=self.uid
        )


@dataclass(frozen=True)
class RunConversation:
    """The conversation a run continues, as the engine's ``ConversationMemory`` port (one per run).

    Built by the execution layer from the run (``workflows.execution.ports``); each call runs on
    a database thread of its own.
    """

    flow_id: int
    app_id: int | None
    chat_id: str
    uid: str = ""

    def scope(self, node_id: str) -> MemoryScope:
        return MemoryScope(
            flow_id=self.flow_id, app_id=self.app_id, chat_id=self.chat_id, node_id=node_id, uid=self.uid
        )

    async def load(self, *, node_id: str, limits: dict) -> list[dict]:
        return await on_db_thread(memory_load)(scope=self.scope(node_id), **limits)

    async def append(self, *, node_id: str, question: str, answer: str, limits: dict) -> None:
        await on_db_thread(memory_append)(scope=self.scope(node_id), question=question, answer=answer, **limits)


def memory_load(
    *, scope: MemoryScope, rounds: int = DEFAULT_ROUNDS, max_tokens: int = DEFAULT_MAX_TOKENS
) -> list[dict]:
    """The earlier rounds as chat messages (user, assistant, user, ...), newest last.

    At most ``rounds`` rounds; from the oldest, rounds are left out until the rest cost at most
    ``max_tokens`` (so a round bigger than the whole budget leaves no memory at all).
    """
    newest_first = scope.rounds().order_by("-create_time", "-id").values_list("raw_question", "raw_answer")
    kept: list[list[dict]] = []
    spent = 0
    for question, answer in newest_first[: min(rounds, MAX_ROUNDS)]:
        pair = [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        cost = estimate_message_tokens(pair)
        if spent + cost > max_tokens:
            break
        kept.append(pair)
        spent += cost
    return [message for pair in reversed(kept) for message in pair]


def memory_append(
    *,
    scope: MemoryScope,
    question: str,
    answer: str,
    max_chars_per_message: int = DEFAULT_MAX_CHARS_PER_MESSAGE,
) -> WorkflowNodeHistory:
    """Store one round, each side cut at ``max_chars_per_message`` characters (ending with "…")."""
    return WorkflowNodeHistory.objects.create(
        flow_id=scope.flow_id,
        app_id=scope.app_id,
        chat_id=scope.chat_id,
        node_id=scope.node_id,
        uid=scope.uid,
        raw_question=_truncated(question, max_chars_per_message),
        raw_answer=_truncated(answer, max_chars_per_message),
    )


def _truncated(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[: max(limit - len(TRUNCATED_MARK), 0)] + TRUNCATED_MARK
