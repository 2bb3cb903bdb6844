"""The database journal's group commit: fewer transactions, same guarantees.

The outcome of a node with effects is stored before anything after it starts, so a worker
killed between two batches loses at most events of nodes that had not finished (or of
computations, which run again), and the resumed run executes no stored success again;
``seq`` stays gapless across batches and resumes; events are streamed in ``seq`` order once
stored.
"""

import asyncio
from datetime import timedelta

import pytest
from channels.layers import get_channel_layer
from django.db import connection
from django.utils import timezone

from tests.engine.conftest import EXECUTIONS, chain, edge, end, node, start
from tests.factories import RunFactory, UserFactory, WorkflowFactory
from tests.threads import in_thread as read
from workflows.engine.executor import RunExecutor
from workflows.engine.journal import TaskChange
from workflows.engine.nodes import NodeContext, NodeType, get_node_type, register
from workflows.execution import live
from workflows.execution.journal import DatabaseJournal, _close_connection
from workflows.execution.services import run_execute
from workflows.models import Run, RunEvent, Task

pytestmark = pytest.mark.django_db(transaction=True)


class Crash(BaseException):
    """Stands for the worker being killed: nothing in the executor handles it."""


if get_node_type("test_crash_once") is None:

    @register
    class CrashOnce(NodeType):
        """The first execution in a run kills the worker; later ones return ``{"n"}``."""

        type = "test_crash_once"
        config_schema = {"type": "object"}
        outputs = frozenset({"n"})

        async def execute(self, ctx: NodeContext, config: dict) -> dict:
            key = (ctx.run_id, ctx.node_id, ctx.scope)
            EXECUTIONS[key] += 1
            if EXECUTIONS[key] == 1:
                raise Crash()
            return {"n": EXECUTIONS[key]}


def make_run(graph: dict) -> Run:
    return RunFactory(workflow=WorkflowFactory(owner=UserFactory()), graph=graph, inputs={})


def stored(run: Run) -> list[tuple[int, str, str]]:
    return list(RunEvent.objects.filter(run=run).order_by("seq").values_list("seq", "type", "node_id"))


async def killed_mid_run(run: Run) -> None:
    """Execute ``run`` until its worker 'dies': whatever the journal had not committed is lost."""
    journal = DatabaseJournal(run_id=run.pk, owner="doomed-worker")
    claimed = await journal.claim()
    executor = RunExecutor(graph=claimed.graph, inputs={}, system={"run_id": str(run.pk)}, journal=journal)
    with pytest.raises(Crash):
        await asyncio.wait_for(executor.run(), timeout=30)
    for task in (journal._writer, journal._publisher):  # no flush, no goodbye: as with kill -9
        task.cancel()
    await asyncio.wait_for(asyncio.gather(journal._writer, journal._publisher, return_exceptions=True), timeout=10)
    await journal._call(_close_connection)
    journal._thread.shutdown(wait=True)


def test_a_worker_killed_between_batches_resumes_without_running_a_succeeded_node_again():
    graph = chain(start(), node("a", "test_flaky"), node("b", "test_flaky"), node("boom", "test_crash_once"), end())
    run = make_run(graph)
    asyncio.run(killed_mid_run(run))
    events = stored(run)
    assert ("node.succeeded", "b") in [(kind, node_id) for _, kind, node_id in events]
    assert [seq for seq, _, _ in events] == list(range(1, len(events) + 1))
    Run.objects.filter(pk=run.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))

    assert asyncio.run(run_execute(run_id=run.pk)) == "succeeded"

    key = str(run.pk)
    assert (EXECUTIONS[(key, "a", "")], EXECUTIONS[(key, "b", "")], EXECUTIONS[(key, "boom", "")]) == (1, 1, 2)
    events = stored(run)
    assert [seq for seq, _, _ in events] == list(range(1, len(events) + 1))
    assert [kind for _, kind, node_id in events if node_id == "a"] == ["node.started", "node.succeeded"]
    assert events[-1][1] == "run.succeeded"
    run.refresh_from_db()
    assert run.last_seq == len(events)
    assert dict(Task.objects.filter(run=run).values_list("node_id", "status")) == dict.fromkeys(
        ["start", "a", "b", "boom", "end"], "succeeded"
    )


