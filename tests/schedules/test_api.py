"""The schedules API: create/change/delete, pause/resume/run-now, and who may do what."""

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from history.models import AuditLog
from tests.factories import SIMPLE_GRAPH, ScheduledWorkflowFactory, WorkflowFactory, WorkflowMemberFactory
from workflows.models import Run, ScheduledWorkflow, WorkflowMember
from workflows.releases.services import workflow_publish
from workflows.schedules.services import schedule_create
from workflows.services import workflow_update

LIST_URL = "/api/v1/schedules/"


@pytest.fixture
def workflow(workflow):
    """The runnable workflow of tests/schedules/conftest.py."""
    return workflow


def test_a_schedule_is_created_for_a_workflow_one_can_run(user, user_client, workflow):
    response = user_client.post(
        LIST_URL,
        {
            "workflow": str(workflow.pk),
            "cron": "*/15  9-17 * * 1-5",
            "timezone": "Europe/Paris",
            "inputs": {"city": "Lyon"},
            "max_retries": 5,
        },
    )

    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["workflow"] == str(workflow.pk)
    assert body["cron"] == "*/15 9-17 * * 1-5"
    assert body["timezone"] == "Europe/Paris"
    assert body["status"] == "active"
    assert body["max_retries"] == 5
    schedule = ScheduledWorkflow.objects.get(pk=body["id"])
    assert schedule.owner == user
    assert schedule.cron_expression == "*/15 9-17 * * 1-5"
    assert schedule.inputs == {"city": "Lyon"}
    # When it fires next: a tick of its cron, in its time zone (a weekday, 9:00 to 17:45 in Paris).
    assert datetime.fromisoformat(body["next_run_at"]) == schedule.next_fire_at
    local = schedule.next_fire_at.astimezone(ZoneInfo("Europe/Paris"))
    assert (local.weekday() < 5, 9 <= local.hour <= 17, local.minute % 15) == (True, True, 0)


def test_timezone_defaults_to_utc(user_client, workflow):
    response = user_client.post(LIST_URL, {"workflow": str(workflow.pk), "cron": "0 * * * *"})

    assert response.status_code == 201
    assert response.json()["timezone"] == "UTC"


@pytest.mark.parametrize(
    "cron",
    ["bogus", "61 * * * *", "* * * * * *", "* * *", "0 0 31 2 *", "*/0 * * * *", "", "x" * 256],
)
def test_a_bad_cron_is_a_400_naming_cron(user_client, workflow, cron):
    response = user_client.post(LIST_URL, {"workflow": str(workflow.pk), "cron": cron})

    assert response.status_code == 400
    assert "cron" in response.json()
    assert not ScheduledWorkflow.objects.exists()


@pytest.mark.parametrize("zone", ["Mars/Olympus", "../../etc/passwd", "", "Europe/" + "x" * 64])
def test_a_bad_timezone_is_a_400_naming_timezone(user_client, workflow, zone):
    response = user_client.post(LIST_URL, {"workflow": str(workflow.pk), "cron": "0 * * * *", "timezone": zone})

    assert response.status_code == 400
    assert "timezone" in response.json()
    assert not ScheduledWorkflow.objects.exists()


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"max_retries": -1}, "max_retries"),
        ({"inputs": ["not", "an", "object"]}, "inputs"),
        ({"inputs": {"city": "Ly\x00on"}}, "inputs"),
        ({"cron_expression": "0 * * * *"}, "cron_expression"),
        ({"status": "paused", "paused_by": "me"}, "paused_by"),
    ],
)
def test_bad_schedule_input_is_a_400(user_client, workflow, extra, field):
    response = user_client.post(LIST_URL, {"workflow": str(workflow.pk), "cron": "0 * * * *", **extra})

    assert response.status_code == 400
    assert field in response.json()


def test_a_schedule_needs_a_workflow_one_can_run(user, user_client, other_user):
    theirs = WorkflowFactory(owner=other_user)
    watched = WorkflowFactory(owner=other_user)
    WorkflowMemberFactory(workflow=watched, user=user, role=WorkflowMember.Role.VIEWER)
    runnable = WorkflowFactory(owner=other_user)
    WorkflowMemberFactory(workflow=runnable, user=user, role=WorkflowMember.Role.EXECUTOR)

    for workflow_id in (theirs.pk, watched.pk, "not-a-uuid"):
        response = user_client.post(LIST_URL, {"workflow": str(workflow_id), "cron": "0 * * * *"})
        assert response.status_code == 400
        assert "workflow" in response.json()
    assert user_client.post(LIST_URL, {"workflow": str(runnable.pk), "cron": "0 * * * *"}).status_code == 201
    assert ScheduledWorkflow.objects.get().workflow == runnable


