import pytest

from history.models import AuditLog
from licensing.models import App, License
from tests.factories import AppFactory, LicenseFactory
from tests.licensing.conftest import CANARY_SECRET

pytestmark = pytest.mark.django_db

APPS = "/api/v1/apps/"


def detail(app) -> str:
    return f"{APPS}{app.pk}/"


def test_create_answers_201_with_the_secret_once(user_client, user):
    response = user_client.post(APPS, {"name": "Shop", "description": "front"}, format="json")

    assert response.status_code == 201, response.content
    body = response.json()
    stored = App.objects.get(pk=body["id"])
    assert body["api_secret"] == stored.api_secret
    assert body["api_key"] == stored.api_key
    assert body["owner"] == user.pk
    assert body["alias_id"]

    secret = body["api_secret"]
    for url in (APPS, detail(stored)):
        answer = user_client.get(url)
        assert answer.status_code == 200
        assert secret not in answer.content.decode()
        assert "api_secret" not in answer.content.decode()
    patched = user_client.patch(detail(stored), {"description": "new"}, format="json")
    assert patched.status_code == 200
    assert secret not in patched.content.decode()
    assert "api_secret" not in patched.json()


def test_rotate_answers_the_new_key_and_secret_once(user_client, canary_app):
    old_key = canary_app.api_key

    response = user_client.post(f"{detail(canary_app)}rotate/")

    assert response.status_code == 200, response.content
    body = response.json()
    canary_app.refresh_from_db()
    assert body["api_key"] == canary_app.api_key != old_key
    assert body["api_secret"] == canary_app.api_secret != CANARY_SECRET
    assert body["api_secret"] not in user_client.get(detail(canary_app)).content.decode()
    row = AuditLog.objects.get(action="app.rotate_credentials")
    assert row.before == {"api_key": old_key}
    logs = user_client.get("/api/v1/audit-logs/").content.decode()
    assert body["api_secret"] not in logs


def test_the_canary_secret_is_in_no_answer(user_client, canary_app, workflow):
    LicenseFactory(app=canary_app, group=workflow)
    user_client.patch(detail(canary_app), {"status": "disabled"}, format="json")
    answers = [
        user_client.get(APPS),
        user_client.get(detail(canary_app)),
        user_client.get(f"{APPS}?search={canary_app.name}"),
        user_client.patch(detail(canary_app), {"name": "renamed"}, format="json"),
        user_client.put(detail(canary_app), {"name": "put", "alias_id": canary_app.alias_id}, format="json"),
        user_client.get("/api/v1/licenses/"),
        user_client.get("/api/v1/audit-logs/"),
        user_client.post(APPS, {"name": "x", "api_secret": CANARY_SECRET}, format="json"),
        user_client.get("/api/schema/"),
    ]
    for answer in answers:
        assert answer.status_code < 500
        assert CANARY_SECRET not in answer.content.decode()


def test_only_the_owner_sees_an_app(other_client, canary_app):
    assert other_client.get(APPS).json()["count"] == 0
    assert other_client.get(detail(canary_app)).status_code == 404
    assert other_client.patch(detail(canary_app), {"name": "mine"}, format="json").status_code == 404
    assert other_client.post(f"{detail(canary_app)}rotate/").status_code == 404
    assert other_client.delete(detail(canary_app)).status_code == 404
    canary_app.refresh_from_db()
    assert canary_app.name != "mine"
    assert canary_app.api_secret == CANARY_SECRET


def test_list_shows_only_own_apps(user_client, app, others_app):
    ids = [row["id"] for row in user_client.get(APPS).json()["results"]]
    assert ids == [app.pk]


def test_list_filters_by_status(user_client, user):
    enabled = AppFactory(owner=user)
    AppFactory(owner=user, status="disabled")
    ids = [row["id"] for row in user_client.get(f"{APPS}?status=enabled").json()["results"]]
    assert ids == [enabled.pk]
    assert user_client.get(f"{APPS}?status=bogus").status_code == 400


