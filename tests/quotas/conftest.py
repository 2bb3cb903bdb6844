import copy

import pytest

from accounts.models import UserQuota
from tests.factories import SIMPLE_GRAPH
from workflows.services import workflow_create


@pytest.fixture(params=[pytest.param("redis", marks=pytest.mark.services), "database"])
def counting(request, settings) -> str:
    """Each test twice: day counters in Redis (production), and in the database (embedded mode)."""
    settings.EMBEDDED = request.param == "database"
    return request.param


@pytest.fixture
def undispatched(monkeypatch):
    """Runs are created but no worker takes them: they stay pending, holding their place."""
    monkeypatch.setattr("workflows.execution.services.run_dispatch", lambda *, run_id, **options: None)


@pytest.fixture
def set_quota():
    """``set_quota(user, runs_per_day=2)``: the user's overrides, as an operator sets them in the admin."""

    def set_quota(user, **limits) -> UserQuota:
        quota, _ = UserQuota.objects.update_or_create(user=user, defaults=limits)
        return quota

    return set_quota


@pytest.fixture
def runnable(user):
    """A workflow of ``user`` whose draft runs (a template node between start and end)."""
    return workflow_create(owner=user, name="Runnable", graph=copy.deepcopy(SIMPLE_GRAPH))


def runs_url(workflow) -> str:
    return f"/api/v1/workflows/{workflow.pk}/runs/"
