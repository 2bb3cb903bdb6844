"""Results out (GET /api/v1/runs/export/): the runs a user may see as JSON lines or CSV, filtered, streamed in
constant memory."""

import csv
import io
import json
import tracemalloc
from datetime import UTC, datetime, timedelta

import pytest
from asgiref.sync import sync_to_async
from django.db import connection, connections
from django.test import AsyncClient

from tests.factories import RunFactory, WorkflowFactory, WorkflowMemberFactory
from workflows.models import Run

# On PostgreSQL and on SQLite (the embedded mode), but for the tests marked `services`.
pytestmark = pytest.mark.django_db

URL = "/api/v1/runs/export/"
T0 = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)


def made(workflow, *, created_at: datetime, **fields) -> Run:
    run = RunFactory(workflow=workflow, **fields)
    Run.objects.filter(pk=run.pk).update(created_at=created_at)  # auto_now_add: set after
    run.refresh_from_db()
    return run


@pytest.fixture
def runs(user, other_user):
    weather = WorkflowFactory(owner=user, name="Weather")
    failed = made(
        weather,
        created_at=T0,
        status="failed",
        inputs={"city": "Oslo"},
        outputs=None,
        error="Node call failed",
        started_at=T0,
        finished_at=T0 + timedelta(milliseconds=1500),
    )
    succeeded = made(
        weather,
        created_at=T0 + timedelta(hours=1),
        status="succeeded",
        inputs={"city": "=cmd|' /C calc'!A0", "days": 3},
        outputs={"text": "Sunny, 3 days", "ok": True, "detail": {"t": 21}},
        started_at=T0 + timedelta(hours=1),
        finished_at=T0 + timedelta(hours=1, seconds=2),
        retry_of=failed,
    )
    pending = made(weather, created_at=T0 + timedelta(hours=2), status="pending", inputs={"city": "Rome"})
    made(WorkflowFactory(owner=other_user), created_at=T0, status="succeeded", inputs={"secret": "theirs"})
    return {"workflow": weather, "failed": failed, "succeeded": succeeded, "pending": pending}


def export(client, **params):
    response = client.get(URL, params)
    assert response.status_code == 200, response.json()
    assert response.streaming
    return response, b"".join(response.streaming_content).decode()


def test_jsonl_has_each_visible_run_oldest_first_with_its_inputs_outputs_error_and_duration(user_client, runs):
    response, text = export(user_client)

    assert response["Content-Type"] == "application/x-ndjson; charset=utf-8"
    assert response["Content-Disposition"].startswith('attachment; filename="runs-')
    lines = [json.loads(line) for line in text.splitlines()]
    assert [line["id"] for line in lines] == [str(runs[name].pk) for name in ("failed", "succeeded", "pending")]
    first, second, third = lines
    assert first == {
        "id": str(runs["failed"].pk),
        "workflow": str(runs["workflow"].pk),
        "status": "failed",
        "trigger": "manual",
        "version": "",
        "retry_of": None,
        "inputs": {"city": "Oslo"},
        "outputs": None,
        "error": "Node call failed",
        "created_at": "2026-12-01T08:00:00.000000Z",
        "started_at": "2026-12-01T08:00:00.000000Z",
        "finished_at": "2026-12-01T08:00:01.500000Z",
        "duration_ms": 1500,
    }
    assert second["outputs"] == {"text": "Sunny, 3 days", "ok": True, "detail": {"t": 21}}
    assert (second["retry_of"], second["duration_ms"]) == (str(runs["failed"].pk), 2000)
    assert (third["status"], third["duration_ms"], third["finished_at"]) == ("pending", None, None)


def test_filters_select_by_workflow_status_and_creation_time(user_client, user, runs):
    WorkflowFactory(owner=user)  # another workflow of theirs, with no runs
    made(WorkflowFactory(owner=user), created_at=T0, status="failed")

    def ids(**params) -> list[str]:
        return [json.loads(line)["id"] for line in export(user_client, **params)[1].splitlines()]

    workflow = str(runs["workflow"].pk)
    assert len(ids(workflow=workflow)) == 3
    assert ids(workflow=workflow, status="failed") == [str(runs["failed"].pk)]
    assert ids(workflow=workflow, status="failed,pending") == [str(runs["failed"].pk), str(runs["pending"].pk)]
    assert ids(workflow=workflow, since="2026-12-01T08:30:00Z") == [str(runs["succeeded"].pk), str(runs["pending"].pk)]
    assert ids(workflow=workflow, since="2026-12-01T09:00:00", until="2026-12-01T10:00:00+00:00") == [
        str(runs["succeeded"].pk)
    ]
    assert ids(workflow=workflow, until="2026-12-01") == []
    assert len(ids(since="2026-12-01", until="2026-12-02")) == 4


def test_a_member_sees_the_runs_of_the_workflow_and_nobody_else_does(client_for, user, other_user, runs):
    def workflows_seen(who) -> list[str]:
        return sorted(json.loads(line)["workflow"] for line in export(client_for(who))[1].splitlines())

    theirs = Run.objects.exclude(workflow=runs["workflow"]).get().workflow_id
    assert workflows_seen(other_user) == [str(theirs)]
    assert str(theirs) not in workflows_seen(user)
    WorkflowMemberFactory(workflow=runs["workflow"], user=other_user, role="viewer")
    assert workflows_seen(other_user) == sorted([str(theirs), *[str(runs["workflow"].pk)] * 3])


