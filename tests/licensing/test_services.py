import json

import pytest

from config.errors import Conflict, InvalidInput, NotFound
from history.models import AuditLog
from licensing.models import App, EnabledStatus, License
from licensing.services import (
    API_KEY_PREFIX,
    app_create,
    app_delete,
    app_rotate_credentials,
    app_set_status,
    app_update,
    license_grant,
    license_revoke,
    license_set_status,
)
from tests.factories import AppFactory, WorkflowFactory

pytestmark = pytest.mark.django_db


def audit_rows_for(obj) -> list[AuditLog]:
    return list(AuditLog.objects.filter(target_type=obj._meta.label_lower, target_id=str(obj.pk)).order_by("id"))


def test_app_create_issues_credentials_and_returns_the_secret_once(user):
    app, secret = app_create(owner=user, name="Shop", description="The shop front")

    stored = App.objects.get(pk=app.pk)
    assert stored.api_key.startswith(API_KEY_PREFIX)
    assert stored.api_secret == secret
    assert len(secret) >= 40
    assert stored.alias_id
    assert stored.owner == user
    [row] = audit_rows_for(app)
    assert row.action == "app.create"
    assert row.actor == user
    assert secret not in json.dumps([row.before, row.after, row.payload])


def test_two_apps_get_different_credentials(user):
    first, first_secret = app_create(owner=user, name="one")
    second, second_secret = app_create(owner=user, name="two")
    assert first.api_key != second.api_key
    assert first_secret != second_secret


def test_app_create_with_a_taken_alias_id_is_a_conflict_naming_alias_id(user, other_user):
    app_create(owner=other_user, name="first", alias_id="shop")
    with pytest.raises(Conflict) as caught:
        app_create(owner=user, name="second", alias_id="shop")
    assert caught.value.field == "alias_id"
    assert App.objects.filter(alias_id="shop").count() == 1


def test_rotate_replaces_key_and_secret_and_audits_only_the_public_key(user):
    app, old_secret = app_create(owner=user, name="Shop")
    old_key = app.api_key

    new_secret = app_rotate_credentials(app=app, actor=user)

    stored = App.objects.get(pk=app.pk)
    assert stored.api_key != old_key
    assert stored.api_secret == new_secret != old_secret
    assert not App.objects.filter(api_key=old_key).exists()
    row = audit_rows_for(app)[-1]
    assert row.action == "app.rotate_credentials"
    assert row.before == {"api_key": old_key}
    assert row.after == {"api_key": stored.api_key}
    assert new_secret not in json.dumps([row.before, row.after, row.payload])
    assert old_secret not in json.dumps([row.before, row.after, row.payload])


def test_rotating_a_deleted_app_is_not_found(user):
    app = AppFactory(owner=user)
    App.objects.filter(pk=app.pk).delete()
    with pytest.raises(NotFound):
        app_rotate_credentials(app=app, actor=user)


def test_app_set_status_records_the_change_once(user, staff_user):
    app = AppFactory(owner=user)

    app_set_status(app=app, status=EnabledStatus.DISABLED, actor=staff_user)
    app_set_status(app=app, status=EnabledStatus.DISABLED, actor=staff_user)

    assert App.objects.get(pk=app.pk).status == EnabledStatus.DISABLED
    assert app.status == EnabledStatus.DISABLED
    [row] = audit_rows_for(app)
    assert (row.action, row.actor, row.before, row.after) == (
        "app.disable",
        staff_user,
        {"status": "enabled"},
        {"status": "disabled"},
    )
    assert App.objects.get(pk=app.pk).update_by == staff_user


def test_app_set_status_refuses_an_unknown_status(user):
    app = AppFactory(owner=user)
    with pytest.raises(InvalidInput) as caught:
        app_set_status(app=app, status="paused", actor=user)
    assert caught.value.field == "status"
    assert not audit_rows_for(app)


def test_app_update_changes_fields_and_audits_a_status_change(user):
    app = AppFactory(owner=user)
    app_update(app=app, actor=user, name="Renamed", status=EnabledStatus.DISABLED)
    stored = App.objects.get(pk=app.pk)
    assert (stored.name, stored.status) == ("Renamed", EnabledStatus.DISABLED)
    assert [row.action for row in audit_rows_for(app)] == ["app.disable"]


def test_app_update_to_a_taken_alias_id_is_a_conflict(user):
    AppFactory(alias_id="taken")
    app = AppFactory(owner=user)
    with pytest.raises(Conflict) as caught:
        app_update(app=app, actor=user, alias_id="taken")
    assert caught.value.field == "alias_id"


def test_app_delete_removes_its_licenses_and_is_audited(user):
    app = AppFactory(owner=user)
    license_grant(app=app, workflow=WorkflowFactory(owner=user), actor=user)
    app_pk = app.pk

    app_delete(app=app, actor=user)

    assert not App.objects.filter(pk=app_pk).exists()
    assert not License.objects.filter(app_id=app_pk).exists()
    row = AuditLog.objects.get(action="app.delete")
    assert row.target_id == str(app_pk)
    assert row.actor == user


def test_license_grant_then_duplicate_is_a_conflict_naming_group(user):
    app = AppFactory(owner=user)
    workflow = WorkflowFactory(owner=user)

    license = license_grant(app=app, workflow=workflow, actor=user)
    with pytest.raises(Conflict) as caught:
        license_grant(app=app, workflow=workflow, actor=user)

    assert caught.value.field == "group"
    assert License.objects.filter(app=app, group=workflow).count() == 1
    [row] = audit_rows_for(license)
    assert row.action == "license.grant"
    assert row.after == {"app": app.pk, "group": str(workflow.pk), "status": "enabled"}


def test_license_set_status_is_guarded_and_audited(user, staff_user):
    license = license_grant(app=AppFactory(owner=user), workflow=WorkflowFactory(owner=user), actor=user)

    license_set_status(license=license, status=EnabledStatus.DISABLED, actor=staff_user)
    license_set_status(license=license, status=EnabledStatus.DISABLED, actor=staff_user)
    license_set_status(license=license, status=EnabledStatus.ENABLED, actor=staff_user)

    assert License.objects.get(pk=license.pk).status == EnabledStatus.ENABLED
    assert [row.action for row in audit_rows_for(license)] == ["license.grant", "license.disable", "license.enable"]


def test_license_revoke_deletes_and_audits(user):
    license = license_grant(app=AppFactory(owner=user), workflow=WorkflowFactory(owner=user), actor=user)
    license_pk = license.pk
    license_revoke(license=license, actor=user)
    assert not License.objects.filter(pk=license_pk).exists()
    assert AuditLog.objects.filter(action="license.revoke", target_id=str(license_pk), actor=user).exists()
