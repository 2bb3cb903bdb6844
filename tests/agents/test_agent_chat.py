"""POST /api/v1/sessions/<id>/chat/: one turn of the agent loop, appended to the session's messages."""

import json

import pytest

from agents.models import Message, Tool
from agents.services import tool_approve
from tests.factories import AgentFactory, LLMProviderFactory, MessageFactory, SessionFactory, ToolFactory, UserFactory
from tests.fakes.openai_server import Answer

pytestmark = pytest.mark.django_db

CALCULATOR = {"type": "object", "required": ["expression"], "properties": {"expression": {"type": "string"}}}


def chat_url(session) -> str:
    return f"/api/v1/sessions/{session.id}/chat/"


@pytest.fixture
def session(user, fake_openai, allow_loopback):
    provider = LLMProviderFactory(owner=user, base_url=fake_openai.base_url, api_key=fake_openai.api_key)
    calculator = ToolFactory(owner=user, name="calculator", kind=Tool.Kind.BUILTIN, endpoint="", parameters=CALCULATOR)
    tool_approve(tool=calculator, reviewer=UserFactory(is_staff=True))
    agent = AgentFactory(owner=user, provider=provider, system_prompt="Be brief.", max_steps=3)
    agent.tools.set([calculator])
    return SessionFactory(owner=user, agent=agent)


def test_a_turn_appends_the_message_the_tool_exchange_and_the_answer_in_sequence(session, user_client, fake_openai):
    MessageFactory(session=session, role=Message.Role.USER, content="Hi", sequence_number=1)
    MessageFactory(session=session, role=Message.Role.ASSISTANT, content="Hello!", sequence_number=2)
    session.last_sequence_number = 2
    session.save(update_fields=["last_sequence_number"])
    fake_openai.script(
        Answer(tool_calls=[{"id": "c1", "name": "calculator", "arguments": '{"expression": "6 * 7"}'}]),
        Answer(text="It is 42."),
    )
    response = user_client.post(chat_url(session), {"content": "What is 6 times 7?"}, format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["text"] == "It is 42."
    assert [(m["sequence_number"], m["role"]) for m in body["messages"]] == [
        (3, "user"),
        (4, "assistant"),
        (5, "tool"),
        (6, "assistant"),
    ]
    assert json.loads(body["messages"][2]["content"]) == {"expression": "6 * 7", "value": 42}
    assert body["messages"][2]["metadata"] == {"tool_call_id": "c1", "tool": "calculator"}
    stored = list(Message.objects.filter(session=session).values_list("sequence_number", "role", "content"))
    assert [row[:2] for row in stored] == [
        (1, "user"),
        (2, "assistant"),
        (3, "user"),
        (4, "assistant"),
        (5, "tool"),
        (6, "assistant"),
    ]
    assert stored[-1][2] == "It is 42."
    # The model saw the earlier turn, then the new message.
    assert fake_openai.requests[0]["json"]["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "What is 6 times 7?"},
    ]


def test_the_next_turn_sees_the_answers_but_not_old_tool_exchanges(session, user_client, fake_openai):
    fake_openai.script(
        Answer(tool_calls=[{"id": "c1", "name": "calculator", "arguments": '{"expression": "1 + 1"}'}]),
        Answer(text="Two."),
        Answer(text="You asked about 1 + 1."),
    )
    assert user_client.post(chat_url(session), {"content": "1 + 1?"}, format="json").status_code == 201
    response = user_client.post(chat_url(session), {"content": "What did I ask?"}, format="json")
    assert response.status_code == 201
    assert [m["sequence_number"] for m in response.json()["messages"]] == [5, 6]
    assert fake_openai.requests[-1]["json"]["messages"][1:] == [
        {"role": "user", "content": "1 + 1?"},
        {"role": "assistant", "content": "Two."},
        {"role": "user", "content": "What did I ask?"},
    ]


def test_a_session_without_an_agent_is_a_400_naming_agent(user, user_client, fake_openai):
    session = SessionFactory(owner=user)
    response = user_client.post(chat_url(session), {"content": "Hi"}, format="json")
    assert response.status_code == 400
    assert response.json()["field"] == "agent"
    assert not Message.objects.filter(session=session).exists()
    assert fake_openai.requests == []


def test_only_the_owner_can_chat(session, other_client, fake_openai):
    response = other_client.post(chat_url(session), {"content": "Hi"}, format="json")
    assert response.status_code == 404
    assert fake_openai.requests == []


def test_an_empty_or_unknown_body_is_a_400(session, user_client):
    assert user_client.post(chat_url(session), {"content": ""}, format="json").json()["content"]
    response = user_client.post(chat_url(session), {"content": "Hi", "role": "system"}, format="json")
    assert response.status_code == 400


def test_the_step_limit_is_a_502_and_appends_nothing(session, user_client, fake_openai):
    looping = {"id": "c", "name": "calculator", "arguments": '{"expression": "1"}'}
    fake_openai.script(*[Answer(tool_calls=[looping]) for _ in range(3)])
    response = user_client.post(chat_url(session), {"content": "Loop"}, format="json")
    assert response.status_code == 502
    assert response.json()["code"] == "step_limit"
    assert not Message.objects.filter(session=session).exists()


def test_the_providers_rate_limit_is_a_429_with_retry_after(session, user_client, fake_openai, monkeypatch):
    monkeypatch.setattr("config.rate_limits._now", lambda: 1_800_000_030.0)  # 30 s into a minute
    provider = session.agent.provider
    provider.metadata = {"rate_limit": {"requests_per_minute": 1}}
    provider.save(update_fields=["metadata"])
    fake_openai.script(Answer(text="First."))
    assert user_client.post(chat_url(session), {"content": "One"}, format="json").status_code == 201
    response = user_client.post(chat_url(session), {"content": "Two"}, format="json")
    assert response.status_code == 429
    assert response["Retry-After"] == "30"
    assert len(fake_openai.requests) == 1
    assert Message.objects.filter(session=session).count() == 2
