"""The database journal's group commit: fewer transactions, same guarantees.

The outcome of a node with effects is stored before anything after it starts, so a worker
killed between two batches loses at most events of nodes that had not finished (or of
computations, which run again), and the resumed run executes no stored success again;
``seq`` stays gapless across batches and resumes; events are streamed in ``seq`` order once
stored. The worker is killed by the journal's crash point (``DatabaseJournal(crash_at=...)``),
before or after a chosen batch commits, and the tests look at what the database holds then.

Marked ``journal``: run on PostgreSQL by the suite, and on SQLite by ``make test-journal-sqlite``.
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
from workflows.execution import live
from workflows.execution.journal import AFTER_COMMIT, BEFORE_COMMIT, CrashPoint, DatabaseJournal, WorkerKilled
from workflows.execution.runner import run_execute
from workflows.models import Run, RunEvent, Task

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.journal]


def make_run(graph: dict) -> Run:
    return RunFactory(workflow=WorkflowFactory(owner=UserFactory()), graph=graph, inputs={})


def stored(run: Run) -> list[tuple[int, str, str]]:
    return list(RunEvent.objects.filter(run=run).order_by("seq").values_list("seq", "type", "node_id"))


def crash_when(point: str, event: tuple[str, str]) -> CrashPoint:
    """Kill the worker at ``point`` of the batch that holds ``event`` (type, node id)."""

    def crash_at(at: str, events: list[tuple[int, str, str]]) -> bool:
        return at == point and event in [(kind, node_id) for _, kind, node_id in events]

    return crash_at


async def killed(run: Run, crash_at: CrashPoint) -> None:
    """Execute ``run`` until the crash point kills its worker: what it had not committed is lost."""
    journal = DatabaseJournal(run_id=run.pk, owner="doomed-worker", crash_at=crash_at)
    try:
        claimed = await journal.claim()
        executor = RunExecutor(graph=claimed.graph, inputs={}, system={"run_id": str(run.pk)}, journal=journal)
        with pytest.raises(WorkerKilled):
            await asyncio.wait_for(executor.run(), timeout=30)
    finally:
        await journal.close()


#: a and b act outside the run (test_flaky: its output counts its executions); greet computes.
CRASH_GRAPH = chain(
    start(),
    node("a", "test_flaky"),
    node("greet", "template", {"template": "after {{ a.n }}"}),
    node("b", "test_flaky"),
    end(a="{{ a.n }}", greet="{{ greet.text }}", b="{{ b.n }}"),
)
#: CRASH_GRAPH's history when nothing crashes.
HISTORY = [("run.started", "")] + [
    (kind, node_id) for node_id in ("start", "a", "greet", "b", "end") for kind in ("node.started", "node.succeeded")
]
HISTORY.append(("run.succeeded", ""))
#: (where the worker dies, the event whose batch it dies with, an event that must be stored then,
#: the executions of a and b once the run is resumed).
CRASHES = [
    # Before a acted, what came before it was stored; its lost success makes it act again.
    (BEFORE_COMMIT, ("node.succeeded", "a"), ("node.succeeded", "start"), (2, 1)),
    (AFTER_COMMIT, ("node.succeeded", "a"), ("node.succeeded", "a"), (1, 1)),
    # greet's success (a computation) may wait for company, but not past b's acting.
    (BEFORE_COMMIT, ("node.succeeded", "b"), ("node.succeeded", "greet"), (1, 2)),
    (AFTER_COMMIT, ("node.succeeded", "b"), ("node.succeeded", "b"), (1, 1)),
    (BEFORE_COMMIT, ("run.succeeded", ""), ("node.succeeded", "b"), (1, 1)),
]


@pytest.mark.parametrize(
    ("point", "event", "kept", "executions"),
    CRASHES,
    ids=[f"{point}-{kind}-{node_id}" for point, (kind, node_id), _, _ in CRASHES],
)
def test_a_worker_killed_at_a_batch_leaves_a_prefix_stored_and_the_resumed_run_redoes_no_stored_success(
    point, event, kept, executions
):
    run = make_run(CRASH_GRAPH)
    asyncio.run(killed(run, crash_when(point, event)))

    events = stored(run)
    kinds = [(kind, node_id) for _, kind, node_id in events]
    assert [seq for seq, _, _ in events] == list(range(1, len(events) + 1))
    assert kinds == HISTORY[: len(kinds)]
    assert kept in kinds
    assert (event in kinds) == (point == AFTER_COMMIT)
    run.refresh_from_db()
    assert (run.status, run.last_seq) == ("running", len(events))
    node_id = event[1] or "end"
    stored_success = Task.objects.filter(run=run, node_id=node_id, status="succeeded").exists()
    assert stored_success == (point == AFTER_COMMIT and node_id != "end")

    Run.objects.filter(pk=run.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    assert asyncio.run(run_execute(run_id=run.pk)) == "succeeded"

    key = str(run.pk)
    a, b = executions
    assert (EXECUTIONS[(key, "a", "")], EXECUTIONS[(key, "b", "")]) == executions
    run.refresh_from_db()
    assert run.outputs == {"a": a, "greet": f"after {a}", "b": b}
    resumed = stored(run)
    assert resumed[: len(events)] == events
    assert [seq for seq, _, _ in resumed] == list(range(1, len(resumed) + 1))
    assert run.last_seq == len(resumed)
    assert set(Task.objects.filter(run=run).values_list("status", flat=True)) == {"succeeded"}


def test_a_worker_killed_once_the_runs_end_is_stored_leaves_a_finished_run():
    run = make_run(CRASH_GRAPH)
    asyncio.run(killed(run, crash_when(AFTER_COMMIT, ("run.succeeded", ""))))
    assert [(kind, node_id) for _, kind, node_id in stored(run)] == HISTORY
    run.refresh_from_db()
    assert (run.status, run.outputs, run.lease_owner) == ("succeeded", {"a": 1, "greet": "after 1", "b": 1}, "")
    Run.objects.filter(pk=run.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    assert asyncio.run(run_execute(run_id=run.pk)) is None
    assert (EXECUTIONS[(str(run.pk), "a", "")], EXECUTIONS[(str(run.pk), "b", "")]) == (1, 1)


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
    # Each batch's setting is its own statement's transaction's: the connection's session keeps the
    # default, so a connection given back to a pool commits as any other.
    assert in_session == "on"
    assert "set_config('synchronous_commit', 'on', true)" in settings_seen[2][0]  # the final one waits
    deferred = [any("set_config('synchronous_commit', 'off', true)" in sql for sql in seen) for seen in settings_seen]
    assert deferred == ([False, False, False] if synchronous else [True, True, False])
    events = list(RunEvent.objects.filter(run=run).values_list("seq", "type", "data"))
    assert events == [
        (1, "run.started", {}),
        (2, "node.delta", {"text": "é"}),
        (3, "node.delta", {"i": 3}),
        (4, "run.succeeded", {}),
    ]
    run.refresh_from_db()
    assert (run.status, run.last_seq) == ("succeeded", 4)
