"""/metrics: what a run, a model call and an HTTP request add up to; its protection; multiprocess mode."""

import asyncio
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import Client

from config.celery import app as celery_app
from config.redis_connection import redis_client
from observability import metrics
from tests.engine.conftest import chain, end, node, start
from tests.factories import LLMProviderFactory, RunFactory, WorkflowFactory, owner_ports
from workflows.engine import MemoryJournal, RunExecutor
from workflows.execution.services import run_start
from workflows.models import Run
from workflows.services import workflow_create

from .conftest import METRICS_TOKEN, RETRIED_GRAPH, sample

BASE_DIR = Path(__file__).resolve().parents[2]
RUN_ROUTE = "api/v1/workflows/<uuid:id>/runs/"


@pytest.mark.django_db(transaction=True)
def test_a_run_through_the_api_moves_the_run_node_retry_and_http_metrics(user, client_for, settings, scrape):
    settings.EMBEDDED = True
    workflow = workflow_create(owner=user, name="Retried", graph=RETRIED_GRAPH)
    before = scrape()

    response = client_for(user).post(
        f"/api/v1/workflows/{workflow.pk}/runs/", {"inputs": {"city": "Oslo"}, "wait": True}, format="json"
    )

    assert response.status_code == 200, response.json()
    assert response.json()["status"] == "succeeded"
    after = scrape()

    def grew(name, **labels) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    assert grew("weft_runs_started_total", trigger="manual") == 1
    assert grew("weft_runs_finished_total", status="succeeded") == 1
    assert grew("weft_run_duration_seconds_count", status="succeeded") == 1
    assert grew("weft_run_duration_seconds_sum", status="succeeded") > 0
    assert grew("weft_node_retries_total", node_type="test_flaky") == 1
    assert grew("weft_node_duration_seconds_count", node_type="test_flaky", status="retrying") == 1
    assert grew("weft_node_duration_seconds_count", node_type="test_flaky", status="succeeded") == 1
    assert grew("weft_node_duration_seconds_count", node_type="template", status="succeeded") == 1
    assert grew("weft_node_duration_seconds_count", node_type="end", status="succeeded") == 1
    assert grew("weft_http_requests_total", method="POST", route=RUN_ROUTE, status="200") == 1
    assert grew("weft_http_request_duration_seconds_count", method="POST", route=RUN_ROUTE) == 1
    # Labelled by the route pattern: no sample names the workflow's id.
    assert not [key for key in after if str(workflow.pk) in repr(key)]


@pytest.mark.django_db
def test_a_pending_run_cancelled_counts_as_finished(user, user_client, scrape, django_capture_on_commit_callbacks):
    run = RunFactory(workflow=WorkflowFactory(owner=user))
    before = sample(scrape(), "weft_runs_finished_total", status="cancelled")

    with django_capture_on_commit_callbacks(execute=True):
        assert user_client.post(f"/api/v1/runs/{run.pk}/cancel/", {}, format="json").status_code == 202

    assert sample(scrape(), "weft_runs_finished_total", status="cancelled") == before + 1


@pytest.mark.django_db
def test_open_runs_are_counted_from_the_database_at_scrape_time(user, scrape):
    workflow = WorkflowFactory(owner=user)
    RunFactory(workflow=workflow, status=Run.Status.RUNNING)
    RunFactory(workflow=workflow, status=Run.Status.RUNNING)
    RunFactory(workflow=workflow, status=Run.Status.PENDING)
    RunFactory(workflow=workflow, status=Run.Status.SUCCEEDED)

    samples = scrape()

    assert sample(samples, "weft_runs", status="running") == 2
    assert sample(samples, "weft_runs", status="pending") == 1


@pytest.mark.django_db
def test_queue_depth_is_zero_in_embedded_mode(settings, scrape):
    settings.EMBEDDED = True
    queue = celery_app.conf.task_default_queue
    assert sample(scrape(), "weft_queue_depth", queue=queue) == 0


