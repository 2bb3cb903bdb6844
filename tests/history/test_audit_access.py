"""Access changes audited beyond licenses, approvals and roles: users in the admin, tool visibility,
provider deletion, the field key rotation, workflow deletion, versions and licenses through the API."""

import copy
import json
import pickle
from io import StringIO

import pytest
from django import forms
from django.conf import settings
from django.contrib.auth.models import Group, Permission
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import override_settings
from django.urls import reverse
from django.utils import timezone
from django_cryptography.core.signing import FernetSigner
from django_cryptography.utils.crypto import FernetBytes

from accounts.models import User
from agents.models import LLMProvider, Tool
from agents.services import tool_approve
from history.models import AuditLog
from licensing.management.commands.rotate_field_key import derive_field_key
from licensing.models import App, License
from tests.factories import (
    SIMPLE_GRAPH,
    AppFactory,
    LicenseFactory,
    LLMProviderFactory,
    ToolFactory,
    UserFactory,
    WorkflowFactory,
    WorkflowMemberFactory,
)
from workflows.models import Workflow
from workflows.services import workflow_create

pytestmark = pytest.mark.django_db


@pytest.fixture
def operator():
    return UserFactory(username="operator", is_staff=True, is_superuser=True)


@pytest.fixture
def operator_client(client, operator):
    client.force_login(operator)
    return client


def last_pk() -> int:
    return AuditLog.objects.order_by("-pk").values_list("pk", flat=True).first() or 0


def new_rows(since: int) -> list[AuditLog]:
    return list(AuditLog.objects.filter(pk__gt=since).order_by("pk"))


def only_new_row(since: int) -> AuditLog:
    rows = new_rows(since)
    assert len(rows) == 1, [row.action for row in rows]
    return rows[0]


def stored_audit() -> str:
    return json.dumps(list(AuditLog.objects.values("before", "after", "payload", "target_repr")), default=str)


# --- Users in the admin -------------------------------------------------------------------------


def _field_data(form) -> dict:
    """What a browser would post back for ``form`` unchanged (the admin's widgets unwrapped)."""
    data = {}
    for bound in form:
        if bound.field.disabled:
            continue
        widget = getattr(bound.field.widget, "widget", bound.field.widget)
        value = bound.value()
        if isinstance(widget, forms.CheckboxInput):
            if value:
                data[bound.html_name] = "on"
        elif isinstance(widget, forms.MultiWidget):
            parts = value if isinstance(value, list | tuple) else widget.decompress(value)
            for index, (sub_widget, part) in enumerate(zip(widget.widgets, parts, strict=True)):
                data[f"{bound.html_name}_{index}"] = sub_widget.format_value(part) or ""
        elif isinstance(widget, forms.SelectMultiple):
            data[bound.html_name] = [str(item) for item in value or []]
        elif value is not None:
            data[bound.html_name] = value
    return data


def admin_form_data(client, url: str) -> dict:
    """An admin form as it is filled in now, inlines included, ready to be edited and posted."""
    response = client.get(url)
    assert response.status_code == 200
    data = _field_data(response.context["adminform"].form)
    for inline in response.context["inline_admin_formsets"]:
        formset = inline.formset
        data.update({bound.html_name: bound.value() for bound in formset.management_form})
        for form in formset.forms:
            data.update(_field_data(form))
    return data


def admin_change_data(client, user: User) -> dict:
    return admin_form_data(client, reverse("admin:accounts_user_change", args=[user.pk]))


def admin_save(client, user: User, **changes) -> None:
    response = client.post(
        reverse("admin:accounts_user_change", args=[user.pk]), {**admin_change_data(client, user), **changes}
    )
    assert response.status_code == 302, response.context["adminform"].form.errors if response.context else response


