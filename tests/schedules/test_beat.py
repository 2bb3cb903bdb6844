"""Beat fires every schedule from one entry; a schedule keeps its own next tick, moved by its changes."""

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from django.conf import settings
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from tests.schedules.conftest import in_effect_since
from workflows.models import Run, ScheduledWorkflow
from workflows.schedules.services import (
    schedule_create,
    schedule_delete,
    schedule_pause,
    schedule_resume,
    schedule_update,
    schedules_fire_due,
)
from workflows.services import workflow_delete


def test_beat_has_one_entry_for_all_schedules_at_the_tick_interval():
    entries = [entry for entry in settings.CELERY_BEAT_SCHEDULE.values() if entry["task"].startswith("workflows.sch")]

    assert {entry["task"] for entry in entries} == {"workflows.schedules_fire_due", "workflows.schedules_sync"}
    fire = next(entry for entry in entries if entry["task"] == "workflows.schedules_fire_due")
    assert fire["schedule"] == settings.WEFT["SCHEDULES"]["TICK_INTERVAL_S"]


def test_a_schedule_has_no_beat_entry_of_its_own_and_its_next_tick_in_its_time_zone(user, workflow):
    before = timezone.now()
    schedule = schedule_create(user=user, workflow=workflow, cron="30 8 * * 1-5", timezone_name="Europe/Paris")

    assert not PeriodicTask.objects.filter(task__startswith="workflows.schedule").exists()
    assert before <= schedule.effective_from <= timezone.now()
    local = schedule.next_fire_at.astimezone(ZoneInfo("Europe/Paris"))
    assert (local.hour, local.minute, local.weekday() < 5) == (8, 30, True)
    assert schedule.effective_from < schedule.next_fire_at <= schedule.effective_from + timedelta(days=4)


def test_a_new_cron_takes_effect_now_and_a_new_name_does_not(user, workflow):
    schedule = schedule_create(user=user, workflow=workflow, cron="0 * * * *")
    first_effect = schedule.effective_from

    schedule_update(schedule=schedule, user=user, cron="15 6 * * *", timezone_name="Asia/Tokyo")

    schedule.refresh_from_db()
    assert schedule.effective_from > first_effect
    local = schedule.next_fire_at.astimezone(ZoneInfo("Asia/Tokyo"))
    assert (local.hour, local.minute) == (6, 15)
    effect, next_fire_at = schedule.effective_from, schedule.next_fire_at
    schedule_update(schedule=schedule, user=user, name="renamed")
    schedule.refresh_from_db()
    assert (schedule.effective_from, schedule.next_fire_at) == (effect, next_fire_at)


def test_a_paused_schedule_is_not_due_and_resumes_from_now(user, workflow):
    schedule = schedule_create(user=user, workflow=workflow, cron="* * * * *")
    in_effect_since(schedule, datetime(2025, 1, 1, tzinfo=UTC))

    schedule_pause(schedule=schedule, user=user)
    assert schedules_fire_due() == []
    schedule_resume(schedule=schedule, user=user)

    schedule.refresh_from_db()
    assert schedule.next_fire_at > timezone.now() - timedelta(seconds=1)  # the ticks missed while paused: gone
    assert schedules_fire_due() == []
    assert not Run.objects.exists()


def test_deleting_the_schedule_or_its_workflow_deletes_it(user, workflow):
    schedule = schedule_create(user=user, workflow=workflow, cron="0 * * * *")
    schedule_delete(schedule=schedule, user=user)
    assert not ScheduledWorkflow.objects.exists()

    schedule_create(user=user, workflow=workflow, cron="0 * * * *")
    workflow_delete(workflow=workflow, user=user)
    assert not ScheduledWorkflow.objects.exists()


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
    assert result.stdout.split("\n")[-2] == "['workflows.schedules_fire_due', 'workflows.schedules_sync']"
