import pytest

from history.services import audit_log_record
from tests.factories import AppFactory, AuditLogFactory

pytestmark = pytest.mark.django_db

AUDIT_LOGS = "/api/v1/audit-logs/"


def test_lists_only_rows_where_the_caller_is_the_actor(user_client, user, other_user):
    mine = AuditLogFactory(actor=user, action="app.disable")
    AuditLogFactory(actor=other_user)
    AuditLogFactory(actor=None, actor_repr="system")

    body = user_client.get(AUDIT_LOGS).json()

    assert [row["id"] for row in body["results"]] == [mine.pk]
    assert body["results"][0]["action"] == "app.disable"
    assert body["results"][0]["actor"] == user.pk


def test_another_users_row_is_404(user_client, other_user):
    theirs = AuditLogFactory(actor=other_user)
    assert user_client.get(f"{AUDIT_LOGS}{theirs.pk}/").status_code == 404


def test_own_row_in_detail(user_client, user):
    app = AppFactory(owner=user)
    row = audit_log_record(actor=user, action="app.enable", target=app, before={"status": "disabled"})
    body = user_client.get(f"{AUDIT_LOGS}{row.pk}/").json()
    assert body["target_type"] == "licensing.app"
    assert body["target_id"] == str(app.pk)
    assert body["before"] == {"status": "disabled"}


def test_the_trail_is_read_only(user_client, user):
    row = AuditLogFactory(actor=user)
    assert user_client.post(AUDIT_LOGS, {"action": "x"}, format="json").status_code == 405
    assert user_client.patch(f"{AUDIT_LOGS}{row.pk}/", {"action": "x"}, format="json").status_code == 405
    assert user_client.delete(f"{AUDIT_LOGS}{row.pk}/").status_code == 405


def test_filters(user_client, user):
    AuditLogFactory(actor=user, action="license.enable", target_type="licensing.license", target_id="7")
    AuditLogFactory(actor=user, action="app.disable", target_type="licensing.app", target_id="7")

    def actions(query: str) -> list[str]:
        response = user_client.get(f"{AUDIT_LOGS}?{query}")
        assert response.status_code == 200
        return [row["action"] for row in response.json()["results"]]

    assert actions("action=app.disable") == ["app.disable"]
    assert actions("target_type=licensing.license&target_id=7") == ["license.enable"]
    assert actions("created_after=2000-01-01T00:00:00Z") != []
    assert actions("created_before=2000-01-01T00:00:00Z") == []
    assert user_client.get(f"{AUDIT_LOGS}?created_after=yesterday").status_code == 400


def test_anonymous_is_refused(api_client):
    assert api_client.get(AUDIT_LOGS).status_code in (401, 403)