def test_access_changes_of_a_user_in_the_admin_are_audited_with_before_and_after(operator_client, operator):
    started = timezone.now()
    member = UserFactory(username="member")
    editors = Group.objects.create(name="editors")
    permission = Permission.objects.get(codename="change_workflow")

    mark = last_pk()
    admin_save(
        operator_client,
        member,
        is_staff="on",
        groups=[str(editors.pk)],
        user_permissions=[str(permission.pk)],
    )
    row = only_new_row(mark)
    assert (row.actor, row.action, row.target_type, row.target_id) == (
        operator,
        "user.access_change",
        "accounts.user",
        str(member.pk),
    )
    assert row.before == {"is_staff": False, "groups": [], "user_permissions": []}
    assert row.after == {"is_staff": True, "groups": ["editors"], "user_permissions": ["workflows.change_workflow"]}
    assert started <= row.created_at <= timezone.now()

    mark = last_pk()
    admin_save(operator_client, member, first_name="Renamed")
    assert last_pk() == mark, "a save that leaves access alone records nothing"

    mark = last_pk()
    data = admin_change_data(operator_client, member)
    data.pop("is_active")
    data.update(is_superuser="on", groups=[])
    response = operator_client.post(reverse("admin:accounts_user_change", args=[member.pk]), data)
    assert response.status_code == 302
    row = only_new_row(mark)
    assert row.before == {"is_active": True, "is_superuser": False, "groups": ["editors"]}
    assert row.after == {"is_active": False, "is_superuser": True, "groups": []}


def test_a_user_added_in_the_admin_is_audited(operator_client, operator):
    url = reverse("admin:accounts_user_add")
    passwords = {"password1": "a-long-pass-phrase-81", "password2": "a-long-pass-phrase-81"}
    mark = last_pk()
    response = operator_client.post(
        url, {**admin_form_data(operator_client, url), "username": "newcomer", "usable_password": "true", **passwords}
    )
    assert response.status_code == 302, response.context["adminform"].form.errors
    newcomer = User.objects.get(username="newcomer")
    rows = [row for row in new_rows(mark) if row.action == "user.create"]
    assert [(row.actor, row.target_id) for row in rows] == [(operator, str(newcomer.pk))]
    assert rows[0].after == {
        "is_active": True,
        "is_staff": False,
        "is_superuser": False,
        "groups": [],
        "user_permissions": [],
    }


def test_deleting_users_in_the_admin_is_audited_with_what_they_could_do(operator_client, operator):
    staff = UserFactory(username="staffer", is_staff=True)
    staff.groups.add(Group.objects.create(name="ops"))
    staff_pk = staff.pk

    mark = last_pk()
    response = operator_client.post(reverse("admin:accounts_user_delete", args=[staff_pk]), {"post": "yes"})
    assert response.status_code == 302
    row = only_new_row(mark)
    assert (row.actor, row.action, row.target_id, row.target_repr) == (
        operator,
        "user.delete",
        str(staff_pk),
        "staffer",
    )
    assert row.before == {
        "is_active": True,
        "is_staff": True,
        "is_superuser": False,
        "groups": ["ops"],
        "user_permissions": [],
    }
    assert not User.objects.filter(pk=staff_pk).exists()

    first, second = UserFactory(), UserFactory()
    mark = last_pk()
    response = operator_client.post(
        reverse("admin:accounts_user_changelist"),
        {"action": "delete_selected", "_selected_action": [first.pk, second.pk], "post": "yes"},
    )
    assert response.status_code == 302
    assert sorted((row.action, row.target_id) for row in new_rows(mark)) == sorted(
        [("user.delete", str(first.pk)), ("user.delete", str(second.pk))]
    )
    assert not User.objects.filter(pk__in=[first.pk, second.pk]).exists()


def test_a_password_set_in_the_admin_is_audited_without_the_password(operator_client, operator):
    member = UserFactory(username="forgetful")
    old_hash = member.password
    mark = last_pk()
    response = operator_client.post(
        reverse("admin:auth_user_password_change", args=[member.pk]),
        {"password1": "brand-new-phrase-4471", "password2": "brand-new-phrase-4471", "usable_password": "true"},
    )
    assert response.status_code == 302
    row = only_new_row(mark)
    assert (row.actor, row.action, row.after) == (
        operator,
        "user.password_change",
        {"password": "changed", "usable": True},
    )
    member.refresh_from_db()
    assert "brand-new-phrase-4471" not in stored_audit()
    assert old_hash not in stored_audit()
    assert member.password not in stored_audit()


