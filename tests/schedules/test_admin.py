"""Operators add, change, delete, pause, resume and run schedules from the admin: through the services, audited."""

from zoneinfo import ZoneInfo

import pytest
from django.urls import reverse

from history.models import AuditLog
from workflows.models import Run, ScheduledWorkflow
from workflows.schedules.services import schedule_create


@pytest.fixture
def schedule(user, workflow):
    return schedule_create(user=user, workflow=workflow, cron="0 * * * *", inputs={"city": "Lyon"})


def act(admin_client, action: str, schedule):
    url = reverse("admin:workflows_scheduledworkflow_changelist")
    return admin_client.post(url, {"action": action, "_selected_action": [str(schedule.pk)]})


def test_operators_pause_and_resume_schedules(admin_client, admin_user, schedule):
    assert act(admin_client, "pause_schedules", schedule).status_code == 302
    schedule.refresh_from_db()
    assert schedule.status == "paused"

    assert act(admin_client, "resume_schedules", schedule).status_code == 302
    schedule.refresh_from_db()
    assert schedule.status == "active"
    assert list(
        AuditLog.objects.exclude(action="schedule.create").order_by("created_at").values_list("action", "actor")
    ) == [
        ("schedule.pause", admin_user.pk),
        ("schedule.resume", admin_user.pk),
    ]


def test_operators_run_a_schedule_now(admin_client, schedule):
    assert act(admin_client, "run_schedules_now", schedule).status_code == 302

    run = Run.objects.get()
    assert (run.schedule, run.triggered_by, run.inputs) == (schedule, schedule.owner, {"city": "Lyon"})


def schedule_form(workflow, owner, **fields) -> dict:
    return {
        "workflow": workflow.pk,
        "owner": owner.pk,
        "name": "",
        "cron_expression": "0 7 * * *",
        "timezone": "Europe/Paris",
        "inputs": "{}",
        "max_retries": 3,
        **fields,
    }


def test_a_schedule_added_changed_and_deleted_in_the_admin_goes_through_the_services(
    admin_client, admin_user, user, workflow
):
    response = admin_client.post(reverse("admin:workflows_scheduledworkflow_add"), schedule_form(workflow, user))

    assert response.status_code == 302
    schedule = ScheduledWorkflow.objects.get()
    assert schedule.owner == user  # it runs as its owner, made by the operator
    assert schedule.next_fire_at.astimezone(ZoneInfo("Europe/Paris")).hour == 7
    created_effect = schedule.effective_from

    url = reverse("admin:workflows_scheduledworkflow_change", args=[schedule.pk])
    response = admin_client.post(url, schedule_form(workflow, user, cron_expression="30 9 * * *"))

    assert response.status_code == 302
    schedule.refresh_from_db()
    assert schedule.effective_from > created_effect  # a new cron takes effect now, as through the API
    assert schedule.next_fire_at.astimezone(ZoneInfo("Europe/Paris")).hour == 9
    admin_client.post(reverse("admin:workflows_scheduledworkflow_delete", args=[schedule.pk]), {"post": "yes"})
    assert not ScheduledWorkflow.objects.exists()
    audits = list(AuditLog.objects.order_by("created_at").values_list("action", "actor", "target_id"))
    assert audits == [
        ("schedule.create", admin_user.pk, str(schedule.pk)),
        ("schedule.update", admin_user.pk, str(schedule.pk)),
        ("schedule.delete", admin_user.pk, str(schedule.pk)),
    ]
    update = AuditLog.objects.get(action="schedule.update")
    assert (update.before["cron"], update.after["cron"], update.payload["changed"]) == (
        "0 7 * * *",
        "30 9 * * *",
        ["cron_expression"],
    )


def test_the_admin_refuses_an_owner_who_cannot_run_the_workflow(admin_client, other_user, workflow):
    response = admin_client.post(reverse("admin:workflows_scheduledworkflow_add"), schedule_form(workflow, other_user))

    assert response.status_code == 200
    assert "cannot run this workflow" in response.content.decode()
    assert not ScheduledWorkflow.objects.exists()


def test_bulk_delete_in_the_admin_is_audited_per_schedule(admin_client, schedule):
    url = reverse("admin:workflows_scheduledworkflow_changelist")
    admin_client.post(url, {"action": "delete_selected", "_selected_action": [str(schedule.pk)], "post": "yes"})

    assert not ScheduledWorkflow.objects.exists()
    assert AuditLog.objects.filter(action="schedule.delete", target_id=str(schedule.pk)).count() == 1
