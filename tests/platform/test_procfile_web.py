"""The Procfile's ``web`` (gunicorn, threads, a connection pool) on PostgreSQL and Redis, no worker running.

A run made of nodes that compute in-process is executed by that process, whether its request waits for
it or not; one with a node that leaves the process is queued for a worker (which does not run here).
"""

import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from django.conf import settings

from .live import ServerProcess, database_migrate, free_port, live_database, manage, server_env
from .test_trusted_proxy import procfile_command

pytestmark = [pytest.mark.slow, pytest.mark.services]

SETUP = """
from knox.models import AuthToken
from accounts.models import User
from workflows.services import workflow_create
user = User.objects.create_user("builder", password="builder-pass-123")
graph = {"nodes": [
    {"id": "start", "type": "start", "config": {"inputs": [{"name": "name", "type": "string"}]}},
    {"id": "hello", "type": "template", "config": {"template": "Hello {{ start.name }}"}},
    {"id": "end", "type": "end", "config": {"outputs": {"greeting": "{{ hello.text | upper }}"}}}],
  "edges": [{"source": "start", "target": "hello"}, {"source": "hello", "target": "end"}]}
workflow = workflow_create(owner=user, name="Greeter", graph=graph)
fetch = {"nodes": [
    {"id": "start", "type": "start", "config": {}},
    {"id": "get", "type": "http_request", "config": {"url": "http://127.0.0.1:9/"}},
    {"id": "end", "type": "end", "config": {"outputs": {}}}],
  "edges": [{"source": "start", "target": "get"}, {"source": "get", "target": "end"}]}
fetcher = workflow_create(owner=user, name="Fetcher", graph=fetch)
token = AuthToken.objects.create(user)[1]
print(json.dumps({"workflow": str(workflow.pk), "fetcher": str(fetcher.pk), "token": token}))
"""


def test_the_web_process_answers_the_runs_its_requests_wait_for(tmp_path):
    if not settings.DATABASES["default"]["ENGINE"].endswith("postgresql"):
        pytest.skip("the Procfile's deployment runs on PostgreSQL")
    port = free_port()
    with live_database(tmp_path) as database_url:
        env = server_env(
            DATABASE_URL=database_url,
            REDIS_URL=settings.REDIS_URL,
            # A queue of its own: no worker of another test takes the runs sent to a worker.
            WEFT_CELERY_QUEUE=f"procfile-web-{uuid.uuid4().hex[:8]}",
            DATABASE_POOL_MAX_SIZE="4",
            WEB_THREADS="8",
            WEFT_ENGINE_WAIT_TIMEOUT_S="2",  # the wait for a run no worker takes
        )
        database_migrate(env)
        ids = json.loads(manage("shell", "-c", "import json\n" + SETUP, env=env).strip().splitlines()[-1])
        with ServerProcess(procfile_command("web", port), env=env) as server:
            base = f"http://127.0.0.1:{port}"
            server.wait_until_answering(f"{base}/healthz", timeout=60)
            headers = {"Authorization": f"Token {ids['token']}"}
            runs = f"{base}/api/v1/workflows/{ids['workflow']}/runs/"

            def waited(name: str) -> httpx.Response:
                body = {"inputs": {"name": name}, "wait": True}
                return httpx.post(runs, json=body, headers=headers, timeout=30)

            # More calls at once than the pool has connections: they wait for one, none fails.
            with ThreadPoolExecutor(max_workers=12) as pool:
                answers = list(pool.map(waited, [f"n{i}" for i in range(24)]))
            started = httpx.post(runs, json={"inputs": {"name": "later"}}, headers=headers, timeout=30)
            deadline = time.monotonic() + 15
            while True:
                started_now = httpx.get(started.json()["url"], headers=headers, timeout=30).json()
                if started_now["status"] != "running" or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            fetches = f"{base}/api/v1/workflows/{ids['fetcher']}/runs/"
            queued = httpx.post(fetches, json={"inputs": {}, "wait": True}, headers=headers, timeout=30)
            queued_now = httpx.get(queued.json()["url"], headers=headers, timeout=30).json()
            output = server.output

    assert [answer.status_code for answer in answers] == [200] * 24, output
    assert [answer.json()["outputs"]["greeting"] for answer in answers] == [f"HELLO N{i}" for i in range(24)]
    assert {answer.json()["status"] for answer in answers} == {"succeeded"}
    # Not waited for: answered 202 at once, and executed here all the same.
    assert started.status_code == 202, output
    assert (started_now["status"], started_now["outputs"]) == ("succeeded", {"greeting": "HELLO LATER"})
    # A node that leaves the process: queued for a worker even when waited for (no worker runs here).
    assert queued.status_code == 202, output
    assert queued_now["status"] == "pending"