# --- Tools and providers ------------------------------------------------------------------------


def test_making_a_tool_public_is_audited_and_its_approval_loss_too(user, user_client, operator):
    tool = ToolFactory(owner=user)
    tool_approve(tool=tool, reviewer=operator, reason="ok")

    mark = last_pk()
    response = user_client.patch(f"/api/v1/tools/{tool.pk}/", {"visibility": "public"}, format="json")
    assert response.status_code == 200, response.json()
    row = only_new_row(mark)
    assert (row.actor, row.action, row.target_id) == (user, "tool.visibility_change", str(tool.pk))
    assert row.before == {"visibility": "private", "status": "approved"}
    assert row.after == {"visibility": "public", "status": "pending"}

    mark = last_pk()
    user_client.patch(f"/api/v1/tools/{tool.pk}/", {"description": "Says more."}, format="json")
    assert last_pk() == mark, "a pending tool's edit changes neither visibility nor approval"

    tool_approve(tool=tool, reviewer=operator, reason="still ok")
    mark = last_pk()
    user_client.patch(f"/api/v1/tools/{tool.pk}/", {"description": "Says even more."}, format="json")
    row = only_new_row(mark)
    assert (row.action, row.before, row.after) == ("tool.review_reset", {"status": "approved"}, {"status": "pending"})


def test_an_operator_changing_a_tools_visibility_in_the_admin_is_audited(operator_client, operator):
    tool = ToolFactory(visibility="public")
    response = operator_client.get(reverse("admin:agents_tool_change", args=[tool.pk]))
    data = {**_field_data(response.context["adminform"].form), "visibility": "private"}

    mark = last_pk()
    response = operator_client.post(reverse("admin:agents_tool_change", args=[tool.pk]), data)
    assert response.status_code == 302, response.context["adminform"].form.errors
    row = only_new_row(mark)
    assert (row.actor, row.action, row.before, row.after) == (
        operator,
        "tool.visibility_change",
        {"visibility": "public"},
        {"visibility": "private"},
    )
    assert Tool.objects.get(pk=tool.pk).visibility == "private"


def test_deleting_a_provider_is_audited_without_its_key(user, user_client, operator_client, operator):
    provider = LLMProviderFactory(owner=user, name="main", api_key="sk-canary-delete-0001")
    mark = last_pk()
    assert user_client.delete(f"/api/v1/providers/{provider.pk}/").status_code == 204
    row = only_new_row(mark)
    assert (row.actor, row.action, row.target_id, row.after) == (user, "provider.delete", str(provider.pk), None)
    assert row.before == {
        "owner": user.pk,
        "name": "main",
        "base_url": provider.base_url,
        "has_api_key": True,
    }
    assert not LLMProvider.objects.filter(pk=provider.pk).exists()

    in_admin = LLMProviderFactory(api_key="sk-canary-delete-0002")
    mark = last_pk()
    response = operator_client.post(reverse("admin:agents_llmprovider_delete", args=[in_admin.pk]), {"post": "yes"})
    assert response.status_code == 302
    assert (only_new_row(mark).actor, only_new_row(mark).action) == (operator, "provider.delete")

    listed = LLMProviderFactory(api_key="sk-canary-delete-0003")
    mark = last_pk()
    operator_client.post(
        reverse("admin:agents_llmprovider_changelist"),
        {"action": "delete_selected", "_selected_action": [listed.pk], "post": "yes"},
    )
    assert (only_new_row(mark).action, only_new_row(mark).target_id) == ("provider.delete", str(listed.pk))
    assert not any(f"sk-canary-delete-000{n}" in stored_audit() for n in (1, 2, 3))


def test_a_provider_key_changed_through_the_api_is_audited_as_changed_only(user, user_client):
    provider = LLMProviderFactory(owner=user, api_key="sk-canary-api-0001")
    mark = last_pk()
    response = user_client.patch(f"/api/v1/providers/{provider.pk}/", {"api_key": "sk-canary-api-0002"}, format="json")
    assert response.status_code == 200
    row = only_new_row(mark)
    assert (row.actor, row.action, row.after) == (user, "provider.api_key_change", {"has_api_key": True})
    assert "sk-canary-api-000" not in stored_audit()


