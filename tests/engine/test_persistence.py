"""Runs executed against the database: task rows, the event stream, status moves, resume, lease, reaper."""

import asyncio
from datetime import timedelta

import pytest
from django.utils import timezone

from tests.engine.conftest import EXECUTIONS, chain, edge, end, node, start
from tests.factories import RunFactory, TaskFactory, UserFactory, WorkflowFactory
from tests.threads import in_thread
from workflows.execution import journal as journal_module
from workflows.execution.reaper import runs_reap
from workflows.execution.runner import run_execute
from workflows.execution.services import run_cancel
from workflows.models import Run, RunEvent, Task

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.journal]

GRAPH = chain(
    start("city"),
    node("greet", "template", {"template": "Weather for {{ start.city }}"}),
    node("count", "test_flaky", {}),
    end(text="{{ greet.text }}", n="{{ count.n }}"),
)


def make_run(graph=GRAPH, inputs=None, **fields) -> Run:
    workflow = WorkflowFactory(owner=UserFactory())
    return RunFactory(workflow=workflow, graph=graph, inputs={"city": "Oslo"} if inputs is None else inputs, **fields)


def run_now(run: Run) -> str | None:
    return asyncio.run(run_execute(run_id=run.pk))


def event_types(run: Run) -> list[tuple[str, str]]:
    return list(RunEvent.objects.filter(run=run).order_by("seq").values_list("type", "node_id"))


def test_a_run_writes_a_task_per_node_and_an_event_per_step():
    run = make_run()
    assert run_now(run) == "succeeded"
    run.refresh_from_db()
    assert run.status == "succeeded"
    assert run.outputs == {"text": "Weather for Oslo", "n": 1}
    assert run.started_at <= run.finished_at
    assert run.lease_owner == ""
    assert run.lease_expires_at is None
    tasks = {task.node_id: task for task in Task.objects.filter(run=run)}
    assert set(tasks) == {"start", "greet", "count", "end"}
    greet = tasks["greet"]
    assert (greet.status, greet.attempt, greet.output_data) == ("succeeded", 1, {"text": "Weather for Oslo"})
    assert greet.started_at <= greet.finished_at
    assert [event["type"] for event in greet.events] == ["node.started", "node.succeeded"]
    seqs = list(RunEvent.objects.filter(run=run).order_by("seq").values_list("seq", flat=True))
    assert seqs == list(range(1, len(seqs) + 1))
    assert run.last_seq == seqs[-1]
    assert event_types(run)[0] == ("run.started", "")
    assert event_types(run)[-1] == ("run.succeeded", "")


def test_a_finished_run_is_not_claimed_again():
    run = make_run()
    assert run_now(run) == "succeeded"
    assert run_now(run) is None
    assert EXECUTIONS[(str(run.pk), "count", "")] == 1


def test_a_failed_node_fails_the_run_with_its_error():
    run = make_run(chain(start(), node("bad", "test_flaky", {"failures": 1}), end()), inputs={})
    assert run_now(run) == "failed"
    run.refresh_from_db()
    assert run.status == "failed"
    assert "failure 1" in run.error
    assert Task.objects.get(run=run, node_id="bad").status == "failed"
    assert event_types(run)[-1] == ("run.failed", "")


def test_resume_after_a_crash_does_not_execute_succeeded_nodes_again():
    """A worker died after `greet` and `count` succeeded and while `end` ran: the next one finishes the run."""
    expired = timezone.now() - timedelta(seconds=5)
    run = make_run(status="running", lease_owner="dead-worker", lease_expires_at=expired, dispatch_attempts=1)
    for seq, (kind, node_id) in enumerate([("run.started", ""), ("node.started", "start")], start=1):
        RunEvent.objects.create(run=run, seq=seq, type=kind, node_id=node_id, at=timezone.now())
    Run.objects.filter(pk=run.pk).update(last_seq=2)
    TaskFactory(run=run, node_id="start", name="start", status="succeeded", attempt=1, output_data={"city": "Oslo"})
    TaskFactory(run=run, node_id="greet", name="greet", status="succeeded", attempt=1, output_data={"text": "Hi"})
    TaskFactory(run=run, node_id="count", name="count", status="succeeded", attempt=1, output_data={"n": 7})
    TaskFactory(run=run, node_id="end", name="end", status="running", attempt=1)

    assert run_now(run) == "succeeded"
    run.refresh_from_db()
    assert run.outputs == {"text": "Hi", "n": 7}  # the stored outputs, not new executions
    assert EXECUTIONS[(str(run.pk), "count", "")] == 0
    assert run.dispatch_attempts == 2
    assert Task.objects.get(run=run, node_id="end").attempt == 2
    events = event_types(run)
    assert events[2] == ("run.started", "")
    assert RunEvent.objects.get(run=run, seq=3).data == {"resumed": True}
    assert [node_id for kind, node_id in events if kind == "node.started"] == ["start", "end"]
    seqs = list(RunEvent.objects.filter(run=run).order_by("seq").values_list("seq", flat=True))
    assert seqs == list(range(1, len(seqs) + 1))


def test_a_node_with_effects_executes_only_once_what_came_before_it_is_stored(monkeypatch):
    # greet is a computation: its success may wait for company (here: for a whole second); the
    # probe acts outside the run.
    monkeypatch.setattr(journal_module, "LINGER_S", 1.0)
    graph = chain(
        start("city"),
        node("greet", "template", {"template": "Weather for {{ start.city }}"}),
        node("probe", "test_probe"),
        end(stored="{{ probe.stored }}"),
    )
    run = make_run(graph)
    assert run_now(run) == "succeeded"
    run.refresh_from_db()
    assert run.outputs == {"stored": ["greet", "start"]}


