"""A server process's followers of a run share one subscription, and a batch reaches them whole.

The direct socket writes (daphne only) are exercised by the integration tests, whose clients
follow runs through a real daphne; here the consumers run under the test communicator, which
takes the consumer's path (``DirectSocket.of`` finds no daphne socket).
"""

import asyncio
import socket

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.utils import timezone

from tests.engine.test_consumers import connect, make_run
from workflows.execution import fanout, live
from workflows.models import RunEvent

pytestmark = pytest.mark.django_db(transaction=True)


@database_sync_to_async
def store(run, seq: int, kind: str) -> dict:
    event = RunEvent.objects.create(run=run, seq=seq, type=kind, node_id="", data={"n": seq}, at=timezone.now())
    return live.event_message(run_id=run.pk, seq=seq, event_type=kind, node_id="", data=event.data, at=event.at)


async def test_followers_share_one_subscription_and_get_a_batch_in_order(monkeypatch):
    layer = get_channel_layer()
    joined, left = [], []
    group_add, group_discard = layer.group_add, layer.group_discard

    async def add(group, channel):
        joined.append((group, channel))
        await group_add(group, channel)

    async def discard(group, channel):
        left.append((group, channel))
        await group_discard(group, channel)

    monkeypatch.setattr(layer, "group_add", add)
    monkeypatch.setattr(layer, "group_discard", discard)
    run, _, token = await make_run()
    group = live.RUN_GROUP.format(run.pk)
    followers = [await connect(f"/ws/runs/{run.pk}/", token=token) for _ in range(3)]
    for communicator in followers:
        assert (await communicator.receive_json_from(timeout=2))["type"] == "snapshot"
    assert [name for name, _ in joined] == [group]  # one channel for the process, not one per socket

    batch = [
        await store(run, 1, "run.started"),
        await store(run, 2, "node.started"),
        await store(run, 3, "node.succeeded"),
    ]
    await live.publish_batch(workflow_id=run.workflow_id, messages=batch)
    await live.publish(workflow_id=run.workflow_id, message=await store(run, 4, "run.succeeded"))
    for communicator in followers:
        received = [await communicator.receive_json_from(timeout=2) for _ in range(4)]
        assert [(event["seq"], event["type"]) for event in received] == [
            (1, "run.started"),
            (2, "node.started"),
            (3, "node.succeeded"),
            (4, "run.succeeded"),
        ]
        assert await communicator.receive_nothing(timeout=0.1)

    for communicator in followers:
        await communicator.disconnect()
    assert left == joined
    assert not fanout.fanout().runs


async def test_a_silent_run_is_looked_up_once_for_all_its_followers(monkeypatch):
    monkeypatch.setattr(fanout, "CATCH_UP_S", 0.2)
    looked_up = []
    events_after = live.events_after

    def counted(run_id, seq):
        looked_up.append(seq)
        return events_after(run_id, seq)

    monkeypatch.setattr(live, "events_after", counted)
    run, _, token = await make_run()
    followers = [await connect(f"/ws/runs/{run.pk}/", token=token) for _ in range(3)]
    for communicator in followers:
        assert (await communicator.receive_json_from(timeout=2))["seq"] == 0
    looked_up.clear()

    await store(run, 1, "run.started")
    await store(run, 2, "run.failed")  # stored, never streamed: its worker died
    for communicator in followers:
        received = [await communicator.receive_json_from(timeout=2) for _ in range(2)]
        assert [(event["seq"], event["type"]) for event in received] == [(1, "run.started"), (2, "run.failed")]
    await asyncio.sleep(0.6)  # the run has ended: no more looking
    assert looked_up
    assert set(looked_up) == {0}
    assert len(looked_up) <= 2  # per catch-up round one query for the run (not one per follower)
    for communicator in followers:
        await communicator.disconnect()


def test_write_through_sends_at_once_only_when_nothing_waits_before():
    class Transport:  # the attributes of twisted's TCP transport that write_through reads
        TLS = False
        connected = True
        disconnecting = False
        _writeDisconnected = False

        def __init__(self, sock):
            self.socket, self.dataBuffer, self._tempDataBuffer, self.written = sock, b"", [], []

        def write(self, data):
            self._tempDataBuffer.append(data)
            self.written.append(data)

    ours, theirs = socket.socketpair()
    with ours, theirs:
        ours.setblocking(False)
        theirs.settimeout(2)
        transport = Transport(ours)
        fanout.write_through(transport, b"first")
        assert theirs.recv(100) == b"first"
        assert transport.written == []

        transport._tempDataBuffer = [b"queued"]  # twisted holds bytes: what follows goes after them
        fanout.write_through(transport, b"second")
        assert transport.written == [b"second"]

        transport._tempDataBuffer = []
        transport.TLS = True
        fanout.write_through(transport, b"third")
        assert transport.written == [b"second", b"third"]


def test_no_direct_socket_outside_daphne():
    async def send(message):
        return None

    assert fanout.DirectSocket.of(send) is None
