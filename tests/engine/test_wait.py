"""Waiting for a run's end (``wait=true``): the final event is pushed; the status is the safety net."""

import asyncio

import pytest
from channels.db import database_sync_to_async
from django.utils import timezone

from tests.engine.test_consumers import make_run
from workflows.execution import live
from workflows.execution.services import run_end_awaited
from workflows.models import Run

pytestmark = pytest.mark.django_db(transaction=True)


async def _waiting(run_id, timeout: float) -> asyncio.Task:
    """A wait that has joined the run's group (and read the status once)."""
    task = asyncio.create_task(run_end_awaited(run_id=run_id, timeout=timeout))
    await asyncio.sleep(0.3)
    assert not task.done()
    return task


async def test_the_final_event_ends_the_wait_without_reading_the_status_again():
    run, _, _ = await make_run(status="running")
    waiting = await _waiting(run.pk, timeout=30)
    # The event alone, the row still says running: only the pushed event can end the wait.
    final = live.event_message(run_id=run.pk, seq=9, event_type="run.succeeded", node_id="", data={}, at=timezone.now())
    await live.publish(workflow_id=run.workflow_id, message=final)
    assert await asyncio.wait_for(waiting, timeout=2) is True


async def test_a_lost_final_event_is_made_up_for_by_the_status():
    run, _, _ = await make_run(status="running")
    waiting = await _waiting(run.pk, timeout=30)
    await database_sync_to_async(Run.objects.filter(pk=run.pk).update)(status="succeeded")
    # No event: the status, read at growing intervals of at most a second, ends the wait.
    assert await asyncio.wait_for(waiting, timeout=3) is True


async def test_events_before_the_end_do_not_end_the_wait_and_it_times_out():
    run, _, _ = await make_run(status="running")
    waiting = await _waiting(run.pk, timeout=1.0)
    started = live.event_message(
        run_id=run.pk, seq=1, event_type="node.started", node_id="start", data={}, at=timezone.now()
    )
    await live.publish(workflow_id=run.workflow_id, message=started)
    await asyncio.sleep(0.2)
    assert not waiting.done()
    assert await asyncio.wait_for(waiting, timeout=3) is False