# --- The field key rotation ---------------------------------------------------------------------

KEY_A = "the-previous-field-encryption-key-for-audit"


def write_under_key_a(app: App, secret: str) -> None:
    fernet = FernetBytes(derive_field_key(KEY_A), FernetSigner(settings.SECRET_KEY))
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE ai_app SET api_secret = %s WHERE id = %s",
            [connection.Database.Binary(fernet.encrypt(pickle.dumps(secret))), app.pk],
        )


def rotate(*args) -> str:
    out = StringIO()
    call_command("rotate_field_key", *args, stdout=out)
    return out.getvalue()


@override_settings(FIELD_ENCRYPTION_KEY_PREVIOUS=KEY_A)
def test_the_field_key_rotation_writes_one_row_with_its_counts(operator):
    old, current = AppFactory(), AppFactory(api_secret="already-current-secret")
    write_under_key_a(old, "secret-under-key-a")
    provider_count = LLMProvider.objects.count()

    mark = last_pk()
    rotate("--actor", "operator")
    row = only_new_row(mark)
    assert (row.actor, row.actor_repr, row.action) == (operator, "operator", "field_key.rotate")
    assert (row.target_type, row.target_id) == ("settings.field_encryption_key", "FIELD_ENCRYPTION_KEY")
    assert row.payload["re_encrypted"] == 1
    assert row.payload["fields"]["licensing.App.api_secret"] == {"re_encrypted": 1, "current": 1}
    assert row.payload["fields"]["agents.LLMProvider.api_key"] == {"re_encrypted": 0, "current": provider_count}
    assert row.payload["from_previous_field_key"] is True
    assert App.objects.get(pk=old.pk).api_secret == "secret-under-key-a"

    mark = last_pk()
    rotate()
    row = only_new_row(mark)
    assert row.actor is None
    assert row.actor_repr.startswith("system")
    assert row.payload["re_encrypted"] == 0
    stored = stored_audit()
    assert not any(secret in stored for secret in ("secret-under-key-a", "already-current-secret", KEY_A))
    assert App.objects.get(pk=current.pk).api_secret == "already-current-secret"


@override_settings(FIELD_ENCRYPTION_KEY_PREVIOUS=KEY_A)
def test_a_dry_run_or_an_unknown_actor_records_and_changes_nothing():
    app = AppFactory()
    write_under_key_a(app, "secret-under-key-a")
    mark = last_pk()
    rotate("--dry-run")
    with pytest.raises(CommandError, match="--actor"):
        rotate("--actor", "nobody-by-that-name")
    assert last_pk() == mark
    assert "re-encrypted 1" in rotate()  # it was still under the previous key


# --- Workflows: deletion, versions, licenses ----------------------------------------------------


def test_deleting_a_workflow_is_audited_with_the_access_that_goes_with_it(user, user_client):
    workflow = WorkflowFactory(owner=user, name="Payroll")
    editor = UserFactory()
    WorkflowMemberFactory(workflow=workflow, user=editor, role="editor")
    app = AppFactory(owner=user)
    LicenseFactory(app=app, group=workflow)
    workflow_pk = workflow.pk

    mark = last_pk()
    assert user_client.delete(f"/api/v1/workflows/{workflow_pk}/").status_code == 204
    row = only_new_row(mark)
    assert (row.actor, row.action, row.target_type, row.target_id, row.after) == (
        user,
        "workflow.delete",
        "workflows.workflow",
        str(workflow_pk),
        None,
    )
    assert row.before == {
        "name": "Payroll",
        "owner": user.pk,
        "status": workflow.status,
        "versions": 0,
        "schedules": 0,
        "members": [{"user": editor.pk, "role": "editor"}],
        "licenses": [{"app": app.pk, "status": "enabled"}],
    }
    assert not Workflow.objects.filter(pk=workflow_pk).exists()


def test_a_refused_workflow_deletion_records_nothing(user, other_client):
    workflow = WorkflowFactory(owner=user)
    mark = last_pk()
    assert other_client.delete(f"/api/v1/workflows/{workflow.pk}/").status_code == 404
    assert last_pk() == mark


