"""Operators pause, resume and run schedules from the admin; each pause and resume is audited."""

import pytest
from django.urls import reverse
from django_celery_beat.models import PeriodicTask

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
    assert not PeriodicTask.objects.get(pk=schedule.periodic_task_id).enabled

    assert act(admin_client, "resume_schedules", schedule).status_code == 302
    schedule.refresh_from_db()
    assert schedule.status == "active"
    assert list(AuditLog.objects.order_by("created_at").values_list("action", "actor")) == [
        ("schedule.pause", admin_user.pk),
        ("schedule.resume", admin_user.pk),
    ]


def test_operators_run_a_schedule_now(admin_client, schedule):
    assert act(admin_client, "run_schedules_now", schedule).status_code == 302

    run = Run.objects.get()
    assert (run.schedule, run.triggered_by, run.inputs) == (schedule, schedule.owner, {"city": "Lyon"})


def test_a_schedule_added_in_the_admin_gets_its_beat_entry(admin_client, user, workflow):
    response = admin_client.post(
        reverse("admin:workflows_scheduledworkflow_add"),
        {
            "workflow": workflow.pk,
            "owner": user.pk,
            "name": "",
            "cron_expression": "0 7 * * *",
            "timezone": "Europe/Paris",
            "inputs": "{}",
            "max_retries": 3,
        },
    )

    assert response.status_code == 302
    schedule = ScheduledWorkflow.objects.get()
    assert schedule.periodic_task.crontab.hour == "7"
    admin_client.post(reverse("admin:workflows_scheduledworkflow_delete", args=[schedule.pk]), {"post": "yes"})
    assert not PeriodicTask.objects.filter(task="workflows.schedule_fire").exists()
