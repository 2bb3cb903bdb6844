import copy
from datetime import timedelta

import pytest
from django.utils import timezone

from tests.factories import SIMPLE_GRAPH
from workflows.models import ScheduledWorkflow
from workflows.schedules.selectors import schedule_tick_after
from workflows.services import workflow_create

#: A graph whose one working node always fails, and the run with it.
FAILING_GRAPH = {
    "nodes": [
        {"id": "start", "type": "start", "config": {"inputs": []}},
        {
            "id": "boom",
            "type": "template",
            "config": {"template": "{{ 1 / 0 }}"},
            "error_policy": {"on_failure": "fail"},
        },
        {"id": "end", "type": "end", "config": {"outputs": {"text": "{{ boom.text }}"}}},
    ],
    "edges": [{"source": "start", "target": "boom"}, {"source": "boom", "target": "end"}],
}


@pytest.fixture
def workflow(user):
    """A workflow whose draft runs and succeeds (it has no release)."""
    return workflow_create(owner=user, name="Greeter", graph=copy.deepcopy(SIMPLE_GRAPH))


@pytest.fixture
def failing_workflow(user):
    return workflow_create(owner=user, name="Broken", graph=copy.deepcopy(FAILING_GRAPH))


@pytest.fixture
def embedded(settings):
    """Runs execute in this process (the server's run loop), whether or not REDIS_URL is set."""
    settings.EMBEDDED = True


def in_effect_since(schedule, when) -> None:
    """Pretend the schedule took effect at ``when``: from then on, its next tick is the first after ``when``."""
    schedule.effective_from = when
    schedule.next_fire_at = schedule_tick_after(schedule=schedule, moment=when)
    ScheduledWorkflow.objects.filter(pk=schedule.pk).update(
        effective_from=schedule.effective_from, next_fire_at=schedule.next_fire_at
    )


def an_hour_ago():
    return timezone.now() - timedelta(hours=1)
