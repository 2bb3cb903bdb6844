"""OpenTelemetry's instrumentation: the request, its SQL and a node's outbound HTTP share the run's trace."""

import pytest
from django.db import connection
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from observability import instrumentation, tracing
from tests.engine.conftest import chain, end, node, start
from workflows.models import Run
from workflows.services import workflow_create

RUN_ROUTE = "api/v1/workflows/<uuid:id>/runs/"


@pytest.fixture
def instrumented_spans():
    """Tracing on with the libraries instrumented, as ``configure_from_environment`` turns it on."""
    exporter = InMemorySpanExporter()
    provider = tracing.new_provider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install(provider)
    instrumentation.instrument(provider)
    connection.close()  # the next connection is opened through the instrumented psycopg.connect
    yield exporter
    instrumentation.uninstrument()
    connection.close()
    tracing.install(None)
    provider.shutdown()


def http_call_graph(url: str) -> dict:
    return chain(start("city"), node("call", "http_request", {"url": url}), end(status="{{ call.status }}"))


@pytest.mark.django_db(transaction=True)
def test_the_request_its_sql_and_a_nodes_http_call_are_spans_of_the_runs_trace(
    user, client_for, settings, fake_http, allow_loopback, instrumented_spans
):
    settings.EMBEDDED = True
    workflow = workflow_create(owner=user, name="Instrumented", graph=http_call_graph(fake_http.url("/echo")))

    response = client_for(user).post(
        f"/api/v1/workflows/{workflow.pk}/runs/", {"inputs": {"city": "Oslo"}, "wait": True}, format="json"
    )

    assert response.status_code == 200, response.json()
    run = Run.objects.get(pk=response.json()["id"])
    finished = instrumented_spans.get_finished_spans()
    in_run_trace = [span for span in finished if tracing.trace_id_hex(span.context.trace_id) == run.trace_id]
    (server,) = [span for span in in_run_trace if span.kind == SpanKind.SERVER]
    assert server.name == f"POST /{RUN_ROUTE}"
    assert server.attributes["http.route"] == RUN_ROUTE
    assert server.parent is None
    (http_client,) = [span for span in in_run_trace if span.attributes.get("http.url") == fake_http.url("/echo")]
    assert (http_client.kind, http_client.name, http_client.attributes["http.status_code"]) == (
        SpanKind.CLIENT,
        "GET",
        200,
    )
    assert [span.name for span in in_run_trace if span.name == "workflow.run"] == ["workflow.run"]
    if connection.vendor == "postgresql":
        sql = [span for span in in_run_trace if span.attributes.get("db.system") == "postgresql"]
        assert sql, [span.name for span in in_run_trace]
        assert any(span.parent is not None and span.parent.span_id == server.context.span_id for span in sql)


@pytest.mark.django_db
def test_operator_endpoints_get_no_span(client, instrumented_spans):
    assert client.get("/healthz").status_code == 200
    assert [span for span in instrumented_spans.get_finished_spans() if span.kind == SpanKind.SERVER] == []


def test_off_unless_tracing_is_on(monkeypatch):
    monkeypatch.delenv("OTEL_TRACES_EXPORTER", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    tracing.configure_from_environment()
    assert (tracing.tracer, instrumentation.instrumented()) == (None, False)
