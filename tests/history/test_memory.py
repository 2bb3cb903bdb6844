"""Chat memory services: which earlier rounds an llm node sees, and what is stored."""

import asyncio

import pytest

from history.memory import MemoryScope, RunConversation, memory_append, memory_load
from history.models import WorkflowNodeHistory
from tests.factories import AppFactory, RunFactory, WorkflowVersionFactory
from workflows.engine.llm import estimate_message_tokens
from workflows.execution.ports import run_ports

pytestmark = pytest.mark.django_db


@pytest.fixture
def scope():
    flow = WorkflowVersionFactory()
    return MemoryScope(
        flow_id=flow.pk, app_id=AppFactory(owner=flow.workflow.owner).pk, chat_id="chat-1", node_id="ask"
    )


def talk(scope: MemoryScope, count: int, *, start: int = 1) -> None:
    for number in range(start, start + count):
        memory_append(scope=scope, question=f"question {number}", answer=f"answer {number}")


def questions(messages: list[dict]) -> list[str]:
    return [message["content"] for message in messages if message["role"] == "user"]


def test_earlier_rounds_come_as_question_answer_pairs_newest_last(scope):
    talk(scope, 3)

    assert memory_load(scope=scope) == [
        {"role": "user", "content": "question 1"},
        {"role": "assistant", "content": "answer 1"},
        {"role": "user", "content": "question 2"},
        {"role": "assistant", "content": "answer 2"},
        {"role": "user", "content": "question 3"},
        {"role": "assistant", "content": "answer 3"},
    ]


def test_at_most_ten_rounds_by_default_the_newest(scope):
    talk(scope, 13)

    assert questions(memory_load(scope=scope)) == [f"question {n}" for n in range(4, 14)]
    assert questions(memory_load(scope=scope, rounds=2)) == ["question 12", "question 13"]
    assert WorkflowNodeHistory.objects.count() == 13


def test_the_oldest_rounds_are_cut_to_the_token_budget(scope):
    long = "word " * 200
    memory_append(scope=scope, question="old " + long, answer=long)
    talk(scope, 2, start=2)
    newest_two = memory_load(scope=scope)[2:]
    budget = estimate_message_tokens(newest_two)

    assert questions(memory_load(scope=scope, max_tokens=budget)) == ["question 2", "question 3"]
    assert questions(memory_load(scope=scope, max_tokens=budget - 1)) == ["question 3"]
    assert len(questions(memory_load(scope=scope, max_tokens=10_000))) == 3


def test_a_budget_smaller_than_the_newest_round_gives_no_memory(scope):
    talk(scope, 2)

    assert memory_load(scope=scope, max_tokens=1) == []


def test_long_questions_and_answers_are_truncated_when_stored(scope):
    stored = memory_append(scope=scope, question="q" * 50, answer="a" * 10, max_chars_per_message=20)

    stored.refresh_from_db()
    assert stored.raw_question == "q" * 19 + "…"
    assert len(stored.raw_question) == 20
    assert stored.raw_answer == "a" * 10


@pytest.mark.parametrize(
    "other",
    [
        {"chat_id": "chat-2"},
        {"uid": "someone-else"},
        {"node_id": "another-node"},
        {"app_id": None},
    ],
)
def test_rounds_of_another_chat_user_node_or_app_are_not_seen(scope, other):
    talk(scope, 2)
    elsewhere = MemoryScope(**{**scope.__dict__, **other})
    memory_append(scope=elsewhere, question="private", answer="secret")

    assert questions(memory_load(scope=scope)) == ["question 1", "question 2"]
    assert questions(memory_load(scope=elsewhere)) == ["private"]


def test_the_conversation_of_a_run_is_its_released_version_app_and_chat():
    flow = WorkflowVersionFactory()
    app = AppFactory(owner=flow.workflow.owner)
    run = RunFactory(workflow=flow.workflow, flow=flow, app=app, chat_id="c-9")

    assert run_ports(run).memory.scope("ask") == MemoryScope(
        flow_id=flow.pk, app_id=app.pk, chat_id="c-9", node_id="ask"
    )
    assert run_ports(RunFactory(flow=flow, chat_id="")).memory is None  # no conversation
    assert run_ports(RunFactory(chat_id="c-9")).memory is None  # a draft run: no released version


@pytest.mark.django_db(transaction=True)
def test_a_run_conversation_loads_and_appends_the_rounds_of_its_node():
    flow = WorkflowVersionFactory()
    conversation = RunConversation(flow_id=flow.pk, app_id=None, chat_id="c-1")

    async def talk_twice():
        await conversation.append(node_id="ask", question="first", answer="one", limits={})
        await conversation.append(node_id="ask", question="second", answer="two", limits={"max_chars_per_message": 4})
        return (
            await conversation.load(node_id="ask", limits={"rounds": 1}),
            await conversation.load(node_id="other", limits={}),
        )

    newest, other_node = asyncio.run(talk_twice())

    assert newest == [{"role": "user", "content": "sec…"}, {"role": "assistant", "content": "two"}]
    assert other_node == []
