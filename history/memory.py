"""Chat memory of llm nodes (seed 000's ``history_service``), kept in ``workflow_node_history``.

A round is one question and its answer, per (flow, app, chat_id, node, uid): the published
version that ran, the client app that called it, the conversation, the llm node and the end
user. An llm node with memory loads the earlier rounds before it asks the model and appends its
own round after the model answered (never when it failed). What is loaded is the newest
``rounds`` rounds, then the oldest of those dropped until the rest fit a token budget (tokens
estimated locally). What is stored is cut at ``max_chars_per_message`` characters per side.
"""

import uuid
from dataclasses import dataclass

from django.db.models import QuerySet

from licensing.models import EnabledStatus, License
from workflows.engine.llm_client import estimate_message_tokens
from workflows.models import Run

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


def memory_scope_for_run(*, run_id, node_id: str) -> MemoryScope | None:
    """The scope of ``node_id`` in this run; None when the run has no chat_id or runs no released version."""
    row = Run.objects.filter(pk=run_id).values_list("flow_id", "app_id", "chat_id", "uid").first()
    if row is None:
        return None
    flow_id, app_id, chat_id, uid = row
    if flow_id is None or not chat_id:
        return None
    return MemoryScope(flow_id=flow_id, app_id=app_id, chat_id=chat_id, node_id=node_id, uid=uid)


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


def memory_rounds_for_app(
    *, app, chat_id: str, workflow: uuid.UUID | None = None, node: str | None = None
) -> QuerySet[WorkflowNodeHistory]:
    """The app's rounds of ``chat_id``, oldest first, of workflows it holds an enabled license for."""
    licensed = License.objects.filter(app=app, status=EnabledStatus.ENABLED).values("group_id")
    rounds = WorkflowNodeHistory.objects.filter(app=app, chat_id=chat_id, flow__workflow__in=licensed)
    if workflow is not None:
        rounds = rounds.filter(flow__workflow=workflow)
    if node is not None:
        rounds = rounds.filter(node_id=node)
    return rounds.select_related("flow").order_by("create_time", "id")