def test_a_run_held_by_a_live_worker_is_not_claimed():
    later = timezone.now() + timedelta(seconds=30)
    run = make_run(status="running", lease_owner="alive", lease_expires_at=later, dispatch_attempts=1)
    assert run_now(run) is None
    run.refresh_from_db()
    assert run.lease_owner == "alive"
    assert run.status == "running"


def test_a_worker_that_lost_its_lease_stops_writing(engine_settings):
    engine_settings(CANCEL_POLL_S=0.05, HEARTBEAT_S=0.05)
    run = make_run(chain(start(), node("nap", "test_sleep", {"seconds": 5}), end()), inputs={})

    def claimed() -> bool:
        return Run.objects.filter(pk=run.pk, status="running").exclude(lease_owner="").exists()

    async def scenario():
        running = asyncio.create_task(run_execute(run_id=run.pk))
        # Stolen once it is held (not after a fixed pause: a slow machine may not have claimed it yet).
        while not await in_thread(claimed):
            await asyncio.sleep(0.02)
        await in_thread(lambda: Run.objects.filter(pk=run.pk).update(lease_owner="thief"))
        return await asyncio.wait_for(running, timeout=3)

    assert asyncio.run(scenario()) == "lost"
    run.refresh_from_db()
    assert run.status == "running"
    assert run.lease_owner == "thief"
    assert not RunEvent.objects.filter(run=run, type__startswith="run.", seq__gt=1).exists()


def test_cancel_of_a_pending_run_ends_it_at_once_with_an_event():
    run = make_run()
    run_cancel(run=run, user=run.workflow.owner)
    run.refresh_from_db()
    assert run.status == "cancelled"
    assert run.finished_at is not None
    assert event_types(run) == [("run.cancelled", "")]
    assert run_now(run) is None


def test_cancel_of_a_running_run_stops_it_within_seconds(engine_settings):
    engine_settings(CANCEL_POLL_S=0.05)
    run = make_run(chain(start(), node("nap", "test_sleep", {"seconds": 30}), end()), inputs={})

    async def scenario():
        running = asyncio.create_task(run_execute(run_id=run.pk))
        await asyncio.sleep(0.3)
        await in_thread(run_cancel, run=run, user=run.workflow.owner)
        return await asyncio.wait_for(running, timeout=5)

    assert asyncio.run(scenario()) == "cancelled"
    run.refresh_from_db()
    assert run.status == "cancelled"
    assert Task.objects.get(run=run, node_id="nap").status == "cancelled"
    assert event_types(run)[-1] == ("run.cancelled", "")


def test_the_reaper_fails_a_run_whose_attempts_are_spent():
    expired = timezone.now() - timedelta(seconds=5)
    run = make_run(status="running", lease_owner="dead", lease_expires_at=expired, dispatch_attempts=3, last_seq=4)
    TaskFactory(run=run, node_id="greet", name="greet", status="running", attempt=1)
    assert runs_reap()["failed"] == 1
    run.refresh_from_db()
    assert run.status == "failed"
    assert "lost 3 times" in run.error
    assert run.last_seq == 5
    assert event_types(run) == [("run.failed", "")]
    assert Task.objects.get(run=run, node_id="greet").status == "cancelled"


def test_the_reaper_cancels_an_orphaned_run_whose_cancel_was_requested():
    expired = timezone.now() - timedelta(seconds=5)
    run = make_run(status="running", lease_owner="dead", lease_expires_at=expired, cancel_requested=True)
    assert runs_reap()["cancelled"] == 1
    run.refresh_from_db()
    assert run.status == "cancelled"


@pytest.mark.usefixtures("embedded")
def test_the_reaper_resumes_a_run_whose_lease_expired():
    """Embedded mode: the reaper releases the run and the in-process engine finishes it."""
    expired = timezone.now() - timedelta(seconds=5)
    run = make_run(status="running", lease_owner="dead", lease_expires_at=expired, dispatch_attempts=1)
    TaskFactory(run=run, node_id="greet", name="greet", status="succeeded", attempt=1, output_data={"text": "Hi"})
    assert runs_reap()["resumed"] == 1
    deadline = timezone.now() + timedelta(seconds=10)
    while timezone.now() < deadline:
        run.refresh_from_db()
        if run.is_finished:
            break
        asyncio.run(asyncio.sleep(0.05))
    assert run.status == "succeeded"
    assert run.outputs == {"text": "Hi", "n": 1}
    assert run.dispatch_attempts == 2


def test_the_reaper_leaves_live_runs_alone():
    later = timezone.now() + timedelta(seconds=30)
    run = make_run(status="running", lease_owner="alive", lease_expires_at=later)
    assert runs_reap() == {"resumed": 0, "failed": 0, "cancelled": 0, "redispatched": 0}
    run.refresh_from_db()
    assert run.lease_owner == "alive"


def test_parallel_branches_write_gapless_seq():
    graph = {
        "nodes": [start(), *[node(f"b{i}", "test_sleep", {"seconds": 0.01}) for i in range(8)], end()],
        "edges": [edge("start", f"b{i}") for i in range(8)] + [edge(f"b{i}", "end") for i in range(8)],
    }
    run = make_run(graph, inputs={})
    assert run_now(run) == "succeeded"
    seqs = list(RunEvent.objects.filter(run=run).order_by("seq").values_list("seq", flat=True))
    assert seqs == list(range(1, 2 + 2 * 10 + 1))


def test_the_celery_task_executes_the_run():
    from workflows.tasks import run_execute_task

    run = make_run()
    run_execute_task.apply(args=[str(run.pk)])
    run.refresh_from_db()
    assert run.status == "succeeded"
