import importlib

import pytest
from django.db import connection
from django.utils import timezone

from agents.models import Tool
from agents.services import tool_approve, tool_reject
from config.errors import InvalidInput
from history.models import AuditLog
from tests.factories import ToolFactory

pytestmark = pytest.mark.django_db

TOOLS = "/api/v1/tools/"
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


def detail(tool) -> str:
    return f"{TOOLS}{tool.pk}/"


def listed_ids(response) -> set[str]:
    return {row["id"] for row in response.json()["results"]}


def test_a_new_tool_waits_for_review(user_client, user):
    response = user_client.post(
        TOOLS, {"name": "weather", "endpoint": "https://tools.example/weather", "parameters": SCHEMA}
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["status"] == "pending"
    assert body["is_own"] is True
    assert Tool.objects.get(pk=body["id"]).owner == user


def test_a_tool_cannot_approve_itself(user_client, user):
    response = user_client.post(
        TOOLS, {"name": "t", "endpoint": "https://tools.example/t", "status": "approved", "review_reason": "mine"}
    )
    tool = Tool.objects.get(owner=user)
    assert response.json()["status"] == "pending"
    assert (tool.status, tool.review_reason) == ("pending", "")
    user_client.patch(detail(tool), {"status": "approved"})
    tool.refresh_from_db()
    assert tool.status == "pending"


@pytest.mark.parametrize(
    "parameters",
    [
        {"type": "not-a-type"},
        {"type": "object", "properties": {"city": {"type": 5}}},
        {"type": "object", "required": "city"},
        {"type": "string"},
    ],
)
def test_parameters_must_be_a_json_schema_of_an_object(user_client, parameters):
    response = user_client.post(TOOLS, {"name": "t", "endpoint": "https://tools.example/t", "parameters": parameters})
    assert response.status_code == 400
    assert response.json()["field"] == "parameters"
    assert not Tool.objects.exists()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "t", "endpoint": "https://x.example", "parameters": ["a"]}, "parameters"),
        ({"name": "t", "endpoint": "https://x.example", "kind": "shell"}, "kind"),
        ({"name": "t", "endpoint": "https://x.example", "visibility": "shared"}, "visibility"),
        ({"name": "t" * 256, "endpoint": "https://x.example"}, "name"),
        ({"name": "t", "endpoint": "https://x.example", "category": "c" * 51}, "category"),
        ({"name": "t", "endpoint": "https://x.example", "owner": 1}, "owner"),
        ({"name": "t"}, "endpoint"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(user_client, body, field):
    response = user_client.post(TOOLS, body)
    assert response.status_code == 400
    body = response.json()
    assert field in body or body.get("field") == field


def test_a_duplicate_name_is_a_400(user_client, user):
    ToolFactory(owner=user, name="weather")
    response = user_client.post(TOOLS, {"name": "weather", "endpoint": "https://x.example"})
    assert response.status_code == 400
    assert response.json()["field"] == "name"


def test_list_shows_own_tools_and_others_public_approved_ones(user_client, user, other_user):
    own_pending = ToolFactory(owner=user)
    public_approved = ToolFactory(owner=other_user, visibility="public", status="approved")
    hidden = [
        ToolFactory(owner=other_user, visibility="public", status="pending"),
        ToolFactory(owner=other_user, visibility="public", status="rejected"),
        ToolFactory(owner=other_user, visibility="private", status="approved"),
    ]
    response = user_client.get(TOOLS)
    assert listed_ids(response) == {str(own_pending.pk), str(public_approved.pk)}
    row = next(r for r in response.json()["results"] if r["id"] == str(public_approved.pk))
    assert row["is_own"] is False
    for tool in hidden:
        assert user_client.get(detail(tool)).status_code == 404
        assert user_client.patch(detail(tool), {"description": "x"}).status_code == 404
        assert user_client.delete(detail(tool)).status_code == 404


def test_others_public_tools_are_read_only(user_client, other_user):
    theirs = ToolFactory(owner=other_user, visibility="public", status="approved")
    assert user_client.get(detail(theirs)).status_code == 200
    assert user_client.patch(detail(theirs), {"description": "mine"}).status_code == 403
    assert user_client.delete(detail(theirs)).status_code == 403
    theirs.refresh_from_db()
    assert theirs.description != "mine"


def test_filters(user_client, user):
    approved = ToolFactory(owner=user, status="approved")
    ToolFactory(owner=user)
    assert listed_ids(user_client.get(f"{TOOLS}?status=approved")) == {str(approved.pk)}
    assert user_client.get(f"{TOOLS}?status=bogus").status_code == 400


def test_editing_an_approved_tool_sends_it_back_to_review(user_client, user, staff_user):
    tool = tool_approve(tool=ToolFactory(owner=user), reviewer=staff_user)
    response = user_client.patch(detail(tool), {"endpoint": "https://elsewhere.example/t"})
    assert response.status_code == 200
    assert response.json()["status"] == "pending"
    tool.refresh_from_db()
    assert (tool.status, tool.reviewer, tool.reviewed_at) == ("pending", None, None)


def test_an_edit_that_changes_nothing_keeps_the_review(user_client, user, staff_user):
    tool = tool_approve(tool=ToolFactory(owner=user), reviewer=staff_user)
    assert user_client.patch(detail(tool), {"name": tool.name}).json()["status"] == "approved"


def test_approve_and_reject_record_the_review_and_an_audit_row(user, staff_user):
    tool = ToolFactory(owner=user)
    before = timezone.now()
    tool_approve(tool=tool, reviewer=staff_user, reason="looks fine")
    tool.refresh_from_db()
    assert tool.status == "approved"
    assert tool.reviewer == staff_user
    assert tool.reviewed_at >= before
    tool_reject(tool=tool, reviewer=staff_user, reason="calls a shady host")
    tool.refresh_from_db()
    assert (tool.status, tool.review_reason) == ("rejected", "calls a shady host")
    rows = AuditLog.objects.filter(target_id=str(tool.pk)).order_by("created_at", "pk")
    assert [(r.action, r.before, r.after, r.actor) for r in rows] == [
        ("tool.approve", {"status": "pending"}, {"status": "approved"}, staff_user),
        ("tool.reject", {"status": "approved"}, {"status": "rejected"}, staff_user),
    ]


def test_a_rejection_needs_a_reason(user, staff_user):
    tool = ToolFactory(owner=user)
    with pytest.raises(InvalidInput) as raised:
        tool_reject(tool=tool, reviewer=staff_user, reason="  ")
    assert raised.value.field == "reason"
    tool.refresh_from_db()
    assert tool.status == "pending"
    assert not AuditLog.objects.exists()


# --- Headers: credentials are write-only, config is the owner's -----------------------------------

TOOL_TOKEN = "tool-canary-7c1e5a90-never-shown"


def test_headers_are_write_only_and_stored_encrypted(user_client, user):
    response = user_client.post(
        TOOLS,
        {
            "name": "crm",
            "endpoint": "https://crm.example/api",
            "config": {"method": "POST", "timeout_s": 5},
            "headers": {"Authorization": f"Bearer {TOOL_TOKEN}", "X-Api-Key": TOOL_TOKEN},
        },
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert TOOL_TOKEN not in response.content.decode()
    assert "headers" not in body
    assert body["header_names"] == ["Authorization", "X-Api-Key"]
    assert body["config"] == {"method": "POST", "timeout_s": 5}
    tool = Tool.objects.get(pk=body["id"])
    assert tool.secret_headers["Authorization"] == f"Bearer {TOOL_TOKEN}"
    with connection.cursor() as cursor:
        cursor.execute("SELECT secret_headers, config FROM tools")
        stored, config = cursor.fetchone()
    assert TOOL_TOKEN.encode() not in bytes(stored)
    assert TOOL_TOKEN not in str(config)

    kept = user_client.patch(detail(tool), {"description": "still with headers"})
    assert kept.json()["header_names"] == ["Authorization", "X-Api-Key"]
    cleared = user_client.patch(detail(tool), {"headers": {}})
    assert cleared.json()["header_names"] == []
    tool.refresh_from_db()
    assert tool.secret_headers == {}


def test_headers_in_config_are_refused(user_client, user):
    response = user_client.post(
        TOOLS,
        {"name": "t", "endpoint": "https://x.example", "config": {"headers": {"Authorization": "Bearer x"}}},
    )
    assert response.status_code == 400
    assert response.json()["field"] == "config"
    assert not Tool.objects.exists()


def test_a_public_tool_shows_neither_config_nor_headers_to_others(user_client, other_user):
    theirs = ToolFactory(
        owner=other_user,
        visibility="public",
        status="approved",
        config={"method": "GET"},
        secret_headers={"Authorization": f"Bearer {TOOL_TOKEN}"},
    )
    for response in (user_client.get(detail(theirs)), user_client.get(TOOLS)):
        assert response.status_code == 200
        assert TOOL_TOKEN not in response.content.decode()
    row = user_client.get(detail(theirs)).json()
    assert (row["config"], row["header_names"], row["is_own"]) == (None, None, False)


def test_the_migration_moves_every_header_out_of_config():
    from django.apps import apps

    migration = importlib.import_module("agents.migrations.0003_tool_secret_headers")
    old = ToolFactory(config={"method": "GET", "headers": {"Authorization": f"Bearer {TOOL_TOKEN}", "X-Team": "a"}})
    plain = ToolFactory(config={"method": "POST"})
    migration.headers_to_secret(apps, None)
    old.refresh_from_db()
    plain.refresh_from_db()
    assert old.config == {"method": "GET"}
    assert old.secret_headers == {"Authorization": f"Bearer {TOOL_TOKEN}", "X-Team": "a"}
    assert (plain.config, plain.secret_headers) == ({"method": "POST"}, {})
    migration.headers_back_to_config(apps, None)
    old.refresh_from_db()
    assert old.config["headers"]["X-Team"] == "a"
