"""A finished run's usage: one row per (provider, model), tokens from its llm tasks, written once."""

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from config.errors import Conflict
from history.models import UsageMetric
from tests.engine.conftest import chain, end, node, start
from tests.factories import AppFactory, LLMProviderFactory, RunFactory, TaskFactory, UserFactory
from tests.fakes.openai_server import Answer
from workflows.execution.services import run_start, run_wait
from workflows.models import Run
from workflows.services import workflow_create
from workflows.usage import usage_record_ended, usage_record_for_run


def finished_run(**fields):
    now = timezone.now()
    defaults = {"status": "succeeded", "started_at": now - timedelta(seconds=2), "finished_at": now}
    return RunFactory(**{**defaults, **fields})


def llm_task(run, node_id: str, prompt: int, completion: int, **fields):
    usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    defaults = {"node_type": "llm", "status": "succeeded", "output_data": {"text": "ok", "usage": usage}}
    return TaskFactory(run=run, node_id=node_id, **{**defaults, **fields})


@pytest.mark.django_db(transaction=True)
def test_usage_rows_match_a_run_against_the_fake_llm(settings, fake_openai, allow_loopback):
    """Two llm nodes on two providers (one inside an iteration): a row for each, tokens as the server counted."""
    settings.EMBEDDED = True
    user = UserFactory()
    first = LLMProviderFactory(owner=user, name="fast", base_url=fake_openai.base_url, api_key=fake_openai.api_key)
    second = LLMProviderFactory(owner=user, name="smart", base_url=fake_openai.base_url, api_key=fake_openai.api_key)
    each = {
        "items": "{{ start.items }}",
        "graph": chain(
            node("in", "start"),
            node("ask", "llm", {"provider": "{{ start.provider }}", "prompt": "{{ item }}"}),
            node("out", "end", {"outputs": {"text": "{{ ask.text }}"}}),
        ),
    }
    graph = chain(
        start("provider", items="array"),
        node("each", "iteration", each),
        node("sum", "llm", {"provider": str(second.pk), "model": "big-model", "prompt": "Sum up."}),
        end(text="{{ sum.text }}"),
    )
    workflow = workflow_create(owner=user, name="Two models", graph=graph)
    fake_openai.script(
        Answer(text="a", usage={"prompt_tokens": 10, "completion_tokens": 1, "total_tokens": 11}),
        Answer(text="b", usage={"prompt_tokens": 12, "completion_tokens": 2, "total_tokens": 14}),
        Answer(text="sum", usage={"prompt_tokens": 30, "completion_tokens": 5, "total_tokens": 35}),
    )
    run = run_start(workflow=workflow, user=user, inputs={"provider": str(first.pk), "items": ["x", "y"]})
    run = run_wait(run=run, timeout=30)
    assert run.status == "succeeded", run.error

    rows = usage_record_for_run(run_id=run.pk)

    found = {(row.provider, row.model): (row.tokens_in, row.tokens_out) for row in rows}
    assert found == {("fast", "fake-model"): (22, 3), ("smart", "big-model"): (30, 5)}
    assert all((row.user, row.workflow, row.run, row.app) == (user, workflow, run, None) for row in rows)
    # start, 2 × (in, ask, out), each, sum, end
    assert sum(row.node_count for row in rows) == 10
    assert sum(row.duration_ms for row in rows) == int((run.finished_at - run.started_at).total_seconds() * 1000)
    assert sorted(row.node_count for row in rows) == [0, 10]


@pytest.mark.django_db
def test_a_second_call_writes_nothing_new():
    run = finished_run()
    llm_task(run, "ask", 5, 7)
    first = usage_record_for_run(run_id=run.pk)
    second = usage_record_for_run(run_id=str(run.pk))
    assert [row.pk for row in second] == [row.pk for row in first]
    assert UsageMetric.objects.filter(run=run).count() == 1


@pytest.mark.django_db
def test_a_run_without_llm_gets_one_row_with_its_duration_and_nodes():
    run = finished_run(app=AppFactory())
    for node_id in ("start", "greet", "end"):
        TaskFactory(run=run, node_id=node_id, status="succeeded", output_data={"text": "hi"})
    TaskFactory(run=run, node_id="not_taken", status="skipped")
    [row] = usage_record_for_run(run_id=run.pk)
    assert (row.provider, row.model, row.tokens_in, row.tokens_out) == ("", "", 0, 0)
    assert (row.node_count, row.duration_ms) == (3, 2000)
    assert (row.user, row.app, row.workflow) == (run.triggered_by, run.app, run.workflow)


