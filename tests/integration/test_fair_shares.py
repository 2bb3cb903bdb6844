"""A worker's runs are shared fairly between users: one user's backlog leaves room for another's run.

One real Celery worker (the Procfile's command) with 4 task threads and a share of 2 runs per
user (``WEFT_WORKER_USER_SHARE``). User A starts 6 runs, each waiting in an HTTP call that a
loopback server holds until the test lets it answer; then user B starts a trivial run. Before
fair shares, A's first 4 runs took all 4 threads and B's run waited behind the rest of A's.
"""

import contextlib

import pytest
from django.conf import settings

from tests.engine.conftest import chain, end, node, start
from tests.factories import UserFactory
from workflows.execution.services import run_start
from workflows.models import Run, RunEvent
from workflows.services import workflow_create

from .conftest import Cluster, EffectServer, wait_for

pytestmark = [pytest.mark.services, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

CONCURRENCY = 4
SHARE = 2
A_RUNS = 6
FINAL = ("succeeded", "failed", "cancelled")


@pytest.fixture(scope="module")
def cluster(django_db_setup, tmp_path_factory):
    """One worker of CONCURRENCY threads giving each user SHARE of them (the conftest's cluster_settings use it)."""
    if not settings.DATABASES["default"]["ENGINE"].endswith("postgresql") or not settings.REDIS_URL:
        pytest.skip("needs PostgreSQL and Redis")
    cluster = Cluster(logs=tmp_path_factory.mktemp("fair"))
    cluster.env["WEFT_WORKER_USER_SHARE"] = str(SHARE)
    worker = cluster.worker_start(concurrency=CONCURRENCY)
    try:
        cluster.worker_wait_ready(worker)
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def held():
    """The held server; at the end its calls answer and the worker is left to end the runs before the database is
    emptied (a failed test leaves runs behind)."""
    server = EffectServer()
    yield server
    server.release()
    with contextlib.suppress(AssertionError):
        wait_for(lambda: not Run.objects.exclude(status__in=FINAL).exists(), timeout=15, what="the runs left")
    server.stop()


def finished(run_ids, *, timeout: float, what: str) -> list[Run]:
    def all_ended() -> list[Run] | None:
        runs = list(Run.objects.filter(pk__in=run_ids, status__in=FINAL))
        return runs if len(runs) == len(run_ids) else None

    return wait_for(all_ended, timeout=timeout, what=what)


def test_another_users_run_goes_ahead_of_a_users_backlog_and_every_run_of_theirs_ends_once(cluster_settings, held):
    a, b = UserFactory(), UserFactory()
    held_graph = chain(
        start("tag"), node("call", "http_request", {"url": f"{held.url}/hold?run={{{{ start.tag }}}}"}), end()
    )
    backlog = workflow_create(owner=a, name="Backlog", graph=held_graph)
    trivial = workflow_create(
        owner=b, name="Trivial", graph=chain(start(), node("t", "template", {"template": "hi"}), end())
    )
    tags = [f"a{i}" for i in range(A_RUNS)]
    a_ids = [run_start(workflow=backlog, user=a, inputs={"tag": tag}).pk for tag in tags]
    wait_for(lambda: held.holding() >= SHARE, timeout=20, what="A's runs to call the held server")

    b_id = run_start(workflow=trivial, user=b, inputs={}).pk
    [b_run] = finished([b_id], timeout=20, what="B's run, behind A's backlog")

    assert b_run.status == "succeeded", b_run.error
    assert not Run.objects.filter(pk__in=a_ids, status__in=FINAL).exists()  # all of A's are still held or waiting
    assert held.holding() == SHARE  # and no more than A's share of them ever executed at once

    held.release()
    a_runs = finished(a_ids, timeout=30, what="A's runs, once their calls answer")

    assert [run.status for run in a_runs] == ["succeeded"] * A_RUNS
    assert sorted(held.runs("/hold")) == sorted(tags)  # each run's call was made once
    assert {run.dispatch_attempts for run in a_runs} == {1}  # each claimed once
    for event_type in ("run.started", "run.succeeded"):
        counts = [RunEvent.objects.filter(run_id=run_id, type=event_type).count() for run_id in a_ids]
        assert counts == [1] * A_RUNS, event_type
