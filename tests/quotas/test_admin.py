"""An operator overrides a user's quotas on the user's page in the admin."""

import copy

import pytest
from django.test import Client

from accounts.models import UserQuota
from config.errors import QuotaExceeded
from tests.factories import SIMPLE_GRAPH
from workflows.execution.services import run_start
from workflows.services import workflow_create


@pytest.fixture
def operator_client(staff_user) -> Client:
    client = Client()
    client.force_login(staff_user)
    return client


def change_form(user, **quota) -> dict:
    data = {
        "username": user.username,
        "email": user.email,
        "is_active": "on",
        "date_joined_0": user.date_joined.strftime("%Y-%m-%d"),
        "date_joined_1": user.date_joined.strftime("%H:%M:%S"),
        "quota-TOTAL_FORMS": "1",
        "quota-INITIAL_FORMS": "1" if UserQuota.objects.filter(user=user).exists() else "0",
        "quota-MIN_NUM_FORMS": "0",
        "quota-MAX_NUM_FORMS": "1",
        "quota-0-user": str(user.pk),
    }
    data.update({f"quota-0-{name}": str(value) for name, value in quota.items()})
    return data


def test_the_users_page_shows_the_overrides_with_the_defaults(operator_client, user, settings):
    page = operator_client.get(f"/admin/accounts/user/{user.pk}/change/")

    assert page.status_code == 200
    html = page.content.decode()
    assert "quota overrides" in html.lower()
    assert f'placeholder="default {settings.WEFT["QUOTAS"]["RUNS_PER_DAY"]}"' in html


def test_an_override_set_in_the_admin_applies_to_the_next_start(operator_client, user, monkeypatch):
    monkeypatch.setattr("workflows.execution.services.run_dispatch", lambda *, run_id, **options: None)
    workflow = workflow_create(owner=user, name="Limited", graph=copy.deepcopy(SIMPLE_GRAPH))

    saved = operator_client.post(f"/admin/accounts/user/{user.pk}/change/", change_form(user, concurrent_runs=1))

    assert saved.status_code == 302, saved.content.decode()[:2000]
    quota = UserQuota.objects.get(user=user)
    assert (quota.concurrent_runs, quota.runs_per_day) == (1, None)
    run_start(workflow=workflow, user=user, inputs={})
    with pytest.raises(QuotaExceeded):
        run_start(workflow=workflow, user=user, inputs={})


def test_a_duration_of_zero_is_refused_naming_the_field(operator_client, user):
    page = operator_client.post(f"/admin/accounts/user/{user.pk}/change/", change_form(user, max_run_duration_s=0))

    assert page.status_code == 200
    assert "greater than or equal to 1" in page.content.decode()
    assert not UserQuota.objects.filter(user=user).exists()
