"""Traces in one process: the request's trace continues into the run, with a span per node."""

import io
import json
import logging
import secrets

import pytest
from opentelemetry.trace import SpanKind, StatusCode

from observability import tracing
from observability.logs import ContextFilter, JsonFormatter
from tests.engine.conftest import chain, end, node, start
from workflows.engine.nodes import NodeContext, NodeType, get_node_type, register
from workflows.execution.run_loop import server_run_loop
from workflows.execution.services import run_start
from workflows.models import Run
from workflows.services import workflow_create

from .conftest import RETRIED_GRAPH

if get_node_type("test_log") is None:

    @register
    class Log(NodeType):
        """Writes one log line, then returns ``{"said"}``."""

        type = "test_log"
        config_schema = {"type": "object", "properties": {"say": {"type": "string"}}}
        outputs = frozenset({"said"})

        async def execute(self, ctx: NodeContext, config: dict) -> dict:
            logging.getLogger("tests.observability.node").warning("The node says %s", config.get("say", ""))
            return {"said": config.get("say", "")}


def traceparent() -> tuple[str, str, str]:
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{span_id}-01", trace_id, span_id


def hex_of(number: int, width: int) -> str:
    return format(number, f"0{width}x")


@pytest.fixture
def json_lines():
    """The JSON lines the console handler would write, for every logger, during the test."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(ContextFilter())
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.addHandler(handler)
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    root.removeHandler(handler)


@pytest.mark.django_db(transaction=True)
def test_the_run_continues_the_request_trace_with_a_span_per_node(user, client_for, settings, spans):
    settings.EMBEDDED = True
    workflow = workflow_create(owner=user, name="Traced", graph=RETRIED_GRAPH)
    header, trace_id, caller_span_id = traceparent()

    response = client_for(user).post(
        f"/api/v1/workflows/{workflow.pk}/runs/",
        {"inputs": {"city": "Oslo"}, "wait": True},
        format="json",
        HTTP_TRACEPARENT=header,
    )

    assert response.status_code == 200, response.json()
    run = Run.objects.get(pk=response.json()["id"])
    assert run.trace_id == trace_id
    finished = spans.get_finished_spans()
    assert {hex_of(span.context.trace_id, 32) for span in finished} == {trace_id}
    by_name = {}
    for span in finished:
        by_name.setdefault(span.name, []).append(span)
    (request_span,) = by_name["POST /api/v1/workflows/<uuid:id>/runs/"]
    assert request_span.kind == SpanKind.SERVER
    assert hex_of(request_span.parent.span_id, 16) == caller_span_id
    assert request_span.attributes["http.response.status_code"] == 200
    (run_span,) = by_name["workflow.run"]
    assert run_span.parent.span_id == request_span.context.span_id
    assert run_span.attributes["weft.run.id"] == str(run.pk)
    assert run_span.attributes["weft.run.status"] == "succeeded"
    node_spans = {span.attributes["weft.node.id"]: span for span in finished if span.name.startswith("node.")}
    assert set(node_spans) == {"start", "flaky", "greet", "end"}
    for node_id, span in node_spans.items():
        assert span.parent.span_id == run_span.context.span_id, node_id
        assert span.attributes["weft.node.status"] == "succeeded"
        assert run_span.start_time <= span.start_time <= span.end_time <= run_span.end_time
    assert node_spans["greet"].name == "node.template"
    flaky = node_spans["flaky"]
    assert flaky.attributes["weft.node.attempts"] == 2
    assert [(event.name, event.attributes["attempt"]) for event in flaky.events] == [("retry", 1)]


@pytest.mark.django_db(transaction=True)
def test_a_run_started_outside_a_request_gets_a_trace_of_its_own(user, settings, spans):
    settings.EMBEDDED = True
    workflow = workflow_create(owner=user, name="Scheduled", graph=RETRIED_GRAPH)
    graph = chain(start(), node("fail", "test_flaky", {"failures": 5, "fatal": True}), end())
    failing = workflow_create(owner=user, name="Failing", graph=graph)

    runs = [
        run_start(workflow=workflow, user=user, inputs={"city": "Rome"}),
        run_start(workflow=failing, user=user, inputs={}),
    ]
    assert server_run_loop.wait_idle(timeout=30)
    for run in runs:
        run.refresh_from_db()
    assert [run.status for run in runs] == ["succeeded", "failed"]
    assert len({runs[0].trace_id, runs[1].trace_id} - {""}) == 2
    roots = {
        hex_of(span.context.trace_id, 32): span for span in spans.get_finished_spans() if span.name == "workflow.run"
    }
    assert set(roots) == {runs[0].trace_id, runs[1].trace_id}
    assert all(span.parent is None for span in roots.values())
    failed_run_span = roots[runs[1].trace_id]
    assert failed_run_span.status.status_code == StatusCode.ERROR
    (failed_node,) = [span for span in spans.get_finished_spans() if span.attributes.get("weft.node.id") == "fail"]
    assert failed_node.status.status_code == StatusCode.ERROR
    assert "fatal failure 1" in failed_node.status.description


@pytest.mark.django_db(transaction=True)
def test_log_lines_of_a_run_carry_its_run_node_and_trace_ids(user, client_for, settings, spans, json_lines):
    settings.EMBEDDED = True
    graph = chain(start(), node("shout", "test_log", {"say": "hello"}), end())
    workflow = workflow_create(owner=user, name="Logged", graph=graph)
    header, trace_id, _ = traceparent()

    response = client_for(user).post(
        f"/api/v1/workflows/{workflow.pk}/runs/", {"inputs": {}, "wait": True}, format="json", HTTP_TRACEPARENT=header
    )

    assert response.status_code == 200, response.json()
    run_id = response.json()["id"]
    lines = json_lines()
    said = [line for line in lines if line["message"] == "The node says hello"]
    assert said == [{**said[0], "run_id": run_id, "node_id": "shout", "trace_id": trace_id, "level": "WARNING"}]
    ours = [line for line in lines if line.get("run_id") == run_id]
    assert [line["message"] for line in ours if line["logger"] == "observability.runs"][:1] == ["Run started."]
    assert ours[-1]["message"].startswith("Run succeeded after")
    assert all(line["trace_id"] == trace_id for line in ours)
    assert all("node_id" not in line for line in ours if line["logger"] == "observability.runs")


def test_tracing_is_off_unless_the_environment_asks():
    assert tracing.tracing_wanted({}) == ""
    assert tracing.tracing_wanted({"OTEL_SERVICE_NAME": "weft"}) == ""
    assert tracing.tracing_wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}) == "otlp"
    assert tracing.tracing_wanted({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}) == "otlp"
    assert tracing.tracing_wanted({"OTEL_TRACES_EXPORTER": "console"}) == "console"
    endpoint = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}
    assert tracing.tracing_wanted({**endpoint, "OTEL_SDK_DISABLED": "true"}) == ""
    assert tracing.tracing_wanted({**endpoint, "OTEL_TRACES_EXPORTER": "none"}) == ""


@pytest.mark.django_db(transaction=True)
def test_with_tracing_off_nothing_is_traced_and_runs_have_no_trace_id(user, client_for, settings):
    assert tracing.tracer is None
    settings.EMBEDDED = True
    workflow = workflow_create(owner=user, name="Untraced", graph=RETRIED_GRAPH)
    header, _, _ = traceparent()
    response = client_for(user).post(
        f"/api/v1/workflows/{workflow.pk}/runs/",
        {"inputs": {"city": "Oslo"}, "wait": True},
        format="json",
        HTTP_TRACEPARENT=header,
    )
    assert response.json()["status"] == "succeeded"
    assert Run.objects.get(pk=response.json()["id"]).trace_id == ""
