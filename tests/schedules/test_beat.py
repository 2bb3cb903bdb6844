"""Each schedule has its django-celery-beat entry: created, changed and deleted with it."""

import json
import subprocess
import sys
from zoneinfo import ZoneInfo

from django.conf import settings
from django_celery_beat.models import PeriodicTask

from tests.factories import UserFactory
from workflows.models import ScheduledWorkflow
from workflows.schedules.services import (
    schedule_create,
    schedule_delete,
    schedule_fire,
    schedule_pause,
    schedule_resume,
    schedule_update,
)
from workflows.services import workflow_delete


def test_creating_a_schedule_creates_its_beat_entry_in_its_time_zone(user, workflow):
    schedule = schedule_create(user=user, workflow=workflow, cron="30 8 * * 1-5", timezone_name="Europe/Paris")

    task = PeriodicTask.objects.get()
    schedule.refresh_from_db()
    assert schedule.periodic_task == task
    assert task.task == "workflows.schedule_fire"
    assert json.loads(task.args) == [str(schedule.pk)]
    assert task.enabled
    cron = task.crontab
    assert (cron.minute, cron.hour, cron.day_of_month, cron.month_of_year, cron.day_of_week) == (
        "30",
        "8",
        "*",
        "*",
        "1-5",
    )
    assert cron.timezone == ZoneInfo("Europe/Paris")


def test_changing_the_cron_changes_the_beat_entry(user, workflow):
    schedule = schedule_create(user=user, workflow=workflow, cron="0 * * * *")
    first_start = PeriodicTask.objects.get().start_time

    schedule_update(schedule=schedule, user=user, cron="15 6 * * *", timezone_name="Asia/Tokyo")

    task = PeriodicTask.objects.get()
    assert (task.crontab.minute, task.crontab.hour, task.crontab.timezone) == ("15", "6", ZoneInfo("Asia/Tokyo"))
    assert task.start_time > first_start
    schedule_update(schedule=schedule, user=user, name="renamed")
    assert PeriodicTask.objects.get().start_time == task.start_time


def test_the_beat_entry_is_enabled_only_while_the_schedule_is_active(user, workflow):
    schedule = schedule_create(user=user, workflow=workflow, cron="0 * * * *")

    schedule_pause(schedule=schedule, user=user)
    assert not PeriodicTask.objects.get().enabled
    schedule_resume(schedule=schedule, user=user)
    assert PeriodicTask.objects.get().enabled


def test_deleting_the_schedule_deletes_its_beat_entry(user, workflow):
    schedule = schedule_create(user=user, workflow=workflow, cron="0 * * * *")

    schedule_delete(schedule=schedule, user=user)

    assert not ScheduledWorkflow.objects.exists()
    assert not PeriodicTask.objects.filter(task="workflows.schedule_fire").exists()


def test_deleting_the_workflow_deletes_the_beat_entries(user, workflow):
    schedule_create(user=user, workflow=workflow, cron="0 * * * *")
    schedule_create(user=user, workflow=workflow, cron="30 * * * *")

    workflow_delete(workflow=workflow, user=user)

    assert not PeriodicTask.objects.filter(task="workflows.schedule_fire").exists()


def test_a_beat_entry_whose_schedule_is_gone_removes_itself(workflow):
    owner = UserFactory()
    schedule = schedule_create(user=workflow.owner, workflow=workflow, cron="0 * * * *")
    schedule_id = schedule.pk
    # Deleted behind the services' back (the owner's account removed with a cascade, say).
    ScheduledWorkflow.objects.filter(pk=schedule_id).update(owner=owner)
    owner.delete()

    assert schedule_fire(schedule_id=schedule_id) is None
    assert not PeriodicTask.objects.filter(task="workflows.schedule_fire").exists()


def test_the_celery_app_knows_the_schedule_tasks():
    """A worker started with `celery -A config` must find the tasks beat sends."""
    code = (
        "import django; django.setup(); from config.celery import app; app.loader.import_default_modules(); "
        "print(sorted(name for name in app.tasks if name.startswith('workflows.schedule')))"
    )
    env = {"DJANGO_SETTINGS_MODULE": "config.settings_test", "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=settings.BASE_DIR, env=env, check=True
    )
    assert result.stdout.split("\n")[-2] == "['workflows.schedule_fire', 'workflows.schedules_sync']"
