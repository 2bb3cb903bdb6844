"""The tool node: only approved tools the workflow's owner owns or that are public run, checked at every run."""

import asyncio
import json

import pytest

from agents.models import Tool
from agents.services import tool_approve, tool_reject
from agents.tools_runtime import ToolArgumentsInvalid, ToolFailed, ToolSpec, calculate, workflow_tools_issues
from tests.engine.conftest import chain, end, node, start
from tests.factories import ToolFactory, UserFactory, WorkflowFactory, owner_ports
from workflows.engine import validate_graph
from workflows.engine.executor import RunExecutor
from workflows.engine.journal import MemoryJournal

pytestmark = pytest.mark.django_db(transaction=True)

CALCULATOR = {"type": "object", "required": ["expression"], "properties": {"expression": {"type": "string"}}}
CITY = {"type": "object", "required": ["city"], "properties": {"city": {"type": "string"}}}


def approved(tool: Tool) -> Tool:
    return tool_approve(tool=tool, reviewer=UserFactory(is_staff=True), reason="looks fine")


def calculator_for(owner, **fields) -> Tool:
    fields = {"name": "calculator", "kind": Tool.Kind.BUILTIN, "endpoint": "", "parameters": CALCULATOR, **fields}
    return ToolFactory(owner=owner, **fields)


def run(graph: dict, workflow, inputs: dict | None = None):
    journal = MemoryJournal()
    system = {"run_id": "tool-run", "workflow_id": str(workflow.id)}
    executor = RunExecutor(
        graph=graph, inputs=inputs or {}, system=system, journal=journal, ports=owner_ports(workflow)
    )
    return asyncio.run(executor.run()), journal


def tool_graph(tool_id, arguments: dict, **error_policy) -> dict:
    return chain(
        start("a", "b"),
        node("use", "tool", {"tool": str(tool_id), "arguments": arguments}, **error_policy),
        end(result="{{ use.result }}"),
    )


def test_an_approved_builtin_runs_with_templated_arguments():
    workflow = WorkflowFactory()
    tool = approved(calculator_for(workflow.owner))
    graph = tool_graph(tool.id, {"expression": "({{ start.a }} + {{ start.b }}) * 2"})
    result, _ = run(graph, workflow, {"a": "3", "b": "4"})
    assert result.status == "succeeded", result.error
    assert result.outputs["result"] == {"expression": "(3 + 4) * 2", "value": 14}


def test_an_approved_http_tool_gets_its_arguments_as_json_through_the_guard(fake_http, allow_loopback):
    workflow = WorkflowFactory()
    tool = approved(ToolFactory(owner=workflow.owner, endpoint=fake_http.url("/echo"), parameters=CITY))
    result, _ = run(tool_graph(tool.id, {"city": "{{ start.a }}"}), workflow, {"a": "Oslo", "b": ""})
    assert result.status == "succeeded", result.error
    echoed = result.outputs["result"]
    assert echoed["method"] == "POST"
    assert json.loads(echoed["body"]) == {"city": "Oslo"}


def test_an_http_tool_sends_its_secret_headers(fake_http, allow_loopback):
    workflow = WorkflowFactory()
    token = "tok-" + "9" * 24
    headers = {"Authorization": f"Bearer {token}", "X-Team": "blue-team"}
    tool = approved(
        ToolFactory(owner=workflow.owner, endpoint=fake_http.url("/echo"), parameters=CITY, secret_headers=headers)
    )
    result, _ = run(tool_graph(tool.id, {"city": "Oslo"}), workflow, {"a": "", "b": ""})
    assert result.status == "succeeded", result.error
    sent = result.outputs["result"]["headers"]
    assert (sent["authorization"], sent["x-team"]) == (f"Bearer {token}", "blue-team")
    assert token not in repr(ToolSpec.from_tool(tool))


def test_an_http_tool_on_loopback_is_refused_unless_allow_listed(fake_http):
    workflow = WorkflowFactory()
    tool = approved(ToolFactory(owner=workflow.owner, endpoint=fake_http.url("/echo"), parameters=CITY))
    result, _ = run(tool_graph(tool.id, {"city": "Oslo"}), workflow, {"a": "", "b": ""})
    assert result.status == "failed"
    assert "is not allowed" in result.error
    assert fake_http.requests == []