def test_csv_flattens_one_level_of_inputs_and_outputs_into_columns(user_client, runs):
    response, text = export(user_client, format="csv", workflow=str(runs["workflow"].pk))

    assert response["Content-Type"] == "text/csv; charset=utf-8"
    rows = list(csv.DictReader(io.StringIO(text)))
    assert list(rows[0]) == [
        "id",
        "workflow",
        "status",
        "trigger",
        "version",
        "retry_of",
        "error",
        "inputs.city",
        "inputs.days",
        "outputs.detail",
        "outputs.ok",
        "outputs.text",
        "created_at",
        "started_at",
        "finished_at",
        "duration_ms",
    ]
    failed, succeeded, pending = rows
    assert (failed["inputs.city"], failed["inputs.days"], failed["outputs.text"]) == ("Oslo", "", "")
    assert (failed["error"], failed["duration_ms"], failed["retry_of"]) == ("Node call failed", "1500", "")
    # A string stays as it is, except what a spreadsheet would run as a formula; other values are JSON.
    assert succeeded["inputs.city"] == "'=cmd|' /C calc'!A0"
    assert (succeeded["inputs.days"], succeeded["outputs.ok"]) == ("3", "true")
    assert json.loads(succeeded["outputs.detail"]) == {"t": 21}
    assert succeeded["outputs.text"] == "Sunny, 3 days"
    assert (pending["status"], pending["finished_at"], pending["duration_ms"]) == ("pending", "", "")


def test_csv_with_too_many_keys_keeps_the_side_as_one_json_column(user_client, user, settings):
    from workflows.execution import export as export_module

    workflow = WorkflowFactory(owner=user)
    wide = {f"k{i:03}": i for i in range(export_module.MAX_FLATTENED_KEYS + 1)}
    made(workflow, created_at=T0, inputs=wide, outputs={"text": "x"})

    rows = list(csv.DictReader(io.StringIO(export(user_client, format="csv")[1])))

    assert "inputs" in rows[0]
    assert "outputs.text" in rows[0]
    assert json.loads(rows[0]["inputs"]) == wide


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"since": "yesterday"}, "since"),
        ({"until": "2026-13-45"}, "until"),
        ({"since": "2026-12-02", "until": "2026-12-01"}, "until"),
        ({"format": "xml"}, "format"),
        ({"status": "done"}, "status"),
        ({"status": "failed,"}, "status"),
        ({"workflow": "not-a-uuid"}, "workflow"),
        ({"stauts": "failed"}, "stauts"),
        ({"": "38774"}, "(a parameter without a name)"),
    ],
)
def test_a_bad_parameter_is_a_400_naming_it(user_client, params, field):
    response = user_client.get(URL, params)
    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"
    assert response.json()["field"] == field


def test_a_workflow_the_user_cannot_see_is_a_404(user_client, other_user):
    workflow = WorkflowFactory(owner=other_user)
    assert user_client.get(URL, {"workflow": str(workflow.pk)}).status_code == 404


def test_an_anonymous_caller_is_refused(api_client):
    assert api_client.get(URL).status_code in (401, 403)


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
async def test_under_asgi_the_export_is_an_asynchronous_stream(user, runs):
    client = AsyncClient()
    await client.aforce_login(user)

    response = await client.get(URL, {"format": "jsonl"})

    assert response.status_code == 200
    assert response.is_async  # not read whole into memory by Django to serve it
    text = b"".join([piece async for piece in response.streaming_content]).decode()
    await sync_to_async(connections.close_all)()  # the request thread's (closed as a request ends, but in tests)
    assert [json.loads(line)["id"] for line in text.splitlines()] == [
        str(runs[name].pk) for name in ("failed", "succeeded", "pending")
    ]


def runs_insert(workflow, count: int) -> None:
    """``count`` finished runs of ``workflow`` in one INSERT ... SELECT: inputs of ~250 bytes, outputs of
    ~350. Fields not set here get their model defaults."""
    explicit = {
        "id": "gen_random_uuid()",
        "workflow_id": "%s",
        "status": "(ARRAY['succeeded', 'failed'])[1 + mod(n, 2)]",
        "inputs": "jsonb_build_object('city', 'city-' || n, 'note', repeat('x', 220))",
        "outputs": "jsonb_build_object('text', repeat('y', 320), 'n', n)",
        "created_at": "now() - make_interval(secs => n)",
        "started_at": "now() - make_interval(secs => n)",
        "finished_at": "now() - make_interval(secs => n) + interval '250 milliseconds'",
        "updated_at": "now()",
    }
    columns, values, params = [], [], []
    for field in Run._meta.concrete_fields:
        columns.append(connection.ops.quote_name(field.column))
        if field.column in explicit:
            values.append(explicit[field.column])
            if field.column == "workflow_id":
                params.append(workflow.pk)
        elif field.null:
            values.append("NULL")
        else:
            values.append("%s")
            params.append(field.get_db_prep_save(field.get_default(), connection))
    table = connection.ops.quote_name(Run._meta.db_table)
    sql = f"INSERT INTO {table} ({', '.join(columns)}) SELECT {', '.join(values)} FROM generate_series(1, %s) AS n"  # noqa: S608
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, count])


@pytest.mark.slow
@pytest.mark.services
@pytest.mark.parametrize("export_format", ["jsonl", "csv"])
def test_100000_runs_are_exported_in_bounded_memory(user, user_client, export_format):
    count = 100_000
    runs_insert(WorkflowFactory(owner=user), count)
    response = user_client.get(URL, {"format": export_format})
    assert response.status_code == 200

    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        lines = size = 0
        for piece in response.streaming_content:
            lines += piece.count(b"\n")
            size += len(piece)
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()

    assert lines == count + (1 if export_format == "csv" else 0)
    assert size > 55_000_000  # the whole export would not fit in the bound below
    assert peak < 30_000_000, f"peak memory growth {peak / 1e6:.1f} MB"
