"""The agent node: a tool-calling loop against the fake OpenAI server, over approved tools only."""

import asyncio
import json

import pytest

from agents.agent_loop import agent_loop_run, agent_spec_load
from agents.models import Tool
from agents.services import tool_approve
from agents.tools_runtime import ToolSpec, tool_runnable_get
from tests.engine.conftest import chain, end, node, start
from tests.factories import AgentFactory, LLMProviderFactory, ToolFactory, UserFactory, WorkflowFactory, owner_ports
from tests.fakes.openai_server import Answer
from tests.threads import in_thread
from workflows.engine import validate_graph
from workflows.engine.executor import RunExecutor
from workflows.engine.journal import MemoryJournal

pytestmark = pytest.mark.django_db(transaction=True)

CALCULATOR = {"type": "object", "required": ["expression"], "properties": {"expression": {"type": "string"}}}
CITY = {"type": "object", "required": ["city"], "properties": {"city": {"type": "string"}}}


def call(call_id: str, name: str, **arguments) -> dict:
    return {"id": call_id, "name": name, "arguments": json.dumps(arguments)}


@pytest.fixture
def world(fake_openai, fake_http, allow_loopback):
    """A workflow and an agent of one owner: a provider on the fake LLM, an approved calculator and HTTP tool."""
    owner = UserFactory()
    reviewer = UserFactory(is_staff=True)
    provider = LLMProviderFactory(owner=owner, base_url=fake_openai.base_url, api_key=fake_openai.api_key)
    calculator = ToolFactory(owner=owner, name="calculator", kind=Tool.Kind.BUILTIN, endpoint="", parameters=CALCULATOR)
    weather = ToolFactory(owner=owner, name="weather", endpoint=fake_http.url("/echo"), parameters=CITY)
    for tool in (calculator, weather):
        tool_approve(tool=tool, reviewer=reviewer)
    agent = AgentFactory(owner=owner, provider=provider, system_prompt="You are careful.", max_steps=5)
    agent.tools.set([calculator, weather])
    return {"owner": owner, "workflow": WorkflowFactory(owner=owner), "agent": agent, "provider": provider}


def agent_graph(agent_id, **config) -> dict:
    return chain(
        start("question"),
        node("think", "agent", {"agent": str(agent_id), "input": "{{ start.question }}", **config}),
        end(text="{{ think.text }}", steps="{{ think.steps }}", usage="{{ think.usage }}"),
    )


def run(graph: dict, workflow, question: str = "What now?"):
    journal = MemoryJournal()
    system = {"run_id": "agent-run", "workflow_id": str(workflow.id)}
    executor = RunExecutor(
        graph=graph, inputs={"question": question}, system=system, journal=journal, ports=owner_ports(workflow)
    )
    return asyncio.run(executor.run()), journal


def test_the_loop_calls_a_builtin_and_an_http_tool_and_feeds_the_results_back(world, fake_openai, fake_http):
    fake_openai.script(
        Answer(tool_calls=[call("c1", "calculator", expression="6 * 7"), call("c2", "weather", city="Oslo")]),
        Answer(text="42, and Oslo is cold"),
    )
    result, journal = run(agent_graph(world["agent"].id), world["workflow"], "Sum and weather?")
    assert result.status == "succeeded", result.error
    assert result.outputs["text"] == "42, and Oslo is cold"

    first, second = (request["json"] for request in fake_openai.requests)
    assert first["messages"] == [
        {"role": "system", "content": "You are careful."},
        {"role": "user", "content": "Sum and weather?"},
    ]
    assert {t["function"]["name"]: t["function"]["parameters"] for t in first["tools"]} == {
        "calculator": CALCULATOR,
        "weather": CITY,
    }
    assert [m["role"] for m in second["messages"]] == ["system", "user", "assistant", "tool", "tool"]
    assert [c["id"] for c in second["messages"][2]["tool_calls"]] == ["c1", "c2"]
    results = {m["tool_call_id"]: json.loads(m["content"]) for m in second["messages"][3:]}
    assert results["c1"] == {"expression": "6 * 7", "value": 42}
    assert json.loads(results["c2"]["body"]) == {"city": "Oslo"}
    assert [(r["method"], r["path"]) for r in fake_http.requests] == [("POST", "/echo")]

    steps = [e["data"]["step"] for e in journal.events if e["type"] == "node.delta" and e["node"] == "think"]
    assert [(s["step"], s["kind"]) for s in steps] == [(1, "model"), (1, "tool"), (1, "tool"), (2, "model")]
    assert all(s["ok"] for s in steps if s["kind"] == "tool")
    assert result.outputs["steps"] == steps
    assert result.outputs["usage"]["total_tokens"] > 0


