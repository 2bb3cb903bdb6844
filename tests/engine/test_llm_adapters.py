"""Every provider kind (openai, anthropic, gemini) against a loopback fake of its own wire protocol.

The same scripted answers go to each fake; the client must give the same results back (text,
deltas, OpenAI-shaped tool calls, usage) and the same errors, with the key masked, the guard and
the size cap in place. Then the llm node, the agent node and a chat turn run with an Anthropic
and a Gemini provider (tests/engine/test_llm_node.py and tests/agents/ run them with OpenAI's).
"""

import asyncio
import json

import pytest

from agents.models import LLMProvider, Tool
from agents.services import tool_approve
from tests.engine.conftest import chain, end, node, start
from tests.factories import (
    AgentFactory,
    LLMProviderFactory,
    SessionFactory,
    ToolFactory,
    UserFactory,
    WorkflowFactory,
    owner_ports,
)
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.gemini_server import FakeGemini
from tests.fakes.openai_server import Answer, FakeOpenAI
from workflows.engine.errors import RetryableError
from workflows.engine.executor import RunExecutor
from workflows.engine.journal import MemoryJournal
from workflows.engine.llm import LLM_KINDS, LLMClient, LLMRequestError, LLMUnavailable, estimate_tokens
from workflows.engine.llm.anthropic import AnthropicAdapter
from workflows.engine.llm.common import StreamFailed
from workflows.engine.llm.gemini import GeminiAdapter
from workflows.engine.llm.openai import OpenAIAdapter
from workflows.engine.net import OutboundBlocked, ResponseTooLarge

FAKES = {"openai": FakeOpenAI, "anthropic": FakeAnthropic, "gemini": FakeGemini}
KEY = "sk-fake-secret-kind-0123456789"
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello"}]
LOOKUP = {"id": "call_1", "name": "lookup", "arguments": '{"city": "Oslo"}'}
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "lookup",
            "description": "Find a city.",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }
]


@pytest.fixture(params=LLM_KINDS)
def fake(request):
    server = FAKES[request.param](api_key=KEY).start()
    yield server
    server.stop()


@pytest.fixture(params=["anthropic", "gemini"])
def new_fake(request):
    """The kinds that came after ``openai`` (whose nodes and chat have their own tests): runs cost more."""
    server = FAKES[request.param](api_key=KEY).start()
    yield server
    server.stop()


@pytest.fixture
def client(fake, allow_loopback):
    return LLMClient(base_url=fake.base_url, api_key=KEY, kind=fake.kind, timeout_s=5)


def collector() -> tuple[list[str], object]:
    pieces: list[str] = []

    async def on_delta(text: str) -> None:
        pieces.append(text)

    return pieces, on_delta


def sent_system(kind: str, body: dict) -> str:
    """Where each wire protocol carries the system prompt."""
    if kind == "anthropic":
        return body["system"]
    if kind == "gemini":
        return body["systemInstruction"]["parts"][0]["text"]
    return body["messages"][0]["content"]


def test_every_kind_has_a_fake_and_the_model_offers_every_kind():
    assert set(LLM_KINDS) == set(FAKES) == set(LLMProvider.Kind.values)


# --- The client, kind by kind ---------------------------------------------------------------------


async def test_a_streamed_answer_arrives_delta_by_delta_with_its_usage(client, fake):
    usage = {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12}
    fake.script(Answer(text="Hello there, world", usage=usage))
    deltas, on_delta = collector()
    result = await client.chat(model="fake-model", messages=MESSAGES, temperature=0.1, on_delta=on_delta)
    assert deltas == ["Hello", " there,", " world"]
    assert (result.text, result.usage, result.finish_reason) == ("Hello there, world", usage, "stop")
    assert sent_system(fake.kind, fake.requests[-1]["json"]) == "Be brief."
    assert fake.last_user_text(fake.requests[-1]["json"]) == "Say hello"


async def test_a_whole_answer_is_read_in_one_piece(client, fake):
    fake.script(Answer(text="All at once"))
    deltas, on_delta = collector()
    result = await client.chat(model="fake-model", messages=MESSAGES, stream=False, on_delta=on_delta)
    assert (result.text, deltas) == ("All at once", ["All at once"])
    assert result.usage["completion_tokens"] == 3
    assert "estimated" not in result.usage


