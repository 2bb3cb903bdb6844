"""The llm node in a run, against the fake OpenAI server: deltas, output, retries, providers."""

import pytest

from tests.engine.conftest import chain, edge, end, node, start
from tests.factories import LLMProviderFactory, UserFactory, WorkflowFactory, owner_ports
from tests.fakes.openai_server import Answer
from tests.threads import in_thread
from workflows.engine import validate_graph
from workflows.engine.executor import RunExecutor
from workflows.engine.journal import MemoryJournal

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def owned(fake_openai, allow_loopback):
    """A workflow and a provider of the same owner, pointing at the fake server."""

    def make():
        owner = UserFactory()
        workflow = WorkflowFactory(owner=owner)
        provider = LLMProviderFactory(owner=owner, base_url=fake_openai.base_url, api_key=fake_openai.api_key)
        return workflow, provider

    return lambda: in_thread(make)


async def run(graph: dict, inputs: dict, workflow) -> tuple:
    journal = MemoryJournal()
    system = {"run_id": "llm-run", "workflow_id": str(workflow.id)}
    result = await RunExecutor(
        graph=graph, inputs=inputs, system=system, journal=journal, ports=owner_ports(workflow)
    ).run()
    return result, journal


def ask(provider_id, **config) -> dict:
    config = {"provider": str(provider_id), **config}
    return chain(start("city"), node("ask", "llm", config), end(text="{{ ask.text }}", usage="{{ ask.usage }}"))


async def test_the_answer_streams_as_delta_events_and_ends_as_text_and_usage(owned, fake_openai):
    workflow, provider = await owned()
    fake_openai.script(Answer(text="Cold and clear in Oslo", chunk_delay_s=0.06))
    graph = ask(provider.id, messages=[{"role": "user", "content": "Weather in {{ start.city }}?"}])
    result, journal = await run(graph, {"city": "Oslo"}, workflow)
    assert result.status == "succeeded", result.error
    assert result.outputs["text"] == "Cold and clear in Oslo"
    assert result.outputs["usage"]["total_tokens"] > 0
    deltas = [e for e in journal.events if e["type"] == "node.delta"]
    assert len(deltas) > 1
    assert "".join(e["data"]["text"] for e in deltas) == "Cold and clear in Oslo"
    types = [e["type"] for e in journal.events if e["node"] == "ask"]
    assert types.index("node.started") < types.index("node.delta") < types.index("node.succeeded")
    sent = fake_openai.requests[-1]["json"]
    assert sent["messages"] == [{"role": "user", "content": "Weather in Oslo?"}]
    assert sent["model"] == provider.model


async def test_a_provider_that_echoes_the_key_has_it_masked_in_deltas_outputs_and_events(owned, fake_openai):
    workflow, provider = await owned()
    key = provider.api_key
    fake_openai.script(Answer(text="Your header was", echo_authorization=True))
    graph = ask(provider.id, messages=[{"role": "user", "content": "Echo"}])
    result, journal = await run(graph, {"city": "Oslo"}, workflow)
    assert result.status == "succeeded", result.error
    assert result.outputs["text"] == "Your header was Bearer ***"
    deltas = [e for e in journal.events if e["type"] == "node.delta"]
    assert "".join(e["data"]["text"] for e in deltas) == "Your header was Bearer ***"
    assert key not in repr(journal.events)
    assert key not in repr(result.outputs)


async def test_prompt_and_system_make_the_messages(owned, fake_openai):
    workflow, provider = await owned()
    graph = ask(provider.id, prompt="Hi from {{ start.city }}", system="Be terse.", model="other-model", stream=False)
    result, _ = await run(graph, {"city": "Rome"}, workflow)
    assert result.outputs["text"] == "You said: Hi from Rome"
    sent = fake_openai.requests[-1]["json"]
    assert sent["messages"] == [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Hi from Rome"}]
    assert sent["model"] == "other-model"


async def test_a_429_is_retried_after_its_retry_after_then_succeeds(owned, fake_openai):
    workflow, provider = await owned()
    fake_openai.script(Answer(status=429, retry_after="0.4"), Answer(text="Second time lucky"))
    graph = ask(provider.id, prompt="Hi")
    graph["nodes"][1]["error_policy"] = {"retry": {"max_attempts": 2, "initial_s": 0.01, "jitter": False}}
    result, journal = await run(graph, {"city": "x"}, workflow)
    assert result.status == "succeeded", result.error
    assert result.outputs["text"] == "Second time lucky"
    retrying = [e for e in journal.events if e["type"] == "node.retrying"]
    assert [round(e["data"]["delay_s"], 2) for e in retrying] == [0.4]


async def test_another_users_provider_cannot_be_used(owned, fake_openai):
    workflow, _ = await owned()
    _, someone_elses = await owned()
    result, _ = await run(ask(someone_elses.id, prompt="Hi"), {"city": "x"}, workflow)
    assert result.status == "failed"
    assert "No LLM provider" in result.error
    assert fake_openai.requests == []


async def test_a_provider_on_a_private_address_is_refused(fake_openai, settings):
    def make():
        owner = UserFactory()
        return WorkflowFactory(owner=owner), LLMProviderFactory(owner=owner, base_url=fake_openai.base_url)

    workflow, provider = await in_thread(make)
    result, _ = await run(ask(provider.id, prompt="Hi"), {"city": "x"}, workflow)
    assert result.status == "failed"
    assert "is not allowed" in result.error
    assert fake_openai.requests == []


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"prompt": "a", "messages": [{"role": "user", "content": "b"}]}, "config.messages"),
        ({}, "config.messages"),
        ({"messages": [{"role": "user", "content": "b"}], "system": "s"}, "config.system"),
        ({"prompt": "a", "temperature": 3}, "config.temperature"),
        ({"prompt": "a", "provider": "not-an-id"}, "config.provider"),
    ],
)
def test_bad_configs_are_reported(config, field):
    graph = {
        "nodes": [start(), node("ask", "llm", {"provider": "1b7e0c1e-4f57-4a38-9d3c-2f4d1a6a0b11", **config}), end()],
        "edges": [edge("start", "ask"), edge("ask", "end")],
    }
    issues = [issue for issue in validate_graph(graph) if issue.node == "ask"]
    assert [issue.field for issue in issues] == [field]