def test_publishing_releasing_and_withdrawing_versions_are_audited(user, user_client):
    workflow = workflow_create(owner=user, name="Greeter", graph=copy.deepcopy(SIMPLE_GRAPH))
    base = f"/api/v1/workflows/{workflow.pk}"

    mark = last_pk()
    response = user_client.post(f"{base}/publish/", {"version": "1.0.0", "channels": ["api"]}, format="json")
    assert response.status_code == 201
    row = only_new_row(mark)
    assert (row.actor, row.action, row.target_type, row.before) == (
        user,
        "flow.publish",
        "workflows.workflowversion",
        None,
    )
    assert row.after == {"workflow": str(workflow.pk), "version": "1.0.0", "channels": ["api"]}

    mark = last_pk()
    user_client.post(f"{base}/versions/1.0.0/release/", {"channels": ["web"]}, format="json")
    row = only_new_row(mark)
    assert (row.action, row.before, row.after) == ("flow.release", {"channels": ["api"]}, {"channels": ["web", "api"]})

    mark = last_pk()
    user_client.post(f"{base}/versions/1.0.0/release/", {"channels": ["web"]}, format="json")
    assert last_pk() == mark, "releasing on a channel it is already on records nothing"

    mark = last_pk()
    response = user_client.post(f"{base}/versions/1.0.0/withdraw/", {}, format="json")
    assert response.json()["channels"] == []
    row = only_new_row(mark)
    assert (row.actor, row.action, row.before, row.after) == (
        user,
        "flow.withdraw",
        {"channels": ["web", "api"]},
        {"channels": []},
    )


def test_license_grants_and_revocations_through_the_api_are_audited(user, user_client):
    app, workflow = AppFactory(owner=user), WorkflowFactory(owner=user)

    mark = last_pk()
    response = user_client.post("/api/v1/licenses/", {"app": app.pk, "group": str(workflow.pk)}, format="json")
    assert response.status_code == 201, response.json()
    license = License.objects.get(app=app, group=workflow)
    row = only_new_row(mark)
    assert (row.actor, row.action, row.target_id) == (user, "license.grant", str(license.pk))

    mark = last_pk()
    response = user_client.patch(f"/api/v1/licenses/{license.pk}/", {"status": "disabled"}, format="json")
    assert response.status_code == 200
    assert (only_new_row(mark).action, only_new_row(mark).after) == ("license.disable", {"status": "disabled"})

    mark = last_pk()
    assert user_client.delete(f"/api/v1/licenses/{license.pk}/").status_code == 204
    row = only_new_row(mark)
    assert (row.actor, row.action, row.target_id, row.after) == (user, "license.revoke", str(license.pk), None)


def test_deleting_a_tool_through_the_api_is_audited(user, user_client):
    tool = ToolFactory(owner=user, name="weather", visibility="public")
    mark = last_pk()
    assert user_client.delete(f"/api/v1/tools/{tool.pk}/").status_code == 204
    row = only_new_row(mark)
    assert (row.actor, row.action, row.target_id) == (user, "tool.delete", str(tool.pk))
    assert row.before == {"owner": user.pk, "name": "weather", "visibility": "public", "status": tool.status}
    assert not Tool.objects.filter(pk=tool.pk).exists()


def test_deleting_workflows_in_the_admin_goes_through_the_service_and_is_audited(operator_client, operator):
    one, other = WorkflowFactory(), WorkflowFactory()
    mark = last_pk()
    response = operator_client.post(reverse("admin:workflows_workflow_delete", args=[one.pk]), {"post": "yes"})
    assert response.status_code == 302
    assert (only_new_row(mark).actor, only_new_row(mark).action) == (operator, "workflow.delete")

    mark = last_pk()
    operator_client.post(
        reverse("admin:workflows_workflow_changelist"),
        {"action": "delete_selected", "_selected_action": [other.pk], "post": "yes"},
    )
    assert (only_new_row(mark).action, only_new_row(mark).target_id) == ("workflow.delete", str(other.pk))
    assert not Workflow.objects.filter(pk__in=[one.pk, other.pk]).exists()