@pytest.mark.parametrize("stream", [True, False])
async def test_tool_calls_come_back_in_one_shape(client, fake, stream):
    fake.script(Answer(tool_calls=[LOOKUP, {**LOOKUP, "id": "call_2", "arguments": '{"city": "Rome"}'}]))
    result = await client.chat(model="fake-model", messages=MESSAGES, tools=TOOLS, stream=stream)
    assert result.finish_reason == "tool_calls"
    assert [(c["id"], c["type"], c["function"]["name"]) for c in result.tool_calls] == [
        ("call_1", "function", "lookup"),
        ("call_2", "function", "lookup"),
    ]
    assert [json.loads(c["function"]["arguments"]) for c in result.tool_calls] == [{"city": "Oslo"}, {"city": "Rome"}]


async def test_a_tool_exchange_goes_back_as_the_protocol_wants_it(client, fake):
    """The agent loop's messages (tool calls, tool results) pass the fakes' checks of each protocol's rules."""
    calls = [
        {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": '{"city": "Oslo"}'}},
        {"id": "call_2", "type": "function", "function": {"name": "clock", "arguments": "{}"}},
    ]
    conversation = [
        *MESSAGES,
        {"role": "assistant", "content": None, "tool_calls": calls},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": -3}'},
        {"role": "tool", "tool_call_id": "call_2", "content": "09:00"},
    ]
    fake.script(Answer(text="Cold at nine"))
    result = await client.chat(model="fake-model", messages=conversation, tools=TOOLS)
    assert result.text == "Cold at nine"
    body = fake.requests[-1]["json"]
    if fake.kind == "anthropic":
        assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
        assert body["messages"][1]["content"][0] == {
            "type": "tool_use",
            "id": "call_1",
            "name": "lookup",
            "input": {"city": "Oslo"},
        }
        assert [b["tool_use_id"] for b in body["messages"][2]["content"]] == ["call_1", "call_2"]
        assert body["tools"][0]["input_schema"] == TOOLS[0]["function"]["parameters"]
    elif fake.kind == "gemini":
        assert [c["role"] for c in body["contents"]] == ["user", "model", "user"]
        assert body["contents"][1]["parts"][0] == {"functionCall": {"name": "lookup", "args": {"city": "Oslo"}}}
        responses = [p["functionResponse"] for p in body["contents"][2]["parts"]]
        assert responses == [
            {"name": "lookup", "response": {"content": '{"temp": -3}'}},
            {"name": "clock", "response": {"content": "09:00"}},
        ]
        declaration = body["tools"][0]["functionDeclarations"][0]
        assert declaration["parametersJsonSchema"] == TOOLS[0]["function"]["parameters"]
    else:
        assert body["messages"] == conversation


async def test_usage_is_estimated_when_the_server_sends_none(client, fake):
    fake.script(Answer(text="four words right here", omit_usage=True))
    result = await client.chat(model="fake-model", messages=MESSAGES)
    assert result.usage["estimated"] is True
    assert result.usage["completion_tokens"] == estimate_tokens("four words right here")


async def test_rate_limits_and_server_errors_are_retryable_with_retry_after(client, fake):
    fake.script(Answer(status=429, retry_after="7", error="Slow down"), Answer(status=503))
    with pytest.raises(LLMUnavailable, match="429: Slow down") as limited:
        await client.chat(model="fake-model", messages=MESSAGES)
    assert isinstance(limited.value, RetryableError)
    assert limited.value.retry_after == 7
    with pytest.raises(LLMUnavailable) as failed:
        await client.chat(model="fake-model", messages=MESSAGES)
    assert (failed.value.status, failed.value.retry_after) == (503, None)


async def test_other_client_errors_are_not_and_never_show_the_key(client, fake, allow_loopback):
    fake.script(Answer(status=404, error=f"model not found for key {KEY}"))
    with pytest.raises(LLMRequestError, match="model not found") as missing:
        await client.chat(model="nope", messages=MESSAGES)
    assert KEY not in str(missing.value)
    assert "***" in str(missing.value)

    wrong = LLMClient(base_url=fake.base_url, api_key="sk-wrong-key-000111", kind=fake.kind, timeout_s=5)
    with pytest.raises(LLMRequestError) as refused:
        await wrong.chat(model="fake-model", messages=MESSAGES)
    assert refused.value.status in (400, 401)
    assert "sk-wrong-key-000111" not in str(refused.value) + repr(wrong)


@pytest.mark.parametrize("stream", [True, False])
async def test_a_key_echoed_in_the_answer_is_masked_in_text_deltas_and_tool_calls(client, fake, stream):
    fake.script(Answer(text="Your key is", echo_authorization=True, tool_calls=[{**LOOKUP, "arguments": "{}"}]))
    deltas, on_delta = collector()
    result = await client.chat(model="fake-model", messages=MESSAGES, stream=stream, on_delta=on_delta)
    assert result.text.endswith("***")
    assert KEY not in result.text
    assert "".join(deltas) == result.text
    assert all(KEY[:8] not in piece for piece in deltas)


async def test_the_model_list(client):
    assert await client.list_models() == ["fake-model"]


async def test_every_kind_goes_through_the_outbound_guard(fake):
    client = LLMClient(base_url=fake.base_url, api_key=KEY, kind=fake.kind, timeout_s=5)
    with pytest.raises(OutboundBlocked, match="is not allowed"):
        await client.chat(model="fake-model", messages=MESSAGES)
    assert fake.requests == []


@pytest.mark.parametrize("stream", [True, False])
async def test_every_kind_reads_answers_under_the_size_cap(client, fake, settings, stream):
    settings.WEFT = {**settings.WEFT, "OUTBOUND_MAX_BYTES": 2000}
    fake.script(Answer(text="word " * 1000))
    with pytest.raises(ResponseTooLarge):
        await client.chat(model="fake-model", messages=MESSAGES, stream=stream)


# --- What only one protocol has -------------------------------------------------------------------


def test_an_unknown_kind_is_refused():
    with pytest.raises(LLMRequestError, match="Unknown provider kind 'cohere'"):
        LLMClient(base_url="https://example.com", kind="cohere")


def test_anthropic_gets_its_version_header_and_a_max_tokens_and_no_key_elsewhere():
    adapter = AnthropicAdapter()
    request = adapter.chat_request(
        model="m", messages=MESSAGES, temperature=None, max_tokens=None, tools=None, stream=False, extra={}
    )
    assert request.body["max_tokens"] > 0
    assert request.body["messages"] == [{"role": "user", "content": "Say hello"}]
    assert adapter.headers(KEY) == {"anthropic-version": "2023-06-01", "x-api-key": KEY}


def test_anthropic_and_gemini_merge_consecutive_turns_of_one_role():
    messages = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
    messages.append({"role": "assistant", "content": "c"})
    options = {"model": "m", "temperature": None, "max_tokens": None, "tools": None, "stream": False, "extra": {}}
    assert AnthropicAdapter().chat_request(messages=messages, **options).body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        {"role": "assistant", "content": "c"},
    ]
    assert GeminiAdapter().chat_request(messages=messages, **options).body["contents"] == [
        {"role": "user", "parts": [{"text": "a"}, {"text": "b"}]},
        {"role": "model", "parts": [{"text": "c"}]},
    ]


