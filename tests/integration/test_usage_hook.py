"""A run that reaches a final status is metered once (usage_metrics); metering never changes the run."""

import asyncio
import logging

import pytest

import workflows.usage
from history.models import UsageMetric
from tests.factories import RunFactory
from workflows.execution import runner
from workflows.execution.runner import run_execute
from workflows.execution.services import run_cancel
from workflows.models import Run

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_run_executed_to_its_end_is_metered():
    run = RunFactory()
    assert asyncio.run(run_execute(run_id=run.pk)) == "succeeded"
    assert UsageMetric.objects.filter(run=run).count() >= 1


def test_a_pending_run_cancelled_is_metered():
    run = RunFactory()
    run_cancel(run=run, user=run.triggered_by)
    run.refresh_from_db()
    assert run.status == "cancelled"
    assert UsageMetric.objects.filter(run=run).exists()


def test_a_metering_failure_is_logged_and_leaves_the_run_as_it_ended(monkeypatch, caplog):
    def broken(**kwargs):
        raise RuntimeError("usage store is down")

    monkeypatch.setattr(workflows.usage, "usage_record_for_run", broken)
    monkeypatch.setattr(workflows.usage, "usage_record_ended", broken)
    # Metered after its end, as a run that used a model is (one that did not is metered with its end).
    monkeypatch.setattr(runner, "graph_uses_models", lambda graph: True)
    run = RunFactory()
    with caplog.at_level(logging.ERROR, logger="workflows.execution.ending"):
        assert asyncio.run(run_execute(run_id=run.pk)) == "succeeded"
    assert Run.objects.get(pk=run.pk).status == "succeeded"
    assert not UsageMetric.objects.filter(run=run).exists()
    assert f"Could not record the usage of run {run.pk}" in caplog.text
