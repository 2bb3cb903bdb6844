"""A cancelled task that is talking to Redis ends: the Redis client must not swallow ``cancel()``.

The journal's publisher, the live consumers and the run waiters are all cancelled while they may
be inside a Redis command; redis-py 8.0/8.1 sometimes swallowed that cancellation (the task went on
publishing, and a second cancel left it hanging in the connection pool), which made a worker's
``close()`` wait forever. These tests fail on such a client; requirements/base.txt pins one that
does not do it.
"""

import asyncio
import contextlib
import random

import pytest
from channels.layers import get_channel_layer
from django.conf import settings

from workflows.execution import live
from workflows.execution.journal import DatabaseJournal

pytestmark = pytest.mark.services

ATTEMPTS = 200


async def _cancel_repeatedly(body) -> list[int]:
    """Cancel a task looping on ``body`` at random moments; the attempts whose task did not end."""
    survived = []
    for attempt in range(ATTEMPTS):
        task = asyncio.create_task(body())
        await asyncio.sleep(random.random() * 0.004)
        task.cancel()
        done, _ = await asyncio.wait([task], timeout=2)
        if not done:
            survived.append(attempt)
            task.cancel()
            await asyncio.wait([task], timeout=2)
    return survived


def test_a_redis_command_is_cancellable_at_any_moment():
    import redis.asyncio as aioredis

    async def scenario():
        client = aioredis.Redis.from_url(settings.REDIS_URL)

        async def loop():
            while True:
                await client.zremrangebyscore("weft:cancel-test", min=0, max=1)

        try:
            return await _cancel_repeatedly(loop)
        finally:
            await client.aclose()

    assert asyncio.run(scenario()) == []


def test_publishing_a_live_event_is_cancellable_at_any_moment():
    async def scenario():
        message = {"type": "node.delta", "run": "cancel-test", "node": "n", "seq": 1, "at": "", "data": {}}

        async def loop():
            while True:
                await live.publish(workflow_id="w", message=message)

        try:
            return await _cancel_repeatedly(loop)
        finally:
            await get_channel_layer().flush()

    assert asyncio.run(scenario()) == []


def test_the_journal_publisher_stops_even_when_a_cancel_is_lost_inside_a_send(monkeypatch):
    """Should a library swallow the cancel, the publisher still stops instead of waiting for more."""
    sent = []

    async def swallowing_publish(*, workflow_id, messages):
        with contextlib.suppress(asyncio.CancelledError):  # what a misbehaving client does
            await asyncio.sleep(0.05)
        sent.extend(message["seq"] for message in messages)

    monkeypatch.setattr(live, "publish_batch", swallowing_publish)

    async def scenario():
        journal = DatabaseJournal(run_id="00000000-0000-0000-0000-000000000000", owner="t")
        journal._outbox = asyncio.Queue()
        journal.workflow_id = "w"
        publisher = asyncio.create_task(journal._publish_forever())
        journal._outbox.put_nowait([{"seq": 1, "run": "r", "type": "node.delta"}])
        await asyncio.sleep(0.01)
        publisher.cancel()
        done, _ = await asyncio.wait([publisher], timeout=2)
        journal._thread.shutdown(wait=False)
        return bool(done)

    assert asyncio.run(scenario()) is True
    assert sent == [1]