@pytest.mark.parametrize("status", [Tool.Status.PENDING, Tool.Status.REJECTED])
def test_a_tool_not_approved_fails_the_node_at_once(status, fake_http, allow_loopback):
    workflow = WorkflowFactory()
    tool = ToolFactory(owner=workflow.owner, endpoint=fake_http.url("/echo"), parameters=CITY, status=status)
    graph = tool_graph(tool.id, {"city": "Oslo"}, retry={"max_attempts": 3, "initial_s": 0.01})
    result, journal = run(graph, workflow, {"a": "", "b": ""})
    assert result.status == "failed"
    assert "only approved tools can run" in result.error
    assert [e["type"] for e in journal.events if e["node"] == "use"] == ["node.started", "node.failed"]
    assert fake_http.requests == []


def test_a_tool_rejected_after_the_graph_validated_fails_with_the_reason(fake_http, allow_loopback):
    workflow = WorkflowFactory()
    tool = approved(ToolFactory(owner=workflow.owner, endpoint=fake_http.url("/echo"), parameters=CITY))
    graph = tool_graph(tool.id, {"city": "Oslo"})
    assert validate_graph(graph) == []
    assert workflow_tools_issues(graph=graph, owner=workflow.owner) == []
    tool_reject(tool=tool, reviewer=UserFactory(is_staff=True), reason="leaks data")
    result, _ = run(graph, workflow, {"a": "", "b": ""})
    assert result.status == "failed"
    assert "rejected (leaks data)" in result.error
    assert fake_http.requests == []


def test_another_users_tool_runs_only_if_public_and_approved():
    workflow = WorkflowFactory()
    someone = UserFactory()
    public = approved(calculator_for(someone, visibility=Tool.Visibility.PUBLIC))
    private = approved(calculator_for(someone, name="private_calculator"))
    ok, _ = run(tool_graph(public.id, {"expression": "1 + 1"}), workflow)
    refused, _ = run(tool_graph(private.id, {"expression": "1 + 1"}), workflow)
    assert ok.status == "succeeded", ok.error
    assert ok.outputs["result"]["value"] == 2
    assert refused.status == "failed"
    assert "No tool" in refused.error


def test_arguments_are_checked_against_the_tools_schema():
    workflow = WorkflowFactory()
    tool = approved(calculator_for(workflow.owner))
    result, _ = run(tool_graph(tool.id, {"formula": "1 + 1"}), workflow)
    assert result.status == "failed"
    assert "Bad arguments" in result.error
    assert "expression" in result.error


def test_saving_or_publishing_can_report_tools_the_owner_may_not_run():
    workflow = WorkflowFactory()
    pending = calculator_for(workflow.owner)
    graph = tool_graph(pending.id, {"expression": "1"})
    graph["nodes"].insert(2, node("dyn", "tool", {"tool": "{{ start.a }}"}))
    issues = workflow_tools_issues(graph=graph, owner=workflow.owner)
    assert [(issue.node, issue.field) for issue in issues] == [("use", "config.tool")]
    assert "pending review" in issues[0].message


def test_a_tool_id_that_is_not_one_is_a_validation_issue():
    graph = chain(start(), node("use", "tool", {"tool": "calculator"}), end())
    assert [(i.node, i.field) for i in validate_graph(graph)] == [("use", "config.tool")]


@pytest.mark.parametrize(
    ("expression", "value"),
    [("1 + 2 * 3", 7), ("(1 + 2) * 3", 9), ("-2 ** 2", -4), ("7 // 2 + 7 % 2", 4), ("sqrt(16) + abs(-1)", 5.0)],
)
def test_the_calculator_computes_arithmetic(expression, value):
    assert calculate(expression) == value


@pytest.mark.parametrize(
    "expression",
    ["__import__('os').system('id')", "().__class__", "open('/etc/passwd')", "x + 1", "[1, 2]", "1 if 1 else 2"],
)
def test_the_calculator_refuses_anything_but_arithmetic(expression):
    with pytest.raises(ToolArgumentsInvalid):
        calculate(expression)


@pytest.mark.parametrize("expression", ["1 / 0", "9 ** 9999", "10.0 ** 100 * 10.0 ** 100 * 10.0 ** 100 * 10.0 ** 100"])
def test_the_calculator_refuses_what_cannot_be_computed_cheaply(expression):
    with pytest.raises(ToolFailed):
        calculate(expression)
