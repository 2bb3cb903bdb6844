"""Large outputs in object storage (workflows/execution/large_outputs.py, docs/large-outputs.md).

An output over OUTPUT_STORE_ABOVE_BYTES is written to STORAGES["outputs"] before the row that refers
to it; the rows and events keep a reference; the API, wait answers, the export and a resumed run read
it back (inline, up to OUTPUT_INLINE_MAX_BYTES an answer; past it, a link that streams it); retention
deletes it with its run; a missing object is a clear 404 or an ``error`` in the reference, never a
500. On PostgreSQL and on SQLite (the embedded journal), like every ``journal`` test. The threshold is
lowered to 1000 bytes, so that the values stay small; one test keeps the default (256 KiB).
"""

import asyncio
import json
import os
import uuid
from datetime import timedelta

import pytest
from channels.auth import AuthMiddlewareStack
from channels.db import database_sync_to_async
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.core.files.storage import storages
from django.utils import timezone
from knox.models import AuthToken

from config.conf import MIB, weft_settings
from config.routing import websocket_urlpatterns
from tests.engine.conftest import chain, end, node, start
from tests.factories import AppFactory, RunFactory, TaskFactory, UserFactory, WorkflowFactory
from workflows.execution.large_outputs import MARK, OutputStore, object_name, orphan_objects_sweep
from workflows.execution.retry import run_retry
from workflows.execution.runner import run_execute
from workflows.models import Run, RunEvent, Task
from workflows.retention import retention_purge
from workflows.services import workflow_create

pytestmark = pytest.mark.journal
#: The run executes on the journal's own thread and connection: its rows must be committed.
executed = pytest.mark.django_db(transaction=True)

THRESHOLD = 1000
BIG = "x" * 3000
BIG_GRAPH = chain(
    start(),
    node("big", "template", {"template": "{{ 'x' * 3000 }}"}),
    node("small", "template", {"template": "{{ big.text | length }}"}),
    end(text="{{ big.text }}", length="{{ small.text }}"),
)


