"""A daphne server in embedded mode (no Redis: it executes the runs itself) exits promptly on SIGTERM, under load.

The server runs the production settings (``config.settings``: the embedded reaper on, every half
second here) on the test database. Sixteen clients start runs that wait in a call the loopback
server never answers, and keep reading the API, while the server is told to stop.
"""

import json
import os
import signal
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from django.conf import settings
from knox.models import AuthToken

from tests.engine.conftest import chain, end, node, start
from tests.factories import UserFactory
from workflows.models import Run
from workflows.services import workflow_create

from .conftest import ENGINE, OUTBOUND_ALLOW, READY_TIMEOUT_S, _database_url, daphne_start

pytestmark = [pytest.mark.services, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

CLIENTS = 16
#: The behaviour asked for: a server exits within this many seconds of SIGTERM (issue 13, item 14).
SHUTDOWN_S = 10


@pytest.fixture
def embedded_server(django_db_setup, tmp_path):
    if not settings.DATABASES["default"]["ENGINE"].endswith("postgresql"):
        pytest.skip("needs PostgreSQL (the server and the test share its database)")
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DATABASE_URL": _database_url(),
        "WEFT_OUTBOUND_ALLOW": ",".join(OUTBOUND_ALLOW),
        "PYTHONUNBUFFERED": "1",
        **{f"WEFT_ENGINE_{name}": json.dumps(value) for name, value in ENGINE.items()},
        "WEFT_ENGINE_EMBEDDED_REAPER": "true",
        "WEFT_ENGINE_REAPER_INTERVAL_S": "0.5",
    }
    env.pop("REDIS_URL", None)
    server, port = daphne_start("daphne-embedded", env, tmp_path / "daphne.log")
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(server, url)
        yield server, url
    finally:
        server.stop(grace=0)


def _wait_ready(server, url: str) -> None:
    for _ in range(int(READY_TIMEOUT_S / 0.05)):
        try:
            httpx.get(f"{url}/api/v1/", timeout=1)
            return
        except httpx.HTTPError:
            if not server.alive():
                break
            threading.Event().wait(0.05)
    raise RuntimeError(f"daphne did not start:\n{server.output()[-4000:]}")


@pytest.fixture
def silent(tmp_path):
    """A loopback listener that accepts connections and never answers."""
    import socket

    listener = socket.create_server(("127.0.0.1", 0))
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/never"
    listener.close()


def test_an_embedded_server_exits_within_seconds_of_sigterm_under_a_burst_and_hands_its_runs_back(
    embedded_server, silent
):
    server, url = embedded_server
    user = UserFactory()
    _, token = AuthToken.objects.create(user=user)
    graph = chain(start(), node("wait", "http_request", {"url": silent, "timeout_s": 120}), end())
    workflow = workflow_create(owner=user, name="Waiting", graph=graph)
    headers = {"Authorization": f"Token {token}"}
    stop = threading.Event()

    def client(_) -> int:
        """Start runs and read them until told to stop; how many requests were answered."""
        answered = 0
        with httpx.Client(base_url=url, headers=headers, timeout=5) as http:
            while not stop.is_set():
                try:
                    http.post(f"/api/v1/workflows/{workflow.pk}/runs/", json={"inputs": {}})
                    http.get("/api/v1/runs/")
                    answered += 2
                except httpx.HTTPError:
                    return answered  # the server is going away
        return answered

    with ThreadPoolExecutor(CLIENTS) as clients:
        burst = [clients.submit(client, i) for i in range(CLIENTS)]
        for _ in range(200):  # until runs are executing in the server
            if Run.objects.filter(status="running").count() >= CLIENTS:
                break
            threading.Event().wait(0.05)
        server.popen.send_signal(signal.SIGTERM)
        try:
            server.popen.wait(timeout=SHUTDOWN_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"daphne still running {SHUTDOWN_S} s after SIGTERM:\n{server.output()[-3000:]}")
        finally:
            stop.set()
        assert sum(future.result() for future in burst) > 0

    output = server.output()
    assert "cannot schedule new futures" not in output
    assert "handed back" in output
    # Every run it was executing is released for the next process's reaper, its attempt not counted.
    assert Run.objects.filter(status="running").exists()
    assert not Run.objects.filter(status="running").exclude(lease_owner="").exists()
    assert set(Run.objects.filter(status="running").values_list("dispatch_attempts", flat=True)) == {0}