def test_gemini_puts_the_model_in_one_path_segment_and_the_key_in_a_header():
    adapter = GeminiAdapter()

    def path(model: str, stream: bool) -> str:
        options = {"temperature": 0.2, "max_tokens": 5, "tools": None, "extra": {}}
        return adapter.chat_request(model=model, messages=MESSAGES, stream=stream, **options).path

    assert path("models/gemini-2.5-flash", False) == "/models/gemini-2.5-flash:generateContent"
    assert path("../../files", True) == "/models/..%2F..%2Ffiles:streamGenerateContent"
    assert adapter.headers(KEY) == {"x-goog-api-key": KEY}


@pytest.mark.parametrize(
    ("adapter", "event"),
    [
        (OpenAIAdapter(), {"error": {"message": "overloaded"}}),
        (AnthropicAdapter(), {"type": "error", "error": {"type": "overloaded_error", "message": "overloaded"}}),
        (GeminiAdapter(), {"error": {"code": 503, "message": "overloaded", "status": "UNAVAILABLE"}}),
    ],
)
def test_an_error_in_the_middle_of_a_stream_is_seen(adapter, event):
    with pytest.raises(StreamFailed, match="overloaded"):
        adapter.stream_reader().feed(event)


# --- Nodes and chat, kind by kind ------------------------------------------------------------------