@pytest.fixture(autouse=True)
def outputs_root(settings, tmp_path):
    """Stored outputs under the test's own folder, over a threshold of THRESHOLD bytes."""
    root = tmp_path / "outputs"
    settings.STORAGES = {
        **settings.STORAGES,
        "outputs": {"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(root)}},
    }
    settings.WEFT = {**settings.WEFT, "OUTPUT_STORE_ABOVE_BYTES": THRESHOLD}
    return root


def run_now(graph: dict, *, owner=None) -> Run:
    run = RunFactory(workflow=WorkflowFactory(owner=owner or UserFactory()), graph=graph, inputs={})
    asyncio.run(asyncio.wait_for(run_execute(run_id=run.pk), timeout=30))
    run.refresh_from_db()
    return run


def stored_run(*, owner=None, workflow=None, status="succeeded") -> Run:
    """A run as the journal leaves one with a large output: node ``big``'s and the run's outputs in storage."""
    workflow = workflow or WorkflowFactory(owner=owner or UserFactory())
    run = RunFactory(workflow=workflow, graph=BIG_GRAPH, inputs={}, status=status)
    store = OutputStore(run_id=run.pk)
    run.outputs = store.stored({"text": BIG, "length": "3000"})
    run.save(update_fields=["outputs"])
    TaskFactory(run=run, node_id="big", status="succeeded", attempt=1, output_data=store.stored({"text": BIG}))
    TaskFactory(run=run, node_id="small", status="succeeded", attempt=1, output_data={"text": "3000"})
    run.refresh_from_db()
    return run


def reference(value) -> dict:
    assert isinstance(value, dict), value
    assert MARK in value, value
    return value[MARK]


def stored_text(run: Run, value) -> str:
    with storages["outputs"].open(object_name(run_id=run.pk, key=reference(value)["key"])) as file:
        return file.read().decode()


@executed
def test_an_output_over_256_kib_is_stored_once_and_the_rows_and_events_keep_a_reference(settings, outputs_root):
    settings.WEFT = {key: value for key, value in settings.WEFT.items() if key != "OUTPUT_STORE_ABOVE_BYTES"}
    assert weft_settings.NODE_OUTPUT_MAX_BYTES == 50 * MIB
    big, small = "x" * 270_000, "y" * 260_000
    graph = chain(
        start(),
        node("big", "template", {"template": "{{ 'x' * 270000 }}"}),
        node("small", "template", {"template": "{{ 'y' * 260000 }}"}),
        end(text="{{ big.text }}"),
    )

    run = run_now(graph)

    assert run.status == "succeeded", run.error
    stored = Task.objects.get(run=run, node_id="big").output_data
    assert json.loads(stored_text(run, stored)) == {"text": big}
    assert reference(stored)["bytes"] == len(json.dumps({"text": big}, separators=(",", ":")))
    assert reference(stored)["url"] == f"/api/v1/runs/{run.pk}/outputs/{reference(stored)['key']}/"
    assert Task.objects.get(run=run, node_id="small").output_data == {"text": small}  # under: in its row
    # The same value (big's output, the end node's, the run's outputs) is one object.
    assert reference(run.outputs) == reference(stored)
    assert reference(Task.objects.get(run=run, node_id="end").output_data) == reference(stored)
    assert os.listdir(outputs_root / "runs" / str(run.pk)) == [f"{reference(stored)['key']}.json"]
    assert run.stored_outputs
    assert RunEvent.objects.get(run=run, type="node.succeeded", node_id="big").data["output"] == stored
    assert RunEvent.objects.get(run=run, type="run.succeeded").data["outputs"] == run.outputs


@executed
def test_the_run_api_and_a_waited_answer_inline_stored_outputs(user, user_client):
    workflow = workflow_create(owner=user, name="Big", graph=BIG_GRAPH)

    waited = user_client.post(f"/api/v1/workflows/{workflow.pk}/runs/", {"inputs": {}, "wait": True}, format="json")

    assert waited.status_code == 200, waited.json()
    body = waited.json()
    assert body["outputs"] == {"text": BIG, "length": "3000"}
    tasks = {task["node_id"]: task["output"] for task in body["tasks"]}
    assert tasks["big"] == {"text": BIG}
    assert tasks["small"] == {"text": "3000"}
    read = user_client.get(f"/api/v1/runs/{body['id']}/").json()
    snapshot = asyncio.run(websocket_snapshot(user, body["id"]))
    by_node = lambda tasks: sorted(tasks, key=lambda task: task["node_id"])  # noqa: E731
    assert {**read, "tasks": by_node(read["tasks"])} == {**body, "tasks": by_node(body["tasks"])}
    assert {**snapshot, "tasks": by_node(snapshot["tasks"])} == {**body, "tasks": by_node(body["tasks"])}


async def websocket_snapshot(user, run_id) -> dict:
    """What ``/ws/runs/<id>/`` sends first, to ``user``."""
    token = await database_sync_to_async(lambda: AuthToken.objects.create(user)[1])()
    headers = [(b"authorization", f"Token {token}".encode())]
    application = AuthMiddlewareStack(URLRouter(websocket_urlpatterns))
    communicator = WebsocketCommunicator(application, f"/ws/runs/{run_id}/", headers=headers)
    connected, _ = await communicator.connect()
    assert connected
    snapshot = await communicator.receive_json_from(timeout=5)
    await communicator.disconnect()
    assert snapshot["type"] == "snapshot"
    return snapshot["data"]


@pytest.mark.django_db
def test_past_the_inline_budget_an_output_is_a_link_that_streams_it_to_whoever_may_see_the_run(
    settings, user, user_client, other_client
):
    run = stored_run(owner=user)
    settings.WEFT = {**settings.WEFT, "OUTPUT_INLINE_MAX_BYTES": 4000}  # the run's outputs fit, not the task's too

    body = user_client.get(f"/api/v1/runs/{run.pk}/").json()

    assert body["outputs"] == {"text": BIG, "length": "3000"}
    link = {task["node_id"]: task["output"] for task in body["tasks"]}["big"]
    assert link == Task.objects.get(run=run, node_id="big").output_data
    download = user_client.get(reference(link)["url"])
    assert download.status_code == 200
    assert download["Content-Type"] == "application/json"
    assert json.loads(b"".join(download.streaming_content)) == {"text": BIG}
    assert other_client.get(reference(link)["url"]).status_code == 404
    assert user_client.get(f"/api/v1/runs/{run.pk}/outputs/not-a-key/").status_code == 404
    assert user_client.get(f"/api/v1/runs/{uuid.uuid4()}/outputs/{reference(link)['key']}/").status_code == 404


@pytest.mark.django_db
def test_a_client_app_downloads_the_stored_outputs_of_its_own_runs_only(user, api_client):
    app, other = AppFactory(owner=user, api_secret="s1"), AppFactory(owner=user, api_secret="s2")
    run = stored_run(owner=user)
    Run.objects.filter(pk=run.pk).update(app=app)
    path = f"/api/v1/app/runs/{run.pk}/outputs/{reference(run.outputs)['key']}/"

    mine = api_client.get(path, HTTP_AUTHORIZATION=f"Bearer {app.api_key}:s1")
    theirs = api_client.get(path, HTTP_AUTHORIZATION=f"Bearer {other.api_key}:s2")

    assert mine.status_code == 200
    assert json.loads(b"".join(mine.streaming_content)) == {"text": BIG, "length": "3000"}
    assert theirs.status_code == 404


@pytest.mark.django_db
def test_a_deleted_object_is_a_clear_404_and_an_error_in_the_answer(user, user_client):
    run = stored_run(owner=user)
    big = Task.objects.get(run=run, node_id="big").output_data
    storages["outputs"].delete(object_name(run_id=run.pk, key=reference(big)["key"]))

    body = user_client.get(f"/api/v1/runs/{run.pk}/").json()
    download = user_client.get(reference(big)["url"])

    shown = {task["node_id"]: task["output"] for task in body["tasks"]}["big"]
    assert "no longer stored" in reference(shown)["error"]
    assert body["outputs"] == {"text": BIG, "length": "3000"}
    assert download.status_code == 404
    assert download.json()["code"] == "output_not_stored"


@pytest.mark.django_db
def test_the_export_inlines_stored_outputs(user, user_client):
    run = stored_run(owner=user)

    response = user_client.get("/api/v1/runs/export/")

    assert response.status_code == 200
    lines = [json.loads(line) for line in b"".join(response.streaming_content).decode().splitlines()]
    assert [line["outputs"] for line in lines if line["id"] == str(run.pk)] == [{"text": BIG, "length": "3000"}]


@pytest.mark.django_db
def test_retention_deletes_a_runs_objects_with_it(outputs_root, django_capture_on_commit_callbacks):
    long_ago = timezone.now() - timedelta(days=weft_settings.RETENTION_DAYS + 1)
    kept, purged = stored_run(), stored_run()
    Run.objects.filter(pk=purged.pk).update(created_at=long_ago, finished_at=long_ago)

    with django_capture_on_commit_callbacks(execute=True):
        report = retention_purge()

    assert report.runs == 1
    assert not (outputs_root / "runs" / str(purged.pk)).exists()
    assert len(os.listdir(outputs_root / "runs" / str(kept.pk))) == 2


@pytest.mark.django_db
def test_the_sweep_deletes_old_objects_of_runs_that_are_gone_only(outputs_root):
    run = stored_run()
    gone = uuid.uuid4()
    old = OutputStore(run_id=gone).stored({"text": BIG})
    young = OutputStore(run_id=gone).stored({"text": BIG + "y", "usage": {"prompt_tokens": 3}})
    assert young["usage"] == {"prompt_tokens": 3}  # metering reads it without the object
    two_hours_ago = (timezone.now() - timedelta(hours=2)).timestamp()
    os.utime(outputs_root / object_name(run_id=gone, key=reference(old)["key"]), (two_hours_ago, two_hours_ago))

    assert orphan_objects_sweep() == 1

    assert os.listdir(outputs_root / "runs" / str(gone)) == [f"{reference(young)['key']}.json"]
    assert len(os.listdir(outputs_root / "runs" / str(run.pk))) == 2


@executed
def test_a_resumed_run_reads_a_stored_output_back_and_one_gone_fails_the_node():
    graph = chain(start(), node("big", "template", {"template": "unused"}), end(n="{{ big.text | length }}"))

    def crashed_run(*, object_kept: bool) -> Run:
        expired = timezone.now() - timedelta(seconds=5)
        run = RunFactory(
            workflow=WorkflowFactory(owner=UserFactory()),
            graph=graph,
            inputs={},
            status="running",
            lease_owner="dead-worker",
            lease_expires_at=expired,
            dispatch_attempts=1,
        )
        stored = OutputStore(run_id=run.pk).stored({"text": BIG})
        if not object_kept:
            storages["outputs"].delete(object_name(run_id=run.pk, key=reference(stored)["key"]))
        TaskFactory(run=run, node_id="start", name="start", status="succeeded", attempt=1, output_data={})
        TaskFactory(run=run, node_id="big", name="big", status="succeeded", attempt=1, output_data=stored)
        return run

    resumed, broken = crashed_run(object_kept=True), crashed_run(object_kept=False)
    for run in (resumed, broken):
        asyncio.run(asyncio.wait_for(run_execute(run_id=run.pk), timeout=30))
        run.refresh_from_db()

    assert (resumed.status, resumed.outputs) == ("succeeded", {"n": 3000})  # the stored output, not "unused"
    assert broken.status == "failed"
    assert "Node big failed" in broken.error
    assert "no longer stored" in broken.error


@pytest.mark.django_db
def test_a_retry_copies_the_stored_outputs_it_reuses(user):
    workflow = workflow_create(owner=user, name="Retried", graph=BIG_GRAPH)
    failed = stored_run(owner=user, status="failed", workflow=workflow)

    retry = run_retry(run=failed, workflow=workflow, user=user)

    original = Task.objects.get(run=failed, node_id="big").output_data
    copied = Task.objects.get(run=retry, node_id="big").output_data
    assert reference(copied)["key"] != reference(original)["key"]
    assert stored_text(retry, copied) == stored_text(failed, original)
    assert Run.objects.get(pk=retry.pk).stored_outputs


@executed
def test_an_output_the_storage_refuses_fails_its_node_with_the_reason(settings, tmp_path):
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    settings.STORAGES = {
        **settings.STORAGES,
        "outputs": {"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(blocked)}},
    }

    run = run_now(BIG_GRAPH)

    assert run.status == "failed"
    big = Task.objects.get(run=run, node_id="big")
    assert big.status == "failed"
    assert "its output could not be stored (the object storage refused it" in big.error
    assert big.output_data is None
