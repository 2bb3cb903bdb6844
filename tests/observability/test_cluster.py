"""Real processes: daphne and Celery workers with tracing on, JSON logs and multiprocess metrics.

A run started over HTTP with a caller's ``traceparent`` keeps that trace from daphne's request
span, through the Celery message, to the worker's run span and its node spans (received by a
loopback OTLP receiver, as a collector would); the run row and the worker's JSON log lines name
the same trace; daphne's ``/metrics`` adds up what the workers counted.
"""

import json
import secrets
import time

import httpx
import pytest
from knox.models import AuthToken

from tests.engine.conftest import chain, end, node, start
from tests.factories import UserFactory
from tests.integration.conftest import Cluster
from workflows.models import Run
from workflows.services import workflow_create

from .conftest import METRICS_TOKEN, sample, samples_of
from .otlp_receiver import OTLPReceiver

pytestmark = [pytest.mark.services, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

RUN_SPAN = "workflow.run"
REQUEST_SPAN = "POST /api/v1/workflows/<uuid:id>/runs/"
#: The Celery task that executes a run (workflows.tasks).
RUN_TASK = "workflows.run_execute"


@pytest.fixture(scope="module")
def receiver():
    server = OTLPReceiver().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def observed_cluster(django_db_setup, django_db_blocker, tmp_path_factory, receiver):
    from django.conf import settings

    if not settings.DATABASES["default"]["ENGINE"].endswith("postgresql") or not settings.REDIS_URL:
        pytest.skip("needs PostgreSQL and Redis")
    cluster = Cluster(logs=tmp_path_factory.mktemp("observed-cluster"))
    cluster.env.update(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_BSP_SCHEDULE_DELAY": "50",
            "OTEL_SERVICE_NAME": "weft-test",
            "LOG_FORMAT": "json",
            "PROMETHEUS_MULTIPROC_DIR": str(tmp_path_factory.mktemp("prometheus")),
            "WEFT_METRICS_TOKEN": METRICS_TOKEN,
        }
    )
    try:
        cluster.start(workers=2)
        yield cluster
    finally:
        cluster.stop()


def wait_for_run(run_id: str, *, timeout: float) -> Run:
    deadline = time.monotonic() + timeout
    while True:
        run = Run.objects.get(pk=run_id)
        if run.is_finished or time.monotonic() > deadline:
            return run
        time.sleep(0.05)


def log_lines(process) -> list[dict]:
    lines = []
    for text in process.output().splitlines():
        if text.startswith("{"):
            lines.append(json.loads(text))
    return lines


def retried_graph(fake_http) -> dict:
    """start -> call (answered 503 twice: retried once, then handled) -> greet -> end."""
    call = node(
        "call",
        "http_request",
        {"url": fake_http.url("/status?code=503")},
        retry={"max_attempts": 2, "backoff": "fixed", "initial_s": 0.01, "jitter": False},
        on_failure="continue",
        default_output={"status": 0},
    )
    greet = node("greet", "template", {"template": "Weather for {{ start.city }}"})
    return chain(start("city"), call, greet, end(text="{{ greet.text }}"))


def test_the_trace_goes_from_the_request_through_celery_to_the_nodes(observed_cluster, receiver, fake_http):
    cluster = observed_cluster
    user = UserFactory()
    _, token = AuthToken.objects.create(user=user)
    workflow = workflow_create(owner=user, name="Traced", graph=retried_graph(fake_http))
    trace_id, caller_span = secrets.token_hex(16), secrets.token_hex(8)

    response = httpx.post(
        f"{cluster.http_url}/api/v1/workflows/{workflow.pk}/runs/",
        json={"inputs": {"city": "Oslo"}},
        headers={"Authorization": f"Token {token}", "traceparent": f"00-{trace_id}-{caller_span}-01"},
        timeout=10,
    )
    assert response.status_code == 202, response.text
    run = wait_for_run(response.json()["id"], timeout=30)
    assert run.status == "succeeded", run.error
    assert run.trace_id == trace_id

    def outbound_calls(spans):
        """httpx's client spans for the node's calls to the fake server (http.url: the older conventions)."""
        return [span for span in spans if span.attributes.get("http.url", "").startswith(fake_http.url("/"))]

    def complete(spans):
        ours = [span for span in spans if span.trace_id == trace_id]
        nodes = {span.attributes.get("weft.node.id") for span in ours if span.name.startswith("node.")}
        names = {span.name for span in ours}
        sql = any(span.attributes.get("db.system") == "postgresql" for span in ours)
        wanted = {REQUEST_SPAN, f"run/{RUN_TASK}", RUN_SPAN} <= names and nodes >= {"start", "call", "greet", "end"}
        return ours if wanted and sql and len(outbound_calls(ours)) == 2 else None

    spans = receiver.wait_for(complete, timeout=20, what="the request, run, node, SQL and HTTP spans")
    (request_span,) = [span for span in spans if span.name == REQUEST_SPAN]
    (run_span,) = [span for span in spans if span.name == RUN_SPAN]
    assert request_span.parent_span_id == caller_span
    # Carried in the Celery message: the request publishes the task, the task's span holds the run.
    by_id = {span.span_id: span for span in spans}
    task_span = by_id[run_span.parent_span_id]
    publish_span = by_id[task_span.parent_span_id]
    assert (task_span.name, publish_span.name) == (f"run/{RUN_TASK}", f"apply_async/{RUN_TASK}")
    assert publish_span.parent_span_id == request_span.span_id
    # OpenTelemetry's instrumentation: the request's SQL, and the node's outbound calls (one retried).
    sql = [span for span in spans if span.attributes.get("db.system") == "postgresql"]
    assert request_span.span_id in {span.parent_span_id for span in sql}
    calls = outbound_calls(spans)
    assert {(span.name, span.parent_span_id) for span in calls} == {("GET", task_span.span_id)}
    assert run_span.attributes["weft.run.id"] == str(run.pk)
    assert {span.service for span in spans} == {"weft-test"}
    node_spans = [span for span in spans if span.name.startswith("node.")]
    assert len(node_spans) == 4
    assert {span.parent_span_id for span in node_spans} == {run_span.span_id}

    worker_lines = [line for worker in cluster.workers for line in log_lines(worker)]
    ours = [line for line in worker_lines if line.get("run_id") == str(run.pk)]
    assert "Run started." in [line["message"] for line in ours]
    assert {line.get("trace_id") for line in ours} == {trace_id}
    assert any(" ready." in line["message"] for line in worker_lines)  # Celery's own lines are JSON too

    scraped = httpx.get(f"{cluster.http_url}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert scraped.status_code == 200
    samples = samples_of(scraped.text)
    # Counted by a worker, read through daphne.
    assert sample(samples, "weft_runs_finished_total", status="succeeded") >= 1
    assert sample(samples, "weft_node_retries_total", node_type="http_request") >= 1
    assert sample(samples, "weft_http_requests_total", method="POST", route=REQUEST_SPAN[6:], status="202") >= 1
    assert sample(samples, "weft_queue_depth", queue=cluster.queue) == 0