@pytest.mark.django_db
def test_failed_llm_tasks_count_what_they_used_and_unknown_providers_keep_their_reference():
    run = finished_run(status="failed", graph={"nodes": [{"id": "ask", "type": "llm", "config": {"provider": "gone"}}]})
    llm_task(run, "ask", 4, 0, status="failed")
    llm_task(run, "retry", 0, 0, status="cancelled")
    [row] = usage_record_for_run(run_id=run.pk)
    assert (row.provider, row.model, row.tokens_in, row.tokens_out, row.node_count) == ("gone", "", 4, 0, 1)


@pytest.mark.django_db
def test_a_scheduled_run_counts_for_the_workflows_owner():
    run = finished_run(triggered_by=None)
    [row] = usage_record_for_run(run_id=run.pk)
    assert row.user == run.workflow.owner


@pytest.mark.django_db
@pytest.mark.parametrize("status", ["pending", "running"])
def test_an_unfinished_run_has_no_usage_yet(status):
    run = RunFactory(status=status)
    with pytest.raises(Conflict):
        usage_record_for_run(run_id=run.pk)
    assert not UsageMetric.objects.exists()


@pytest.mark.django_db
def test_the_admin_shows_the_tokens_per_user_and_per_app(client, staff_user):
    app = AppFactory(name="Shop")
    for prompt, completion in ((100, 10), (200, 20)):
        run = finished_run(app=app)
        llm_task(run, "ask", prompt, completion)
        usage_record_for_run(run_id=run.pk)
    client.force_login(staff_user)
    response = client.get("/admin/history/usagemetric/")
    assert response.status_code == 200
    by_app = response.context["usage_by_app"]
    assert [(row["app__name"], row["tokens_in"], row["tokens_out"]) for row in by_app] == [("Shop", 300, 30)]
    assert response.context["usage_total"]["tokens_in"] == 300
    assert "Shop" in response.content.decode()


def _metered(run) -> list[tuple]:
    return list(
        UsageMetric.objects.filter(run=run).values_list(
            "user_id",
            "app_id",
            "workflow_id",
            "provider",
            "model",
            "tokens_in",
            "tokens_out",
            "node_count",
            "duration_ms",
        )
    )


@pytest.mark.django_db
@pytest.mark.parametrize("by_app", [False, True], ids=["by a user", "by an app"])
def test_a_run_without_models_is_metered_when_it_ends_as_the_general_path_meters_it(by_app):
    """The row written at a run's end from its graph (one statement on PostgreSQL) is the general path's row."""
    rows = []
    for meter in ("general", "at the end"):
        run = finished_run(started_at=timezone.now() - timedelta(milliseconds=1234))
        if by_app:
            Run.objects.filter(pk=run.pk).update(triggered_by=None, app=AppFactory(owner=run.workflow.owner))
        for status in ("succeeded", "failed", "cancelled", "skipped"):
            TaskFactory(run=run, node_type="template", status=status)
        if meter == "general":
            usage_record_for_run(run_id=run.pk)
        else:
            usage_record_ended(run_id=run.pk, graph=run.graph)
            usage_record_ended(run_id=run.pk, graph=run.graph)  # a second call writes nothing
        (row,) = _metered(run)
        assert row[0] == run.workflow.owner_id
        assert row[7] == 2  # the succeeded and the failed task ran
        assert 1234 <= row[8] < 1234 + 1000
        rows.append(row[3:8])
    assert rows[0] == rows[1]


@pytest.mark.django_db
def test_a_run_that_used_a_model_is_metered_at_its_end_by_the_general_path():
    run = finished_run(graph={"nodes": [{"id": "ask", "type": "llm", "config": {"model": "m1"}}], "edges": []})
    llm_task(run, "ask", prompt=7, completion=3)

    usage_record_ended(run_id=run.pk, graph=run.graph)

    assert [row[5:7] for row in _metered(run)] == [(7, 3)]


@pytest.mark.django_db(transaction=True)
def test_a_run_metered_at_once_at_its_end_and_by_a_sweep_gets_one_row_and_no_error():
    """The two paths lock the run; whichever comes second writes nothing, whatever its snapshot saw."""

    def meter(call, barrier: threading.Barrier, errors: list) -> None:
        try:
            barrier.wait(timeout=10)
            call()
        except Exception as exc:
            errors.append(exc)
        finally:
            connection.close()

    for _ in range(10):
        run = finished_run()
        TaskFactory(run=run, node_type="template", status="succeeded")
        barrier, errors = threading.Barrier(2), []
        calls = [
            lambda run=run: usage_record_ended(run_id=run.pk, graph=run.graph),
            lambda run=run: usage_record_for_run(run_id=run.pk),
        ]
        threads = [threading.Thread(target=meter, args=(call, barrier, errors)) for call in calls]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert errors == []
        assert UsageMetric.objects.filter(run=run).count() == 1
