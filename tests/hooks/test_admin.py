"""Operators see triggers and switch them off; the secret and the token are on no admin page."""

import pytest

from history.models import AuditLog
from hooks.models import HookDelivery, Trigger
from tests.hooks.conftest import HOOK_SECRET

pytestmark = pytest.mark.django_db


@pytest.fixture
def operator_client(client, staff_user):
    client.force_login(staff_user)
    return client


def test_triggers_are_listed_without_their_secret_or_token(operator_client, make_trigger):
    created = make_trigger(name="shop orders", secret=HOOK_SECRET)

    listing = operator_client.get("/admin/hooks/trigger/")
    change = operator_client.get(f"/admin/hooks/trigger/{created['id']}/change/")

    assert listing.status_code == change.status_code == 200
    assert b"shop orders" in listing.content
    for page in (listing, change):
        text = page.content.decode()
        assert HOOK_SECRET not in text
        assert created["token"] not in text
        assert Trigger.objects.get(pk=created["id"]).token_hash not in text
    assert 'name="secret"' not in change.content.decode()


def test_an_operator_switches_triggers_off_with_an_audit_row(operator_client, make_trigger, staff_user):
    created = make_trigger()

    operator_client.post("/admin/hooks/trigger/", {"action": "disable_triggers", "_selected_action": [created["id"]]})

    assert Trigger.objects.get(pk=created["id"]).enabled is False
    row = AuditLog.objects.filter(action="trigger.update").get()
    assert row.actor == staff_user
    assert row.before["enabled"] is True
    assert row.after["enabled"] is False


def test_the_change_form_switches_a_trigger_off_through_the_service(operator_client, make_trigger):
    created = make_trigger(rate_limit_per_minute=5)

    response = operator_client.post(f"/admin/hooks/trigger/{created['id']}/change/", {"rate_limit_per_minute": 7})

    assert response.status_code == 302, response.content
    trigger = Trigger.objects.get(pk=created["id"])
    assert trigger.enabled is False
    assert trigger.rate_limit_per_minute == 7
    assert AuditLog.objects.filter(action="trigger.update").exists()


def test_triggers_cannot_be_added_in_the_admin(operator_client):
    assert operator_client.get("/admin/hooks/trigger/add/").status_code == 403


def test_deliveries_are_listed_read_only(operator_client):
    assert operator_client.get("/admin/hooks/hookdelivery/").status_code == 200
    assert HookDelivery.objects.count() == 0
    assert operator_client.get("/admin/hooks/hookdelivery/add/").status_code == 403
