"""Outputs no database would take, through the database journal: stored cleaned, acted on once.

PostgreSQL's jsonb refuses ``\\u0000`` and its text a NUL; a lone surrogate does not encode and
NaN is not JSON. A run meeting one of them used to stay ``running`` until the reaper resumed it
(sending its requests again) and finally failed it. Now the value is stored cleaned, the run
ends, and a node with effects is executed exactly once, even when the database refuses what it
returned. On PostgreSQL and on SQLite (the embedded journal), like every ``journal`` test.
"""

import asyncio

import pytest
from django.db import connection

from tests.engine.conftest import EXECUTIONS, chain, end, node, start
from tests.engine.test_outputs import FFFD
from tests.factories import RunFactory, UserFactory, WorkflowFactory
from workflows.execution.runner import run_execute
from workflows.models import Run, RunEvent, Task

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.journal]

#: What test_made's "refusable" output holds: the test's stand-in for anything the database refuses
#: in a row after cleaning (a size, a limit of its own).
REFUSED_WORD = "refuse-me"


def run_now(graph: dict) -> Run:
    run = RunFactory(workflow=WorkflowFactory(owner=UserFactory()), graph=graph, inputs={})
    asyncio.run(asyncio.wait_for(run_execute(run_id=run.pk), timeout=30))
    run.refresh_from_db()
    return run


def stored_task(run: Run, node_id: str) -> Task:
    return Task.objects.get(run=run, node_id=node_id)


def stored_events(run: Run, event_type: str) -> list[dict]:
    return list(RunEvent.objects.filter(run=run, type=event_type).order_by("seq").values_list("data", flat=True))


@pytest.fixture
def database_refusing_a_word():
    """The database refuses an event whose data holds REFUSED_WORD (PostgreSQL: as a data exception)."""
    if connection.vendor == "postgresql":
        create = [
            "CREATE FUNCTION test_refuse_word() RETURNS trigger AS $$ BEGIN"
            " RAISE EXCEPTION 'value refused by the test' USING ERRCODE = '22000'; END $$ LANGUAGE plpgsql",
            "CREATE TRIGGER test_refuse_word BEFORE INSERT ON run_events FOR EACH ROW"
            f" WHEN (NEW.data::text LIKE '%{REFUSED_WORD}%') EXECUTE FUNCTION test_refuse_word()",
        ]
        drop = ["DROP TRIGGER test_refuse_word ON run_events", "DROP FUNCTION test_refuse_word()"]
    else:
        create = [
            "CREATE TRIGGER test_refuse_word BEFORE INSERT ON run_events"
            f" WHEN NEW.data LIKE '%{REFUSED_WORD}%' BEGIN SELECT RAISE(ABORT, 'value refused by the test'); END"
        ]
        drop = ["DROP TRIGGER test_refuse_word"]
    with connection.cursor() as cursor:
        for statement in create:
            cursor.execute(statement)
    yield
    with connection.cursor() as cursor:
        for statement in drop:
            cursor.execute(statement)


def test_an_http_answer_with_nul_nan_and_a_lone_surrogate_is_stored_cleaned_and_requested_once(
    fake_http, allow_loopback
):
    text = fake_http.url("/body?type=text/plain&text=a%00b")
    data = fake_http.url("/body?type=application/json&text=" + '{"s":"x\\u0000y","n":NaN,"lone":"\\ud800"}')
    graph = chain(
        start(),
        node("text", "http_request", {"url": text}),
        node("data", "http_request", {"url": data}),
        end(body="{{ text.body }}", json="{{ data.json }}"),
    )
    run = run_now(graph)
    assert run.status == "succeeded", run.error
    assert [request["path"] for request in fake_http.requests] == ["/body", "/body"]
    clean_json = {"s": f"x{FFFD}y", "n": None, "lone": FFFD}
    assert run.outputs == {"body": f"a{FFFD}b", "json": clean_json}
    assert stored_task(run, "text").output_data["body"] == f"a{FFFD}b"
    assert stored_task(run, "data").output_data["json"] == clean_json
    assert [data["output"]["json"] for data in stored_events(run, "node.succeeded")[1:3]] == [None, clean_json]


def test_an_output_over_the_limit_fails_its_node_once_naming_the_limit(settings, fake_http, allow_loopback):
    settings.WEFT = {**settings.WEFT, "NODE_OUTPUT_MAX_BYTES": 1000}
    graph = chain(start(), node("call", "http_request", {"url": fake_http.url("/bytes?n=2000")}), end())
    run = run_now(graph)
    assert run.status == "failed"
    assert "over the limit of 1000 bytes" in run.error
    assert "WEFT_NODE_OUTPUT_MAX_BYTES" in run.error
    assert len(fake_http.requests) == 1
    assert stored_task(run, "call").status == "failed"


def test_deltas_outputs_and_error_texts_are_stored_cleaned():
    graph = chain(
        start(),
        node("streamed", "test_made", {"make": "nul", "deltas": True}),
        node("refused", "test_made", {"error": True}, on_failure="continue", default_output={}),
        end(text="{{ streamed.text }}", error="{{ refused.error }}"),
    )
    run = run_now(graph)
    assert run.status == "succeeded", run.error
    assert stored_events(run, "node.delta") == [{"text": f"part{FFFD}", "score": None, "lone": FFFD}]
    assert stored_task(run, "streamed").output_data == {"text": f"a{FFFD}b", f"k{FFFD}": 1}
    assert stored_task(run, "refused").error == f"refused: {FFFD} and {FFFD}"
    assert run.outputs == {"text": f"a{FFFD}b", "error": f"refused: {FFFD} and {FFFD}"}


def test_a_run_failing_with_such_an_error_ends_failed_with_it_cleaned():
    run = run_now(chain(start(), node("refused", "test_made", {"error": True}), end()))
    assert run.status == "failed"
    assert run.error == f"Node refused failed: refused: {FFFD} and {FFFD}"
    assert stored_events(run, "run.failed")[0]["error"] == run.error


@pytest.mark.usefixtures("database_refusing_a_word")
def test_a_success_the_database_refuses_is_stored_as_a_failure_executed_once_and_the_run_goes_on():
    made = node("made", "test_made", {"make": "refusable"}, on_failure="continue", default_output={"text": "default"})
    run = run_now(chain(start(), made, end(text="{{ made.text }}", error="{{ made.error }}")))
    assert run.status == "succeeded", run.error
    assert EXECUTIONS[(str(run.pk), "made", "")] == 1
    error = run.outputs["error"]
    assert error == "The node succeeded, but its output could not be stored (value refused by the test)."
    assert run.outputs["text"] == "default"
    task = stored_task(run, "made")
    assert (task.status, task.error, task.output_data) == ("failed", error, {"text": "default", "error": error})
    events = RunEvent.objects.filter(run=run, node_id="made").order_by("seq")
    assert [(event.type, event.data.get("error")) for event in events] == [
        ("node.started", None),
        ("node.succeeded", error),
        ("node.failed", error),
    ]


@pytest.mark.usefixtures("database_refusing_a_word")
def test_a_refused_success_with_on_failure_fail_ends_the_run_failed_not_running():
    run = run_now(chain(start(), node("made", "test_made", {"make": "refusable"}), end()))
    assert run.status == "failed"
    assert run.error.startswith("Node made failed: The node succeeded, but its output could not be stored")
    assert EXECUTIONS[(str(run.pk), "made", "")] == 1
    assert (run.lease_owner, run.dispatch_attempts) == ("", 1)
