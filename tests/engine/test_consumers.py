"""The run websocket: authentication, permissions, a snapshot, every event in order, ``?after=`` replay."""

import asyncio

import pytest
from channels.auth import AuthMiddlewareStack
from channels.db import database_sync_to_async
from channels.layers import channel_layers
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.utils import timezone
from knox.models import AuthToken

from config.routing import websocket_urlpatterns
from tests.engine.conftest import edge, end, node, start
from tests.factories import RunFactory, UserFactory, WorkflowFactory, WorkflowMemberFactory
from workflows.execution import live
from workflows.execution.runner import run_execute

pytestmark = pytest.mark.django_db(transaction=True)

application = AuthMiddlewareStack(URLRouter(websocket_urlpatterns))

GRAPH = {
    "nodes": [
        start(t="number"),
        node("check", "condition", {"cases": [{"id": "hot", "expression": "{{ start.t > 30 }}"}]}),
        node("hot", "template", {"template": "hot"}),
        node("cold", "template", {"template": "cold"}),
        node("left", "test_sleep", {"seconds": 0.05}),
        node("right", "test_sleep", {"seconds": 0.05}),
        node("join", "aggregator", {"variables": ["{{ hot.text }}", "{{ cold.text }}"]}),
        end(weather="{{ join.output }}", left="{{ left.slept }}", right="{{ right.slept }}"),
    ],
    "edges": [
        edge("start", "check"),
        edge("check", "hot", "hot"),
        edge("check", "cold", "else"),
        edge("hot", "join"),
        edge("cold", "join"),
        edge("start", "left"),
        edge("start", "right"),
        edge("join", "end"),
        edge("left", "end"),
        edge("right", "end"),
    ],
}


@database_sync_to_async
def make_run(graph=GRAPH, **fields):
    owner = UserFactory()
    workflow = WorkflowFactory(owner=owner)
    run = RunFactory(workflow=workflow, graph=graph, inputs={"t": 35}, **fields)
    token = AuthToken.objects.create(owner)[1]
    return run, owner, token


@database_sync_to_async
def token_for(user) -> str:
    return AuthToken.objects.create(user)[1]


async def connect(path: str, headers=None, *, token: str | None = None) -> WebsocketCommunicator:
    """Open ``path``; with ``token``, as its user (an ``Authorization: Token`` header)."""
    headers = list(headers or [])
    if token is not None:
        headers.append((b"authorization", f"Token {token}".encode()))
    communicator = WebsocketCommunicator(application, path, headers=headers)
    connected, _ = await communicator.connect()
    assert connected
    return communicator


async def closed_with(communicator: WebsocketCommunicator) -> int:
    message = await communicator.receive_output(timeout=2)
    assert message["type"] == "websocket.close"
    return message["code"]


async def receive_until_finished(communicator: WebsocketCommunicator) -> list[dict]:
    received = []
    while True:
        message = await communicator.receive_json_from(timeout=5)
        received.append(message)
        if message["type"] in ("run.succeeded", "run.failed", "run.cancelled"):
            return received


async def test_without_credentials_the_socket_closes_4401():
    run, _, _ = await make_run()
    communicator = await connect(f"/ws/runs/{run.pk}/")
    assert await closed_with(communicator) == 4401


async def test_a_bad_token_closes_4401():
    run, _, _ = await make_run()
    communicator = await connect(f"/ws/runs/{run.pk}/", token="nonsense")
    assert await closed_with(communicator) == 4401


async def test_a_token_in_the_query_string_is_not_accepted():
    """Query strings end up in proxy and server logs: a token there would outlive the request."""
    run, _, token = await make_run()
    assert await closed_with(await connect(f"/ws/runs/{run.pk}/?token={token}")) == 4401


@database_sync_to_async
def ticket_for(user) -> str:
    from accounts.tickets import ws_ticket_issue

    return ws_ticket_issue(user=user)


async def test_a_ticket_opens_one_socket_once():
    run, owner, _ = await make_run()
    ticket = await ticket_for(owner)

    communicator = await connect(f"/ws/runs/{run.pk}/?ticket={ticket}")
    snapshot = await communicator.receive_json_from(timeout=2)
    assert (snapshot["type"], snapshot["data"]["id"]) == ("snapshot", str(run.pk))
    await communicator.disconnect()

    assert await closed_with(await connect(f"/ws/runs/{run.pk}/?ticket={ticket}")) == 4401
    workflow_ticket = await ticket_for(owner)
    workflow_socket = await connect(f"/ws/workflows/{run.workflow_id}/runs/?ticket={workflow_ticket}")
    assert (await workflow_socket.receive_json_from(timeout=2))["type"] == "snapshot"
    await workflow_socket.disconnect()
    assert await closed_with(await connect(f"/ws/workflows/{run.workflow_id}/runs/?ticket={workflow_ticket}")) == 4401