CALCULATOR = {"type": "object", "required": ["expression"], "properties": {"expression": {"type": "string"}}}


def _calculator_agent(owner, provider):
    calculator = ToolFactory(owner=owner, name="calculator", kind=Tool.Kind.BUILTIN, endpoint="", parameters=CALCULATOR)
    tool_approve(tool=calculator, reviewer=UserFactory(is_staff=True))
    agent = AgentFactory(owner=owner, provider=provider, system_prompt="Be brief.", max_steps=3)
    agent.tools.set([calculator])
    return agent


def _six_times_seven(fake) -> None:
    fake.script(
        Answer(tool_calls=[{"id": "c1", "name": "calculator", "arguments": '{"expression": "6 * 7"}'}]),
        Answer(text="It is 42."),
    )


@pytest.mark.django_db(transaction=True)
def test_the_llm_node_and_the_agent_node_run_with_the_new_kinds(new_fake, allow_loopback):
    owner = UserFactory()
    provider = LLMProviderFactory(owner=owner, kind=new_fake.kind, base_url=new_fake.base_url, api_key=KEY)
    agent = _calculator_agent(owner, provider)
    workflow = WorkflowFactory(owner=owner)
    graph = chain(
        start("city"),
        node(
            "ask", "llm", {"provider": str(provider.id), "prompt": "Weather in {{ start.city }}?", "system": "Terse."}
        ),
        node("think", "agent", {"agent": str(agent.id), "input": "{{ ask.text }} What is 6 times 7?"}),
        end(weather="{{ ask.text }}", answer="{{ think.text }}", steps="{{ think.steps }}"),
    )
    new_fake.script(Answer(text="Cold in Oslo"))
    _six_times_seven(new_fake)
    journal = MemoryJournal()
    system = {"run_id": f"kind-{new_fake.kind}", "workflow_id": str(workflow.id)}
    executor = RunExecutor(
        graph=graph, inputs={"city": "Oslo"}, system=system, journal=journal, ports=owner_ports(workflow)
    )
    result = asyncio.run(executor.run())
    assert result.status == "succeeded", result.error
    assert (result.outputs["weather"], result.outputs["answer"]) == ("Cold in Oslo", "It is 42.")
    deltas = [e["data"]["text"] for e in journal.events if e["type"] == "node.delta" and e["node"] == "ask"]
    assert "".join(deltas) == "Cold in Oslo"
    tool_steps = [s for s in result.outputs["steps"] if s["kind"] == "tool"]
    assert [(s["tool"], s["ok"], s["result"]["value"]) for s in tool_steps] == [("calculator", True, 42)]
    assert len(new_fake.requests) == 3
    assert KEY not in repr(journal.events)


@pytest.mark.django_db
def test_a_chat_turn_with_a_tool_call_works_with_the_new_kinds(new_fake, allow_loopback, user, user_client):
    provider = LLMProviderFactory(owner=user, kind=new_fake.kind, base_url=new_fake.base_url, api_key=KEY)
    session = SessionFactory(owner=user, agent=_calculator_agent(user, provider))
    _six_times_seven(new_fake)
    response = user_client.post(f"/api/v1/sessions/{session.id}/chat/", {"content": "6 times 7?"}, format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["text"] == "It is 42."
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "tool", "assistant"]
    # Gemini gives calls no id: the client names them call_<n>.
    assert body["messages"][2]["metadata"]["tool"] == "calculator"
    assert body["messages"][2]["metadata"]["tool_call_id"] == ("call_1" if new_fake.kind == "gemini" else "c1")