def test_another_users_schedule_is_invisible(user, user_client, other_user, workflow):
    mine = ScheduledWorkflowFactory(workflow=workflow)
    theirs = ScheduledWorkflowFactory(workflow=WorkflowFactory(owner=other_user))

    assert [item["id"] for item in user_client.get(LIST_URL).json()["results"]] == [str(mine.pk)]
    url = f"{LIST_URL}{theirs.pk}/"
    assert user_client.get(url).status_code == 404
    assert user_client.patch(url, {"cron": "1 * * * *"}).status_code == 404
    assert user_client.delete(url).status_code == 404
    theirs.refresh_from_db()
    assert theirs.cron_expression == "*/5 * * * *"


def test_the_maker_changes_and_deletes_a_schedule(user_client, workflow):
    schedule = ScheduledWorkflowFactory(workflow=workflow)
    url = f"{LIST_URL}{schedule.pk}/"

    response = user_client.patch(url, {"cron": "30 6 * * *", "timezone": "Asia/Tokyo"})

    assert response.status_code == 200, response.json()
    schedule.refresh_from_db()
    assert (schedule.cron_expression, schedule.timezone) == ("30 6 * * *", "Asia/Tokyo")
    assert user_client.patch(url, {"cron": "every day"}).status_code == 400
    assert user_client.put(url, {"workflow": str(workflow.pk), "cron": "0 * * * *"}).status_code == 405
    assert user_client.delete(url).status_code == 204
    assert not ScheduledWorkflow.objects.exists()


def test_an_executor_sees_but_cannot_change_the_owners_schedule(user, other_user, client_for):
    workflow = WorkflowFactory(owner=other_user)
    WorkflowMemberFactory(workflow=workflow, user=user, role=WorkflowMember.Role.EXECUTOR)
    schedule = ScheduledWorkflowFactory(workflow=workflow)
    client = client_for(user)
    url = f"{LIST_URL}{schedule.pk}/"

    assert client.get(url).status_code == 200
    assert client.patch(url, {"cron": "1 * * * *"}).status_code == 403
    assert client.delete(url).status_code == 403
    assert ScheduledWorkflow.objects.filter(pk=schedule.pk, cron_expression="*/5 * * * *").exists()


def test_the_workflow_owner_changes_an_executors_schedule(user, user_client, other_user, workflow):
    WorkflowMemberFactory(workflow=workflow, user=other_user, role=WorkflowMember.Role.EXECUTOR)
    schedule = ScheduledWorkflowFactory(workflow=workflow, owner=other_user)

    assert user_client.patch(f"{LIST_URL}{schedule.pk}/", {"max_retries": 0}).status_code == 200
    schedule.refresh_from_db()
    assert schedule.max_retries == 0


def test_a_viewer_does_not_see_schedules(user, other_user, client_for):
    workflow = WorkflowFactory(owner=other_user)
    WorkflowMemberFactory(workflow=workflow, user=user, role=WorkflowMember.Role.VIEWER)
    schedule = ScheduledWorkflowFactory(workflow=workflow)

    assert client_for(user).get(LIST_URL).json()["count"] == 0
    assert client_for(user).get(f"{LIST_URL}{schedule.pk}/").status_code == 404


# --- Pause, resume, run now --------------------------------------------------------------------
def made_by(user, workflow, **fields):
    return schedule_create(user=user, workflow=workflow, cron="0 * * * *", **fields)