async def test_an_expired_or_made_up_ticket_closes_4401(monkeypatch):
    from accounts import tickets

    monkeypatch.setattr(tickets, "TICKET_TTL_S", 0)  # the cache drops it at once, as after 60 s
    run, owner, _ = await make_run()
    ticket = await ticket_for(owner)

    assert await closed_with(await connect(f"/ws/runs/{run.pk}/?ticket={ticket}")) == 4401
    assert await closed_with(await connect(f"/ws/runs/{run.pk}/?ticket=made-up")) == 4401


async def test_a_ticket_of_someone_else_does_not_show_the_run():
    run, _, _ = await make_run()
    stranger = await database_sync_to_async(UserFactory)()
    ticket = await ticket_for(stranger)
    assert await closed_with(await connect(f"/ws/runs/{run.pk}/?ticket={ticket}")) == 4404


async def test_someone_elses_run_closes_4404_like_a_missing_one():
    run, _, _ = await make_run()
    stranger = await database_sync_to_async(UserFactory)()
    token = await token_for(stranger)
    assert await closed_with(await connect(f"/ws/runs/{run.pk}/", token=token)) == 4404
    missing = "00000000-0000-0000-0000-000000000000"
    assert await closed_with(await connect(f"/ws/runs/{missing}/", token=token)) == 4404


async def test_a_viewer_member_may_watch_with_an_authorization_header():
    run, _, _ = await make_run()
    viewer = await database_sync_to_async(UserFactory)()
    await database_sync_to_async(WorkflowMemberFactory)(workflow=run.workflow, user=viewer, role="viewer")
    token = await token_for(viewer)
    communicator = await connect(f"/ws/runs/{run.pk}/", headers=[(b"authorization", f"Token {token}".encode())])
    snapshot = await communicator.receive_json_from(timeout=2)
    assert snapshot["type"] == "snapshot"
    assert snapshot["data"]["id"] == str(run.pk)
    await communicator.disconnect()


async def test_the_client_sees_a_snapshot_then_every_event_in_order():
    run, _, token = await make_run()
    communicator = await connect(f"/ws/runs/{run.pk}/", token=token)
    snapshot = await communicator.receive_json_from(timeout=2)
    assert (snapshot["type"], snapshot["seq"], snapshot["data"]["status"]) == ("snapshot", 0, "pending")

    assert await run_execute(run_id=run.pk) == "succeeded"
    events = await receive_until_finished(communicator)
    await communicator.disconnect()

    assert [event["seq"] for event in events] == list(range(1, len(events) + 1))
    assert all(set(event) == {"type", "run", "node", "seq", "at", "data"} for event in events)
    assert all(event["run"] == str(run.pk) for event in events)
    kinds = [(event["type"], event["node"]) for event in events]
    assert kinds[0] == ("run.started", None)
    assert kinds[-1] == ("run.succeeded", None)
    assert ("node.skipped", "cold") in kinds
    assert kinds.index(("node.succeeded", "left")) < kinds.index(("node.started", "end"))
    assert kinds.index(("node.succeeded", "right")) < kinds.index(("node.started", "end"))
    assert events[-1]["data"]["outputs"] == {"weather": "hot", "left": 0.05, "right": 0.05}
    stored = await database_sync_to_async(lambda: list(run.events.order_by("seq").values_list("type", flat=True)))()
    assert stored == [event["type"] for event in events]


async def test_after_replays_the_stored_events_without_gaps_or_duplicates():
    run, _, token = await make_run()
    assert await run_execute(run_id=run.pk) == "succeeded"
    total = await database_sync_to_async(lambda: run.events.count())()

    communicator = await connect(f"/ws/runs/{run.pk}/?after=3", token=token)
    snapshot = await communicator.receive_json_from(timeout=2)
    assert snapshot["type"] == "snapshot"
    assert snapshot["data"]["status"] == "succeeded"
    replayed = [await communicator.receive_json_from(timeout=2) for _ in range(total - 3)]
    assert [event["seq"] for event in replayed] == list(range(4, total + 1))
    assert await communicator.receive_nothing(timeout=0.2)
    await communicator.disconnect()


async def test_reconnecting_mid_run_with_after_misses_nothing():
    graph = {
        "nodes": [start(), *[node(f"n{i}", "test_sleep", {"seconds": 0.02}) for i in range(6)], end()],
        "edges": [edge("start", "n0"), *[edge(f"n{i}", f"n{i + 1}") for i in range(5)], edge("n5", "end")],
    }
    run, _, token = await make_run(graph)
    first = await connect(f"/ws/runs/{run.pk}/", token=token)
    await first.receive_json_from(timeout=2)
    running = asyncio.create_task(run_execute(run_id=run.pk))
    seen = [await first.receive_json_from(timeout=5) for _ in range(5)]
    await first.disconnect()

    second = await connect(f"/ws/runs/{run.pk}/?after={seen[-1]['seq']}", token=token)
    await second.receive_json_from(timeout=2)
    rest = await receive_until_finished(second)
    await running
    await second.disconnect()
    assert [event["seq"] for event in seen + rest] == list(range(1, len(seen) + len(rest) + 1))