def test_a_durable_record_returns_once_it_and_everything_before_it_is_stored():
    run = make_run(chain(start(), end()))

    async def scenario():
        journal = DatabaseJournal(run_id=run.pk, owner="worker")
        await journal.claim()
        try:
            change = TaskChange("x", "", "test_flaky", "x", "running", 1, started=True)
            for index in range(5):
                await journal.record("node.delta", "x", {"i": index})
            await journal.record("node.started", "x", {"attempt": 1}, change)
            done = TaskChange("x", "", "test_flaky", "x", "succeeded", 1, output={"n": 1}, finished=True)
            await journal.record("node.succeeded", "x", {"attempt": 1}, done, durable=True)
            return await read(lambda: (stored(run), list(Task.objects.filter(run=run).values("status", "events"))))
        finally:
            await journal.close()

    events, tasks = asyncio.run(scenario())
    assert [(seq, kind) for seq, kind, _ in events] == [(index + 1, "node.delta") for index in range(5)] + [
        (6, "node.started"),
        (7, "node.succeeded"),
    ]
    assert tasks[0]["status"] == "succeeded"
    assert [(event["seq"], event["type"]) for event in tasks[0]["events"]] == [
        (6, "node.started"),
        (7, "node.succeeded"),
    ]
    run.refresh_from_db()
    assert run.last_seq == 7


def test_the_runs_end_closes_the_tasks_left_open_those_of_its_own_batch_too():
    run = make_run(chain(start(), end()))

    def change(node_id: str, status: str, **kwargs) -> TaskChange:
        return TaskChange(node_id, "", "test_sleep", node_id, status, 1, **kwargs)

    async def scenario():
        journal = DatabaseJournal(run_id=run.pk, owner="worker")
        await journal.claim()
        try:
            await journal.record("node.started", "a", {}, change("a", "running", started=True))
            await journal.record("node.started", "b", {}, change("b", "running", started=True))
            await journal.record("node.started", "c", {}, change("c", "running", started=True))
            done = change("b", "succeeded", output={"slept": 0}, finished=True)
            await journal.record("node.succeeded", "b", {}, done, durable=True)
            # The final batch: a row it creates (d) and one it changes (c) are open; a is open
            # from the batch before.
            await journal.record("node.started", "d", {}, change("d", "running", started=True))
            await journal.record("node.retrying", "c", {}, change("c", "retrying", error="again"))
            await journal.finish("cancelled", outputs=None, error="", data={})
        finally:
            await journal.close()

    asyncio.run(scenario())
    tasks = {task.node_id: task for task in Task.objects.filter(run=run)}
    assert {node_id: task.status for node_id, task in tasks.items()} == {
        "a": "cancelled",
        "b": "succeeded",
        "c": "cancelled",
        "d": "cancelled",
    }
    assert all(task.finished_at is not None for task in tasks.values())
    assert tasks["c"].error == "again"
    assert tasks["b"].output_data == {"slept": 0}
    run.refresh_from_db()
    assert (run.status, run.outputs, run.last_seq, run.lease_owner) == ("cancelled", None, 7, "")
    assert run.finished_at is not None
    assert [kind for _, kind, _ in stored(run)][-1] == "run.cancelled"


def test_a_batch_is_refused_when_the_lease_was_taken_and_nothing_of_it_is_stored():
    run = make_run(chain(start(), end()))

    async def scenario():
        journal = DatabaseJournal(run_id=run.pk, owner="worker")
        await journal.claim()
        try:
            await journal.record("node.delta", "x", {"i": 0}, durable=True)
            await read(lambda: Run.objects.filter(pk=run.pk).update(lease_owner="someone-else"))
            await journal.record("node.delta", "x", {"i": 1})
            await journal.record("node.delta", "x", {"i": 2})
            with pytest.raises(Exception, match="no longer held"):
                await journal.flush()
            with pytest.raises(Exception, match="no longer held"):
                await journal.record("node.delta", "x", {"i": 3})
        finally:
            await journal.close()

    asyncio.run(scenario())
    assert [seq for seq, _, _ in stored(run)] == [1]


