"""Fixtures for the observability tests: spans kept in memory, /metrics scraped and parsed."""

import pytest
from django.test import Client
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

from observability import tracing
from tests.engine.conftest import chain, end, node, start

METRICS_TOKEN = "metrics-token-for-tests-0123456789"

#: start -> flaky (fails once, retried) -> greet -> end.
RETRIED_GRAPH = chain(
    start("city"),
    node(
        "flaky",
        "test_flaky",
        {"failures": 1},
        retry={"max_attempts": 2, "backoff": "fixed", "initial_s": 0.01, "jitter": False},
    ),
    node("greet", "template", {"template": "Weather for {{ start.city }}"}),
    end(text="{{ greet.text }}"),
)


@pytest.fixture
def spans():
    """Tracing on for the test, every finished span kept in memory."""
    exporter = InMemorySpanExporter()
    provider = tracing.new_provider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install(provider)
    yield exporter
    tracing.install(None)
    provider.shutdown()


@pytest.fixture
def metrics_token(settings) -> str:
    settings.METRICS_TOKEN = METRICS_TOKEN
    settings.METRICS_ALLOW = []
    return METRICS_TOKEN


def samples_of(text: str) -> dict[tuple, float]:
    """``{(sample name, ((label, value), ...)): value}`` of a Prometheus text exposition."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


@pytest.fixture
def scrape(metrics_token):
    """GET /metrics with the token; the samples, parsed."""

    def get() -> dict[tuple, float]:
        response = Client().get("/metrics", HTTP_AUTHORIZATION=f"Bearer {metrics_token}")
        assert response.status_code == 200, response.content[:500]
        assert response["Content-Type"].startswith("text/plain; version=")
        return samples_of(response.content.decode())

    return get


def sample(samples: dict, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)