async def test_a_bad_after_closes_4400():
    run, _, token = await make_run()
    assert await closed_with(await connect(f"/ws/runs/{run.pk}/?after=-1", token=token)) == 4400


async def test_the_workflow_runs_socket_lists_runs_and_streams_their_status():
    run, _, token = await make_run()
    communicator = await connect(f"/ws/workflows/{run.workflow_id}/runs/", token=token)
    snapshot = await communicator.receive_json_from(timeout=2)
    assert [item["id"] for item in snapshot["data"]["runs"]] == [str(run.pk)]
    await run_execute(run_id=run.pk)
    kinds = [(await communicator.receive_json_from(timeout=5))["type"] for _ in range(2)]
    assert kinds == ["run.started", "run.succeeded"]
    await communicator.disconnect()


async def test_the_workflow_runs_socket_gets_a_short_runs_start_and_end_sent_as_one_message():
    """A run that starts and ends in one committed batch sends its run events to the workflow as one message."""
    run, _, token = await make_run()
    communicator = await connect(f"/ws/workflows/{run.workflow_id}/runs/", token=token)
    await communicator.receive_json_from(timeout=2)
    batch = [
        live.event_message(run_id=run.pk, seq=seq, event_type=kind, node_id=node, data={}, at=timezone.now())
        for seq, (kind, node) in enumerate(
            [("run.started", ""), ("node.started", "s"), ("node.succeeded", "s"), ("run.succeeded", "")], start=1
        )
    ]

    await live.publish_batch(workflow_id=run.workflow_id, messages=batch)

    received = [await communicator.receive_json_from(timeout=5) for _ in range(2)]
    assert [(event["type"], event["seq"]) for event in received] == [("run.started", 1), ("run.succeeded", 4)]
    assert await communicator.receive_nothing(timeout=0.2)
    await communicator.disconnect()


@pytest.fixture
def redis_layer(settings):
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [settings.REDIS_URL]},
        }
    }
    channel_layers.backends.clear()
    yield
    channel_layers.backends.clear()


@pytest.mark.services
@pytest.mark.usefixtures("redis_layer")
async def test_with_channels_redis_the_client_sees_every_event_in_order():
    run, _, token = await make_run()
    communicator = await connect(f"/ws/runs/{run.pk}/", token=token)
    await communicator.receive_json_from(timeout=2)
    assert await run_execute(run_id=run.pk) == "succeeded"
    events = await receive_until_finished(communicator)
    await communicator.disconnect()
    assert [event["seq"] for event in events] == list(range(1, len(events) + 1))


async def test_events_stored_but_never_streamed_are_sent_before_the_live_event_after_them():
    """A worker that dies between storing events and streaming them leaves a gap in seq: the
    next live event (from the worker that resumed the run) makes the consumer fill it from the store."""
    from workflows.models import RunEvent

    run, _, token = await make_run()
    communicator = await connect(f"/ws/runs/{run.pk}/", token=token)
    snapshot = await communicator.receive_json_from(timeout=2)
    assert snapshot["seq"] == 0

    @database_sync_to_async
    def store(seq: int, kind: str) -> dict:
        event = RunEvent.objects.create(run=run, seq=seq, type=kind, node_id="", data={"n": seq}, at=timezone.now())
        return live.event_message(run_id=run.pk, seq=seq, event_type=kind, node_id="", data=event.data, at=event.at)

    await store(1, "run.started")
    await store(2, "node.started")  # stored, never streamed: its worker died
    await live.publish(workflow_id=run.workflow_id, message=await store(3, "run.started"))
    received = [await communicator.receive_json_from(timeout=2) for _ in range(3)]
    await communicator.disconnect()

    assert [(event["seq"], event["data"]) for event in received] == [(1, {"n": 1}), (2, {"n": 2}), (3, {"n": 3})]


async def test_a_follower_left_without_live_events_gets_the_stored_ones_until_the_run_ends(monkeypatch):
    """The channel layer delivers at most once; a worker killed between committing a run's end and
    streaming it leaves the client waiting: after CATCH_UP_S of silence it reads what it lacks."""
    from django.utils import timezone

    from workflows.execution import fanout
    from workflows.models import RunEvent

    monkeypatch.setattr(fanout, "CATCH_UP_S", 0.2)
    run, _, token = await make_run()
    communicator = await connect(f"/ws/runs/{run.pk}/", token=token)
    assert (await communicator.receive_json_from(timeout=2))["seq"] == 0

    @database_sync_to_async
    def store(seq: int, kind: str) -> None:
        RunEvent.objects.create(run=run, seq=seq, type=kind, node_id="", data={"n": seq}, at=timezone.now())

    await store(1, "run.started")
    await store(2, "run.succeeded")  # stored, never streamed
    received = [await communicator.receive_json_from(timeout=2) for _ in range(2)]
    assert [(event["seq"], event["type"]) for event in received] == [(1, "run.started"), (2, "run.succeeded")]
    assert await communicator.receive_nothing(timeout=0.6)  # the run has ended: no more reading
    await communicator.disconnect()
