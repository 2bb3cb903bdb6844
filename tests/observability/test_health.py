"""/healthz and /readyz, as a load balancer calls them: by address, over plain HTTP, without credentials."""

import socket

import pytest
from django.test import Client

from observability import health

pytestmark = pytest.mark.django_db

#: A server's address, which is not among ALLOWED_HOSTS.
PROBE = Client(HTTP_HOST="10.0.0.5:8000")


def closed_port() -> int:
    """A loopback port nothing listens on (it was free a moment ago)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_healthz_answers_without_the_database(settings, django_assert_num_queries):
    settings.SECURE_SSL_REDIRECT = True
    with django_assert_num_queries(0):
        response = PROBE.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.services
def test_readyz_is_ready_when_the_database_broker_and_channel_layer_answer(settings):
    settings.SECURE_SSL_REDIRECT = True
    response = PROBE.get("/readyz")
    assert response.status_code == 200, response.json()
    assert response.json() == {
        "status": "ready",
        "checks": {"database": "ok", "broker": "ok", "channel_layer": "ok", "sandbox": "ok"},
    }


def test_readyz_in_embedded_mode_needs_only_the_database(settings):
    settings.CELERY_BROKER_URL = "memory://"
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    response = PROBE.get("/readyz")
    assert response.status_code == 200
    assert response.json()["checks"] == {
        "database": "ok",
        "broker": "in-process",
        "channel_layer": "in-process",
        "sandbox": "ok",
    }


def test_readyz_in_embedded_mode_is_503_naming_bubblewrap_when_the_sandbox_cannot_isolate(settings, monkeypatch):
    # Runs execute in this process: without bubblewrap no code node can run here.
    monkeypatch.setenv("PATH", "/nonexistent")
    settings.CELERY_BROKER_URL = "memory://"
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    response = PROBE.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["down"] == ["sandbox"]
    assert "apt-get install bubblewrap" in body["problems"]["sandbox"]


def test_readyz_of_a_web_server_in_front_of_workers_reports_a_missing_sandbox_without_503(settings, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"
    monkeypatch.setitem(health.CHECKS, "broker", lambda: health.OK)
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    response = PROBE.get("/readyz")
    assert response.status_code == 200
    assert response.json()["checks"]["sandbox"] == "missing"
    assert "bubblewrap" in response.json()["problems"]["sandbox"]


def test_readyz_is_503_naming_redis_when_it_is_unreachable(settings, caplog):
    unreachable = f"redis://:hunter2-password@127.0.0.1:{closed_port()}/0"
    settings.CELERY_BROKER_URL = unreachable
    settings.CHANNEL_LAYERS = {
        "default": {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": [unreachable]}}
    }

    response = PROBE.get("/readyz")

    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["down"] == ["broker", "channel_layer"]
    assert body["checks"] == {"database": "ok", "broker": "down", "channel_layer": "down", "sandbox": "ok"}
    assert "hunter2" not in response.content.decode()
    assert not [record for record in caplog.records if "hunter2" in record.getMessage()]
    assert "the broker is down" in caplog.text


def test_probes_are_not_in_the_api_schema(client):
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    assert not [path for path in schema["paths"] if path.strip("/") in ("healthz", "readyz", "metrics")]
