"""Quotas hold under real concurrency: 50 requests at once against a limit of 10, each on its own
connection, with the day counters in Redis and in the database (embedded mode)."""

import copy
import threading
from collections import Counter

import pytest
from django.db import connection
from rest_framework.test import APIClient

from tests.factories import SIMPLE_GRAPH, UserFactory, WorkflowMemberFactory
from tests.quotas.conftest import runs_url
from workflows.models import Run, Workflow, WorkflowMember
from workflows.services import workflow_create

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("undispatched")]

PARALLEL = 50
LIMIT = 10


def at_once(callers: list, request) -> Counter:
    """``request(client)`` by each caller on a thread of its own, all released together; the statuses counted."""
    barrier = threading.Barrier(len(callers))
    statuses: Counter = Counter()
    lock = threading.Lock()

    def call(caller) -> None:
        client = APIClient()
        client.force_authenticate(user=caller)
        try:
            barrier.wait(timeout=30)
            status = request(client).status_code
            with lock:
                statuses[status] += 1
        finally:
            connection.close()

    threads = [threading.Thread(target=call, args=(caller,)) for caller in callers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert sum(statuses.values()) == len(callers), statuses
    return statuses


@pytest.mark.parametrize("quota", ["runs_per_day", "concurrent_runs"])
def test_fifty_starts_at_once_against_a_user_limit_of_ten_start_exactly_ten(counting, quota, user, set_quota):
    workflow = workflow_create(owner=user, name="Busy", graph=copy.deepcopy(SIMPLE_GRAPH))
    set_quota(user, **{quota: LIMIT})

    statuses = at_once([user] * PARALLEL, lambda client: client.post(runs_url(workflow), {"inputs": {}}))

    assert statuses == {202: LIMIT, 429: PARALLEL - LIMIT}
    assert Run.objects.filter(workflow=workflow).count() == LIMIT


def test_fifty_members_at_once_against_a_workflow_limit_of_ten_start_exactly_ten(counting, user, set_quota):
    workflow = workflow_create(owner=user, name="Shared", graph=copy.deepcopy(SIMPLE_GRAPH))
    set_quota(user, workflow_runs_per_day=LIMIT)
    members = UserFactory.create_batch(PARALLEL)
    for member in members:
        WorkflowMemberFactory(workflow=workflow, user=member, role=WorkflowMember.Role.EXECUTOR)

    statuses = at_once(members, lambda client: client.post(runs_url(workflow), {"inputs": {}}))

    assert statuses == {202: LIMIT, 429: PARALLEL - LIMIT}
    assert Run.objects.filter(workflow=workflow).count() == LIMIT


def test_fifty_creations_at_once_against_a_limit_of_ten_create_exactly_ten(counting, user, set_quota):
    set_quota(user, max_workflows=LIMIT)

    statuses = at_once([user] * PARALLEL, lambda client: client.post("/api/v1/workflows/", {"name": "racing"}))

    assert statuses == {201: LIMIT, 403: PARALLEL - LIMIT}
    assert Workflow.objects.filter(owner=user).count() == LIMIT