def test_parallel_branches_are_stored_gapless_and_streamed_in_seq_order():
    fan = [node(f"b{index}", "test_sleep", {"seconds": 0.01 * (index % 3)}) for index in range(12)]
    graph = {
        "nodes": [start(), *fan, end()],
        "edges": [edge("start", item["id"]) for item in fan] + [edge(item["id"], "end") for item in fan],
    }
    run = make_run(graph)

    async def scenario():
        layer = get_channel_layer()
        channel = await layer.new_channel()
        await layer.group_add(live.RUN_GROUP.format(run.pk), channel)
        assert await run_execute(run_id=run.pk) == "succeeded"
        received = []
        while not received or received[-1]["type"] in ("run.started",) or not received[-1]["type"].startswith("run."):
            message = await asyncio.wait_for(layer.receive(channel), timeout=5)
            received.extend(live.unwire(payload) for payload in live.payloads(message))
        return received

    received = asyncio.run(scenario())
    events = stored(run)
    assert [seq for seq, _, _ in events] == list(range(1, len(events) + 1))
    assert [(event["seq"], event["type"], event["node"] or "") for event in received] == events
    for task in Task.objects.filter(run=run):
        own = [(seq, kind) for seq, kind, node_id in events if node_id == task.node_id]
        assert [(event["seq"], event["type"]) for event in task.events] == own


@pytest.mark.skipif(connection.vendor != "postgresql", reason="synchronous_commit is PostgreSQL's")
@pytest.mark.parametrize("synchronous", [False, True])
def test_only_the_final_batch_waits_for_the_disk_unless_every_commit_should(settings, synchronous):
    from django.test.utils import CaptureQueriesContext

    from workflows.execution.journal import _Entry

    engine = {**settings.WEFT.get("ENGINE", {}), "JOURNAL_SYNCHRONOUS_COMMIT": synchronous}
    settings.WEFT = {**settings.WEFT, "ENGINE": engine}
    run = make_run(chain(start(), end()))
    journal = DatabaseJournal(run_id=run.pk, owner="worker")
    try:
        assert journal._claim() is not None
        at = timezone.now()
        batches = [
            [_Entry(1, "run.started", "", {}, at), _Entry(2, "node.delta", "start", {"text": "é"}, at)],
            [_Entry(3, "node.delta", "start", {"i": 3}, at)],
            [_Entry(4, "run.succeeded", "", {}, at, final={"status": "succeeded", "outputs": {}, "error": ""})],
        ]
        settings_seen = []
        for batch in batches:
            with CaptureQueriesContext(connection) as queries:
                journal._write(batch)
            settings_seen.append([query["sql"] for query in queries if "synchronous_commit" in query["sql"]])
        with connection.cursor() as cursor:
            cursor.execute("SHOW synchronous_commit")
            in_session = cursor.fetchone()[0]
    finally:
        journal._thread.shutdown(wait=False)
    if synchronous:
        assert [len(seen) for seen in settings_seen] == [0, 0, 1]  # the final one sets it again: harmless
        assert in_session == "on"
    else:
        # Set once for the connection; the final batch alone waits for the flush (set for its
        # statement's own transaction: the session stays off).
        assert settings_seen[:2] == [["SET synchronous_commit = off"], []]
        assert len(settings_seen[2]) == 1
        assert "set_config('synchronous_commit', 'on', true)" in settings_seen[2][0]
        assert in_session == "off"
    events = list(RunEvent.objects.filter(run=run).values_list("seq", "type", "data"))
    assert events == [
        (1, "run.started", {}),
        (2, "node.delta", {"text": "é"}),
        (3, "node.delta", {"i": 3}),
        (4, "run.succeeded", {}),
    ]
    run.refresh_from_db()
    assert (run.status, run.last_seq) == ("succeeded", 4)