def test_anonymous_callers_are_refused(api_client, app):
    assert api_client.get(APPS).status_code in (401, 403)
    assert api_client.post(f"{detail(app)}rotate/").status_code in (401, 403)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "x" * 31}, "name"),
        ({"name": ""}, "name"),
        ({}, "name"),
        ({"name": "ok", "surprise": 1}, "surprise"),
        ({"name": "ok", "api_secret": "mine"}, "api_secret"),
        ({"name": "ok", "api_key": "mine"}, "api_key"),
        ({"name": "ok", "alias_id": "a" * 65}, "alias_id"),
        ({"name": ["not", "a", "string"]}, "name"),
    ],
)
def test_bad_create_bodies_are_400_naming_the_field(user_client, body, field):
    response = user_client.post(APPS, body, format="json")
    assert response.status_code == 400
    assert field in response.json()
    assert not App.objects.exists()


def test_a_taken_alias_id_is_400_naming_alias_id(user_client, others_app):
    response = user_client.post(APPS, {"name": "x", "alias_id": others_app.alias_id}, format="json")
    assert response.status_code == 400
    assert "alias_id" in response.json()


def test_renaming_to_a_taken_alias_id_is_400(user_client, app, others_app):
    response = user_client.patch(detail(app), {"alias_id": others_app.alias_id}, format="json")
    assert response.status_code == 400
    assert "alias_id" in response.json()


def test_a_bad_status_is_400_naming_status(user_client, app):
    response = user_client.patch(detail(app), {"status": "paused"}, format="json")
    assert response.status_code == 400
    assert "status" in response.json()


def test_disabling_through_patch_is_audited(user_client, user, app):
    response = user_client.patch(detail(app), {"status": "disabled"}, format="json")
    assert response.status_code == 200
    assert response.json()["status"] == "disabled"
    row = AuditLog.objects.get(action="app.disable", target_id=str(app.pk))
    assert row.actor == user


def test_read_only_fields_cannot_be_written(user_client, app):
    response = user_client.patch(detail(app), {"is_tenant": True, "owner": 99}, format="json")
    assert response.status_code == 400
    assert set(response.json()) == {"is_tenant", "owner"}


def test_delete_removes_the_app_and_its_licenses(user_client, user, license):
    app_pk = license.app_id
    response = user_client.delete(f"{APPS}{app_pk}/")
    assert response.status_code == 204
    assert not App.objects.filter(pk=app_pk).exists()
    assert not License.objects.filter(pk=license.pk).exists()
    assert AuditLog.objects.filter(action="app.delete", actor=user).exists()


def test_the_schema_shows_the_secret_only_in_the_credentials_answer(user_client):
    schema = user_client.get("/api/schema/?format=json").json()
    components = schema["components"]["schemas"]
    assert "api_secret" in components["AppCredentials"]["properties"]
    assert "api_secret" not in components["App"]["properties"]
    assert "/api/v1/apps/{id}/rotate/" in schema["paths"]
    create = schema["paths"]["/api/v1/apps/"]["post"]["responses"]["201"]["content"]["application/json"]["schema"]
    assert create["$ref"].endswith("/AppCredentials")


def test_rotate_refuses_a_body(user_client, app):
    old_key = app.api_key
    response = user_client.post(f"{detail(app)}rotate/", {"api_secret": "chosen"}, format="json")
    assert response.status_code == 400
    assert "api_secret" in response.json()
    app.refresh_from_db()
    assert app.api_key == old_key


def test_the_browsable_api_pages_do_not_show_the_canary(user_client, canary_app):
    for url in (APPS, detail(canary_app), f"{detail(canary_app)}rotate/"):
        response = user_client.get(url, HTTP_ACCEPT="text/html")
        assert response.status_code in (200, 405), url
        assert response["Content-Type"].startswith("text/html")
        assert CANARY_SECRET not in response.content.decode(), url