def test_a_pending_tool_is_neither_offered_nor_run_and_errors_go_back_to_the_model(world, fake_openai, fake_http):
    pending = ToolFactory(owner=world["owner"], name="secret", endpoint=fake_http.url("/echo"), parameters=CITY)
    world["agent"].tools.add(pending)
    fake_openai.script(
        Answer(tool_calls=[call("c1", "secret", city="Oslo"), call("c2", "calculator", formula="1")]),
        Answer(text="I could not do it"),
    )
    result, _ = run(agent_graph(world["agent"].id), world["workflow"])
    assert result.status == "succeeded", result.error
    first, second = (request["json"] for request in fake_openai.requests)
    assert sorted(t["function"]["name"] for t in first["tools"]) == ["calculator", "weather"]
    errors = {m["tool_call_id"]: json.loads(m["content"])["error"] for m in second["messages"] if m["role"] == "tool"}
    assert "There is no tool 'secret'" in errors["c1"]
    assert "Bad arguments" in errors["c2"]
    assert fake_http.requests == []


async def test_a_tool_that_is_no_longer_approved_is_refused_when_the_model_calls_it(world, fake_openai, fake_http):
    """The agent loaded its tools while approved; the gate checks each call again."""

    def load_then_unapprove():
        spec = agent_spec_load(agent_id=world["agent"].pk, owner_id=world["owner"].pk)
        Tool.objects.filter(name="weather").update(status=Tool.Status.REJECTED, review_reason="gone bad")
        return spec

    spec = await in_thread(load_then_unapprove)
    assert "weather" in [tool.name for tool in spec.tools]

    async def gate(tool: ToolSpec) -> None:
        await in_thread(tool_runnable_get, tool_id=tool.id, owner_id=spec.owner_id)

    fake_openai.script(Answer(tool_calls=[call("c1", "weather", city="Oslo")]), Answer(text="done"))
    result = await agent_loop_run(spec=spec, messages=[{"role": "user", "content": "go"}], tool_gate=gate)
    assert result.text == "done"
    tool_step = next(step for step in result.steps if step["kind"] == "tool")
    assert not tool_step["ok"]
    assert "rejected (gone bad)" in tool_step["error"]
    assert fake_http.requests == []


def test_the_step_limit_fails_the_node_without_retrying(world, fake_openai):
    fake_openai.script(*[Answer(tool_calls=[call(f"c{i}", "calculator", expression="1 + 1")]) for i in range(5)])
    graph = agent_graph(world["agent"].id, max_steps=2)
    graph["nodes"][1]["error_policy"] = {"retry": {"max_attempts": 3, "initial_s": 0.01}}
    result, journal = run(graph, world["workflow"])
    assert result.status == "failed"
    assert "within 2 steps" in result.error
    assert len(fake_openai.requests) == 2
    assert [e["type"] for e in journal.events if e["node"] == "think" and e["type"] != "node.delta"] == [
        "node.started",
        "node.failed",
    ]


def test_the_token_budget_stops_the_loop(world, fake_openai):
    usage = {"prompt_tokens": 30, "completion_tokens": 10, "total_tokens": 40}
    fake_openai.script(
        Answer(tool_calls=[call("c1", "calculator", expression="2")], usage=usage),
        Answer(tool_calls=[call("c2", "calculator", expression="3")], usage=usage),
        Answer(text="never reached", usage=usage),
    )
    result, _ = run(agent_graph(world["agent"].id, token_budget=60), world["workflow"])
    assert result.status == "failed"
    assert "80 tokens by step 2, over its budget of 60" in result.error
    assert len(fake_openai.requests) == 2


def test_usage_is_estimated_when_the_provider_sends_none(world, fake_openai):
    fake_openai.script(Answer(text="short answer", omit_usage=True))
    result, _ = run(agent_graph(world["agent"].id), world["workflow"])
    assert result.status == "succeeded", result.error
    assert result.outputs["usage"]["estimated"] is True
    assert result.outputs["usage"]["total_tokens"] > 0


def test_another_users_agent_cannot_run(world, fake_openai):
    someone_elses = AgentFactory(provider=LLMProviderFactory())
    result, _ = run(agent_graph(someone_elses.id), world["workflow"])
    assert result.status == "failed"
    assert "No agent" in result.error
    assert fake_openai.requests == []


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"agent": "helper", "input": "x"}, "config.agent"),
        ({"agent": "1b7e0c1e-4f57-4a38-9d3c-2f4d1a6a0b11"}, "config.input"),
        ({"agent": "1b7e0c1e-4f57-4a38-9d3c-2f4d1a6a0b11", "input": "x", "max_steps": 0}, "config.max_steps"),
    ],
)
def test_bad_agent_configs_are_reported(config, field):
    graph = chain(start(), node("think", "agent", config), end())
    assert [(i.node, i.field) for i in validate_graph(graph)] == [("think", field)]