@pytest.mark.services
@pytest.mark.django_db
def test_queue_depth_is_the_celery_queue_length_in_redis(user, settings, scrape, django_capture_on_commit_callbacks):
    settings.EMBEDDED = False
    queue = f"weft-obs-test-{uuid.uuid4().hex[:8]}"
    previous = celery_app.conf.task_default_queue
    celery_app.conf.task_default_queue = queue
    try:
        workflow = workflow_create(owner=user, name="Queued", graph=RETRIED_GRAPH)
        with django_capture_on_commit_callbacks(execute=True):
            for city in ("Oslo", "Rome", "Lima"):
                run_start(workflow=workflow, user=user, inputs={"city": city})
        assert sample(scrape(), "weft_queue_depth", queue=queue) == 3
        redis_client().lpop(queue)
        assert sample(scrape(), "weft_queue_depth", queue=queue) == 2
    finally:
        celery_app.conf.task_default_queue = previous
        redis_client().delete(queue)


@pytest.mark.django_db
@pytest.mark.django_db(transaction=True)
def test_model_tokens_are_counted_by_provider_host_and_model(fake_openai, allow_loopback, scrape):
    """An llm node's answer is counted, as the provider reported it (agents pass the metric to the client)."""
    labels = {"provider": "127.0.0.1", "model": "counted-model"}
    workflow = WorkflowFactory()
    provider = LLMProviderFactory(owner=workflow.owner, base_url=fake_openai.base_url, api_key=fake_openai.api_key)
    ask = {"provider": str(provider.pk), "model": "counted-model", "prompt": "Count these words please"}
    graph = chain(start(), node("ask", "llm", ask), end(usage="{{ ask.usage }}"))
    before = scrape()

    executor = RunExecutor(graph=graph, inputs={}, system={}, journal=MemoryJournal(), ports=owner_ports(workflow))
    result = asyncio.run(executor.run())

    assert result.status == "succeeded", result.error
    after = scrape()
    for kind in ("prompt", "completion"):
        grown = sample(after, "weft_llm_tokens_total", kind=kind, **labels) - sample(
            before, "weft_llm_tokens_total", kind=kind, **labels
        )
        assert grown == result.outputs["usage"][f"{kind}_tokens"] > 0


def test_model_and_provider_labels_are_bounded_and_the_rest_counted_as_other(monkeypatch, scrape):
    monkeypatch.setattr(metrics, "llm_providers", metrics.BoundedLabelValues(limit=3))
    monkeypatch.setattr(metrics, "llm_models", metrics.BoundedLabelValues(limit=5))
    run = uuid.uuid4().hex[:8]
    before = scrape()
    for index in range(200):
        metrics.llm_tokens_count(
            base_url=f"https://p{index % 7}-{run}.example/v1", model=f"model-{run}-{index}", usage={"prompt_tokens": 2}
        )
    metrics.llm_tokens_count(base_url=f"https://p0-{run}.example/v1", model="x" * 500, usage={"prompt_tokens": 2})

    after = scrape()
    grown = {
        labels: value - before.get((name, labels), 0.0)
        for (name, labels), value in after.items()
        if name == "weft_llm_tokens_total" and value != before.get((name, labels), 0.0)
    }
    providers = {dict(labels)["provider"] for labels in grown}
    models = {dict(labels)["model"] for labels in grown}
    assert providers == {f"p{index}-{run}.example" for index in range(3)} | {"other"}
    assert models == {f"model-{run}-{index}" for index in range(5)} | {"other"}
    assert sum(grown.values()) == 2 * 201


