"""A web process killed (-9) while it executes runs of its own requests leaves no run behind.

A run of computing nodes executes in the web process that starts it (workflows.execution.dispatch).
Here the Procfile's ``web`` (gunicorn) starts eight such runs for waiting requests while the test
holds a lock that stops every write of run events, so that each run is created, leased to the web
process and stuck in its journal's first write. Then every process of that server is killed with
SIGKILL, its statements stuck behind the lock end with its connections, and the lock is let go.
The test plays beat: once the leases have lapsed its reaper hands the runs to the cluster's Celery
workers, which resume them. Each run ends succeeded with its output, its events numbered 1..n
without a gap or a repeat, and one usage row.
"""

import os
import signal
import threading
import time

import httpx
import psycopg
import pytest
from django.db import connection
from knox.models import AuthToken

from history.models import UsageMetric
from tests.engine.conftest import chain, end, node, start
from tests.factories import UserFactory
from tests.platform.live import ServerProcess, free_port
from tests.platform.test_trusted_proxy import procfile_command
from workflows.execution.reaper import runs_reap
from workflows.models import Run, RunEvent
from workflows.services import workflow_create

from .conftest import ENGINE, wait_for

pytestmark = [pytest.mark.services, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

RUNS = 8


def test_runs_of_a_web_process_killed_mid_run_are_resumed_by_workers(cluster_settings):
    cluster = cluster_settings
    user = UserFactory()
    graph = chain(
        start("name"),
        node("hello", "template", {"template": "Hello {{ start.name }}"}),
        node("shout", "template", {"template": "{{ hello.text | upper }}"}),
        end(greeting="{{ shout.text }}"),
    )
    workflow = workflow_create(owner=user, name="Greeter", graph=graph)
    token = AuthToken.objects.create(user)[1]
    port = free_port()
    env = {**cluster.env, "DATABASE_POOL_MAX_SIZE": "16", "WEB_THREADS": "16", "WEB_CONCURRENCY": "1"}
    server = ServerProcess(procfile_command("web", port), env=env)
    base = f"http://127.0.0.1:{port}"
    answers: list = []
    try:
        server.wait_until_answering(f"{base}/healthz", timeout=60)
        # Every write of run events waits for this lock: the runs stop in their journals' first write.
        params = connection.get_connection_params()
        blocker = psycopg.connect(
            **{key: value for key, value in params.items() if key in {"host", "port", "user", "dbname", "password"}}
        )
        blocker.execute(f"LOCK TABLE {RunEvent._meta.db_table} IN SHARE ROW EXCLUSIVE MODE")

        def call(name: str) -> None:
            try:
                answers.append(
                    httpx.post(
                        f"{base}/api/v1/workflows/{workflow.pk}/runs/",
                        json={"inputs": {"name": name}, "wait": True},
                        headers={"Authorization": f"Token {token}"},
                        timeout=30,
                    )
                )
            except httpx.HTTPError as exc:  # the server is killed under it
                answers.append(exc)

        callers = [threading.Thread(target=call, args=(f"n{i}",)) for i in range(RUNS)]
        for caller in callers:
            caller.start()
        runs = Run.objects.filter(workflow=workflow)
        wait_for(
            lambda: runs.filter(status="running").exclude(lease_owner="").count() == RUNS,
            timeout=30,
            what="the runs executing in the web process",
        )
        assert not RunEvent.objects.filter(run__workflow=workflow).exists()

        os.killpg(server.process.pid, signal.SIGKILL)
        server.process.wait(10)
        # Their connections die with them: PostgreSQL would notice at its next word to the client,
        # so the statements stuck behind the lock are ended here rather than let commit after it.
        blocker.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE wait_event_type = 'Lock' AND pid <> pg_backend_pid() AND datname = current_database()"
        )
        blocker.rollback()
        blocker.close()
        for caller in callers:
            caller.join(30)
    finally:
        if server.process.poll() is None:
            os.killpg(server.process.pid, signal.SIGKILL)

    assert all(isinstance(answer, httpx.HTTPError) for answer in answers), answers  # none was answered
    # As beat does: once the leases have lapsed, the reaper hands the runs to the workers.
    time.sleep(ENGINE["LEASE_TTL_S"])

    def all_ended() -> bool:
        runs_reap()
        return not runs.exclude(status="succeeded").exists()

    wait_for(all_ended, timeout=60, what="the runs resumed by the workers", pause=0.5)
    assert sorted(run.outputs["greeting"] for run in runs) == sorted(f"HELLO N{i}" for i in range(RUNS))
    for run in runs:
        seqs = list(RunEvent.objects.filter(run=run).order_by("seq").values_list("seq", flat=True))
        assert seqs == list(range(1, run.last_seq + 1)), (run.pk, seqs)
        kinds = list(RunEvent.objects.filter(run=run).values_list("type", flat=True))
        assert kinds.count("run.succeeded") == 1
        assert run.lease_owner == ""
        assert run.dispatch_attempts == 2  # claimed by the web process, then by a worker
    assert UsageMetric.objects.filter(run__in=runs).count() == RUNS
