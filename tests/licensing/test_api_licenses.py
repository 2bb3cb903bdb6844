import uuid

import pytest

from history.models import AuditLog
from licensing.models import License
from tests.factories import AppFactory, LicenseFactory, WorkflowFactory, WorkflowMemberFactory

pytestmark = pytest.mark.django_db

LICENSES = "/api/v1/licenses/"


def test_grant_own_app_access_to_own_workflow(user_client, user, app, workflow):
    response = user_client.post(LICENSES, {"app": app.pk, "group": str(workflow.pk)}, format="json")

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["app"] == app.pk
    assert body["group"] == str(workflow.pk)
    assert body["status"] == "enabled"
    license = License.objects.get(pk=body["id"])
    assert AuditLog.objects.filter(action="license.grant", target_id=str(license.pk), actor=user).exists()


def test_grant_to_a_workflow_held_with_the_owner_role(user_client, user, app, other_user):
    shared = WorkflowFactory(owner=other_user)
    WorkflowMemberFactory(workflow=shared, user=user, role="owner")
    response = user_client.post(LICENSES, {"app": app.pk, "group": str(shared.pk), "status": "disabled"})
    assert response.status_code == 201, response.content
    assert response.json()["status"] == "disabled"


def test_a_viewer_may_not_license_the_workflow(user_client, user, app, other_user):
    shared = WorkflowFactory(owner=other_user)
    WorkflowMemberFactory(workflow=shared, user=user, role="viewer")
    response = user_client.post(LICENSES, {"app": app.pk, "group": str(shared.pk)})
    assert response.status_code == 400
    assert "group" in response.json()


def test_another_users_app_is_400_naming_app(user_client, others_app, workflow):
    response = user_client.post(LICENSES, {"app": others_app.pk, "group": str(workflow.pk)}, format="json")
    assert response.status_code == 400
    assert set(response.json()) == {"app"}
    assert not License.objects.exists()


def test_another_users_workflow_is_400_naming_group(user_client, app, other_user):
    theirs = WorkflowFactory(owner=other_user)
    response = user_client.post(LICENSES, {"app": app.pk, "group": str(theirs.pk)}, format="json")
    assert response.status_code == 400
    assert set(response.json()) == {"group"}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"group": "not-a-uuid"}, "group"),
        ({"group": str(uuid.uuid4())}, "group"),
        ({"app": "abc"}, "app"),
        ({"app": 10**9}, "app"),
        ({"status": "maybe"}, "status"),
        ({"extra": True}, "extra"),
    ],
)
def test_bad_grant_bodies_are_400_naming_the_field(user_client, app, workflow, body, field):
    payload = {"app": app.pk, "group": str(workflow.pk), **body}
    response = user_client.post(LICENSES, payload, format="json")
    assert response.status_code == 400
    assert field in response.json()


def test_a_duplicate_grant_is_409_naming_group(user_client, license):
    response = user_client.post(LICENSES, {"app": license.app_id, "group": str(license.group_id)}, format="json")
    assert response.status_code == 409
    assert response.json()["field"] == "group"
    assert License.objects.count() == 1


def test_patch_status_turns_a_license_off_and_is_audited(user_client, user, license):
    response = user_client.patch(f"{LICENSES}{license.pk}/", {"status": "disabled"}, format="json")
    assert response.status_code == 200
    assert response.json()["status"] == "disabled"
    license.refresh_from_db()
    assert license.status == "disabled"
    row = AuditLog.objects.get(action="license.disable")
    assert (row.actor, row.before, row.after) == (user, {"status": "enabled"}, {"status": "disabled"})


@pytest.mark.parametrize(
    "body",
    [{"status": "maybe"}, {"status": None}, {}, {"app": 1}, {"status": "disabled", "group": str(uuid.uuid4())}],
)
def test_bad_patches_are_400(user_client, license, body):
    response = user_client.patch(f"{LICENSES}{license.pk}/", body, format="json")
    assert response.status_code == 400
    license.refresh_from_db()
    assert license.status == "enabled"


def test_put_is_not_offered(user_client, license):
    response = user_client.put(f"{LICENSES}{license.pk}/", {"status": "disabled"}, format="json")
    assert response.status_code == 405


def test_only_licenses_of_own_apps_are_visible(user_client, license, others_license):
    ids = [row["id"] for row in user_client.get(LICENSES).json()["results"]]
    assert ids == [license.pk]
    url = f"{LICENSES}{others_license.pk}/"
    assert user_client.get(url).status_code == 404
    assert user_client.patch(url, {"status": "disabled"}, format="json").status_code == 404
    assert user_client.delete(url).status_code == 404
    others_license.refresh_from_db()
    assert others_license.status == "enabled"


def test_filter_by_app_and_status(user_client, user, license):
    other_app = AppFactory(owner=user)
    LicenseFactory(app=other_app, group=license.group, status="disabled")
    ids = [row["id"] for row in user_client.get(f"{LICENSES}?app={license.app_id}").json()["results"]]
    assert ids == [license.pk]
    rows = user_client.get(f"{LICENSES}?status=disabled").json()["results"]
    assert [row["app"] for row in rows] == [other_app.pk]
    assert user_client.get(f"{LICENSES}?group=nope").status_code == 400


def test_delete_revokes(user_client, user, license):
    response = user_client.delete(f"{LICENSES}{license.pk}/")
    assert response.status_code == 204
    assert not License.objects.exists()
    assert AuditLog.objects.filter(action="license.revoke", actor=user).exists()