# --- Protection ------------------------------------------------------------------------------------
def test_metrics_do_not_exist_until_a_token_or_a_network_is_configured(settings):
    settings.METRICS_TOKEN, settings.METRICS_ALLOW = "", []
    assert Client().get("/metrics").status_code == 404
    assert Client().get("/metrics", HTTP_AUTHORIZATION="Bearer anything").status_code == 404


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("authorization", "status"),
    [(None, 401), ("Bearer wrong-token", 401), (f"Token {METRICS_TOKEN}", 401), (f"Bearer {METRICS_TOKEN}", 200)],
)
def test_with_a_token_only_its_bearer_reads_the_metrics(metrics_token, authorization, status):
    headers = {"HTTP_AUTHORIZATION": authorization} if authorization else {}
    response = Client().get("/metrics", **headers)
    assert response.status_code == status
    if status == 401:
        assert response["WWW-Authenticate"] == 'Bearer realm="metrics"'
        assert b"weft_" not in response.content
    else:
        assert b"# TYPE weft_runs_finished_total counter" in response.content


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("allow", "address", "status"),
    [
        (["127.0.0.0/8"], "127.0.0.1", 200),
        (["10.20.0.0/16", "192.0.2.7"], "192.0.2.7", 200),
        (["10.20.0.0/16"], "10.20.3.4", 200),
        (["10.20.0.0/16"], "10.21.0.1", 403),
        (["::1/128"], "::1", 200),
        (["10.20.0.0/16"], "not-an-address", 403),
    ],
)
def test_with_networks_only_clients_in_them_read_the_metrics(settings, allow, address, status):
    settings.METRICS_TOKEN, settings.METRICS_ALLOW = "", allow
    assert Client(REMOTE_ADDR=address).get("/metrics").status_code == status


@pytest.mark.django_db
def test_with_both_the_token_opens_from_anywhere_and_a_wrong_token_is_refused_everywhere(settings):
    settings.METRICS_TOKEN, settings.METRICS_ALLOW = METRICS_TOKEN, ["10.0.0.0/8"]
    outside = Client(REMOTE_ADDR="203.0.113.9")
    inside = Client(REMOTE_ADDR="10.1.2.3")
    assert outside.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {METRICS_TOKEN}").status_code == 200
    assert outside.get("/metrics").status_code == 401
    assert inside.get("/metrics").status_code == 200
    assert inside.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401


@pytest.mark.django_db
def test_prometheus_reaches_a_server_by_its_address_over_plain_http(settings, metrics_token):
    """Host validation and the HTTPS redirect would turn away a scrape of 10.0.0.5:8000."""
    settings.SECURE_SSL_REDIRECT = True
    client = Client(HTTP_HOST="10.0.0.5:8000")
    assert client.get("/api/v1/").status_code in (301, 400)
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {metrics_token}").status_code == 200


def test_a_bad_allowed_network_is_a_system_check_error(settings):
    settings.METRICS_ALLOW = ["10.0.0.0/8", "office"]
    with pytest.raises(SystemCheckError, match="observability.E001"):
        call_command("check")


# --- Several processes -----------------------------------------------------------------------------
WRITER = """
import sys
from observability import metrics
for _ in range(int(sys.argv[1])):
    metrics.runs_finished_count(status="succeeded")
    metrics.node_duration.labels("template", "succeeded").observe(0.02)
metrics.llm_tokens_count(base_url="https://api.example.com/v1", model="m", usage={"prompt_tokens": 5})
"""


@pytest.mark.django_db
def test_in_multiprocess_mode_a_scrape_adds_up_every_process(tmp_path, monkeypatch, scrape):
    directory = tmp_path / "prometheus"
    env = {**os.environ, metrics.MULTIPROC_DIR_VARIABLE: str(directory)}
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(count)], cwd=BASE_DIR, env=env, stderr=subprocess.PIPE)
        for count in (3, 4)
    ]
    for writer in writers:
        _, errors = writer.communicate(timeout=60)
        assert writer.returncode == 0, errors.decode()
    assert len(list(directory.glob("*.db"))) >= 2  # a file per process and kind of metric

    monkeypatch.setenv(metrics.MULTIPROC_DIR_VARIABLE, str(directory))
    samples = scrape()

    assert sample(samples, "weft_runs_finished_total", status="succeeded") == 7
    assert sample(samples, "weft_node_duration_seconds_count", node_type="template", status="succeeded") == 7
    assert sample(samples, "weft_node_duration_seconds_sum", node_type="template", status="succeeded") == (
        pytest.approx(0.14)
    )
    assert sample(samples, "weft_llm_tokens_total", provider="api.example.com", model="m", kind="prompt") == 10
    assert ("weft_runs", (("status", "running"),)) in samples  # the scrape-time gauges are still there