def test_pause_and_resume_are_audited(user, user_client, workflow):
    schedule = made_by(user, workflow)
    url = f"{LIST_URL}{schedule.pk}/"

    response = user_client.post(f"{url}pause/", {"reason": "holidays"}, format="json")

    assert response.status_code == 200, response.json()
    assert (response.json()["status"], response.json()["pause_reason"]) == ("paused", "holidays")
    assert user_client.post(f"{url}pause/").status_code == 200  # a no-op, not audited again
    response = user_client.post(f"{url}resume/")
    assert response.status_code == 200
    assert (response.json()["status"], response.json()["pause_reason"]) == ("active", "")
    audits = list(AuditLog.objects.order_by("created_at").values_list("action", "actor", "target_id"))
    assert audits == [
        ("schedule.create", user.pk, str(schedule.pk)),
        ("schedule.pause", user.pk, str(schedule.pk)),
        ("schedule.resume", user.pk, str(schedule.pk)),
    ]


def test_run_now_starts_a_run_outside_the_ticks(user, user_client, workflow):
    schedule = made_by(user, workflow, inputs={"city": "Lyon"})

    response = user_client.post(f"{LIST_URL}{schedule.pk}/run-now/")

    assert response.status_code == 202, response.json()
    run = Run.objects.get(pk=response.json()["id"])
    assert (run.schedule, run.scheduled_tick, run.trigger) == (schedule, None, "schedule")
    assert run.inputs == {"city": "Lyon"}
    assert response.json()["url"].endswith(f"/api/v1/runs/{run.pk}/")


def test_run_now_with_inputs_that_no_longer_fit_is_a_400(user, user_client, workflow):
    schedule = made_by(user, workflow, inputs={"city": ["x"]})

    response = user_client.post(f"{LIST_URL}{schedule.pk}/run-now/")

    assert response.status_code == 400
    assert "inputs.city" in str(response.json())
    assert not Run.objects.exists()


def test_actions_on_another_users_schedule_are_404(user, other_client, workflow):
    schedule = made_by(user, workflow)

    for action in ("pause", "resume", "run-now"):
        assert other_client.post(f"{LIST_URL}{schedule.pk}/{action}/").status_code == 404
    schedule.refresh_from_db()
    assert schedule.status == "active"
    assert not Run.objects.exists()
    assert list(AuditLog.objects.values_list("action", flat=True)) == ["schedule.create"]


def test_an_executor_runs_the_owners_schedule_now_but_cannot_pause_it(user, other_user, client_for):
    workflow = WorkflowFactory(owner=other_user)
    workflow_update(workflow=workflow, user=other_user, graph=SIMPLE_GRAPH)
    WorkflowMemberFactory(workflow=workflow, user=user, role=WorkflowMember.Role.EXECUTOR)
    schedule = made_by(other_user, workflow)
    client = client_for(user)

    assert client.post(f"{LIST_URL}{schedule.pk}/pause/").status_code == 403
    assert client.post(f"{LIST_URL}{schedule.pk}/run-now/").status_code == 202
    schedule.refresh_from_db()
    assert schedule.status == "active"


def test_action_bodies_are_strict(user, user_client, workflow):
    schedule = made_by(user, workflow)

    response = user_client.post(f"{LIST_URL}{schedule.pk}/pause/", {"reason": "x", "until": "monday"}, format="json")

    assert response.status_code == 400
    assert "until" in response.json()


def test_a_schedule_pins_a_published_version(user, user_client, workflow):
    flow = workflow_publish(workflow=workflow, version="1.0.0", user=user)

    response = user_client.post(LIST_URL, {"workflow": str(workflow.pk), "cron": "0 * * * *", "version": "1.0.0"})
    assert response.status_code == 201, response.json()
    assert response.json()["version"] == "1.0.0"
    assert ScheduledWorkflow.objects.get().flow == flow
    response = user_client.post(LIST_URL, {"workflow": str(workflow.pk), "cron": "0 * * * *", "version": "9.9.9"})
    assert response.status_code == 400
    assert response.json()["field"] == "version"
    schedule = ScheduledWorkflow.objects.get()
    response = user_client.patch(f"{LIST_URL}{schedule.pk}/", {"version": None}, format="json")
    assert response.status_code == 200
    assert response.json()["version"] is None


@pytest.mark.parametrize("cron", ["0 9 * * 5#2", "0 0 L * *", "0 0 ? * *", "H * * * *", "0 0 1W * *"])
def test_a_cron_with_extensions_is_a_400_naming_cron(user_client, workflow, cron):
    """Five plain fields only: a schedule reads the same in any cron tool."""
    response = user_client.post(LIST_URL, {"workflow": str(workflow.pk), "cron": cron})

    assert response.status_code == 400
    assert "cron" in response.json()
