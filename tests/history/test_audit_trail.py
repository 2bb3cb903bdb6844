"""Every operator or owner action that changes access or secrets leaves an audit row: who, what,
before/after, when, and never the secret itself."""

import json

import pytest
from django.utils import timezone

from agents.services import provider_create, provider_update, tool_approve, tool_reject
from history.models import AuditLog
from licensing.services import (
    app_create,
    app_delete,
    app_rotate_credentials,
    app_set_status,
    license_grant,
    license_revoke,
    license_set_status,
)
from tests.factories import AppFactory, ToolFactory, UserFactory, WorkflowFactory
from workflows.services import workflow_member_remove, workflow_member_set

pytestmark = pytest.mark.django_db


@pytest.fixture
def operator():
    return UserFactory(is_staff=True, username="operator")


@pytest.fixture
def owner():
    return UserFactory(username="owner")


def only_new_row(since: int) -> AuditLog:
    rows = list(AuditLog.objects.filter(pk__gt=since).order_by("pk"))
    assert len(rows) == 1, [row.action for row in rows]
    return rows[0]


def last_pk() -> int:
    return AuditLog.objects.order_by("-pk").values_list("pk", flat=True).first() or 0


def check(row: AuditLog, *, actor, action: str, target, before, after, started) -> None:
    assert (row.actor, row.actor_repr) == (actor, str(actor))
    assert row.action == action
    assert (row.target_type, row.target_id) == (target._meta.label_lower, str(target.pk))
    assert (row.before, row.after) == (before, after)
    assert started <= row.created_at <= timezone.now()


def test_license_changes_are_audited(operator):
    app, workflow = AppFactory(), WorkflowFactory()
    started = timezone.now()

    mark = last_pk()
    license = license_grant(app=app, workflow=workflow, actor=operator)
    after = {"app": app.pk, "group": str(workflow.pk), "status": "enabled"}
    check(
        only_new_row(mark),
        actor=operator,
        action="license.grant",
        target=license,
        before=None,
        after=after,
        started=started,
    )

    mark = last_pk()
    license_set_status(license=license, status="disabled", actor=operator)
    check(
        only_new_row(mark),
        actor=operator,
        action="license.disable",
        target=license,
        before={"status": "enabled"},
        after={"status": "disabled"},
        started=started,
    )

    mark = last_pk()
    license_set_status(license=license, status="disabled", actor=operator)
    assert last_pk() == mark, "setting the status a license already has records nothing"

    mark = last_pk()
    license_set_status(license=license, status="enabled", actor=operator)
    assert only_new_row(mark).action == "license.enable"

    mark, license_pk = last_pk(), license.pk
    license_revoke(license=license, actor=operator)
    row = only_new_row(mark)
    assert (row.action, row.target_id, row.after) == ("license.revoke", str(license_pk), None)
    assert row.before == {"app": app.pk, "group": str(workflow.pk), "status": "enabled"}


def test_app_credentials_and_status_changes_are_audited_without_the_secret(operator, owner):
    started = timezone.now()
    mark = last_pk()
    app, secret = app_create(owner=owner, name="Shop", actor=operator)
    row = only_new_row(mark)
    assert (row.action, row.actor, row.after["api_key"]) == ("app.create", operator, app.api_key)
    secrets_seen = [secret]

    mark, old_key = last_pk(), app.api_key
    secrets_seen.append(app_rotate_credentials(app=app, actor=operator))
    check(
        only_new_row(mark),
        actor=operator,
        action="app.rotate_credentials",
        target=app,
        before={"api_key": old_key},
        after={"api_key": app.api_key},
        started=started,
    )

    mark = last_pk()
    app_set_status(app=app, status="disabled", actor=operator)
    check(
        only_new_row(mark),
        actor=operator,
        action="app.disable",
        target=app,
        before={"status": "enabled"},
        after={"status": "disabled"},
        started=started,
    )

    mark, app_pk = last_pk(), app.pk
    app_delete(app=app, actor=operator)
    row = only_new_row(mark)
    assert (row.action, row.target_id, row.before["status"]) == ("app.delete", str(app_pk), "disabled")

    stored = json.dumps(list(AuditLog.objects.values("before", "after", "payload", "target_repr")), default=str)
    assert not any(secret in stored for secret in secrets_seen)


def test_tool_approval_and_rejection_are_audited_with_the_reason(operator):
    started = timezone.now()
    tool = ToolFactory()
    mark = last_pk()
    tool_approve(tool=tool, reviewer=operator, reason="reviewed the endpoint")
    row = only_new_row(mark)
    check(
        row,
        actor=operator,
        action="tool.approve",
        target=tool,
        before={"status": "pending"},
        after={"status": "approved"},
        started=started,
    )
    assert row.payload == {"reason": "reviewed the endpoint"}

    mark = last_pk()
    tool_reject(tool=tool, reviewer=operator, reason="calls an unknown host")
    row = only_new_row(mark)
    check(
        row,
        actor=operator,
        action="tool.reject",
        target=tool,
        before={"status": "approved"},
        after={"status": "rejected"},
        started=started,
    )
    assert row.payload == {"reason": "calls an unknown host"}


def test_role_changes_are_audited(owner):
    started = timezone.now()
    workflow, member = WorkflowFactory(owner=owner), UserFactory()

    mark = last_pk()
    workflow_member_set(workflow=workflow, actor=owner, user=member, role="viewer")
    check(
        only_new_row(mark),
        actor=owner,
        action="workflow.member_add",
        target=workflow,
        before=None,
        after={"user": member.pk, "role": "viewer"},
        started=started,
    )

    mark = last_pk()
    workflow_member_set(workflow=workflow, actor=owner, user=member, role="editor")
    check(
        only_new_row(mark),
        actor=owner,
        action="workflow.member_role_change",
        target=workflow,
        before={"user": member.pk, "role": "viewer"},
        after={"user": member.pk, "role": "editor"},
        started=started,
    )

    mark = last_pk()
    workflow_member_remove(workflow=workflow, actor=owner, user=member)
    check(
        only_new_row(mark),
        actor=owner,
        action="workflow.member_remove",
        target=workflow,
        before={"user": member.pk, "role": "editor"},
        after=None,
        started=started,
    )


def test_provider_key_changes_are_audited_without_the_key(owner, operator):
    started = timezone.now()
    mark = last_pk()
    provider = provider_create(
        owner=owner, data={"name": "openai", "base_url": "https://api.example.com/v1", "api_key": "sk-first-0001"}
    )
    check(
        only_new_row(mark),
        actor=owner,
        action="provider.api_key_change",
        target=provider,
        before=None,
        after={"has_api_key": True},
        started=started,
    )

    mark = last_pk()
    provider_update(provider=provider, actor=operator, data={"api_key": "sk-second-0002"})
    assert only_new_row(mark).actor == operator

    mark = last_pk()
    provider_update(provider=provider, actor=owner, data={"name": "renamed"})
    assert last_pk() == mark, "a change that leaves the key alone records nothing"

    mark = last_pk()
    provider_update(provider=provider, actor=owner, data={"api_key": ""})
    assert only_new_row(mark).after == {"has_api_key": False}

    stored = json.dumps(list(AuditLog.objects.values("before", "after", "payload", "target_repr")), default=str)
    assert "sk-first-0001" not in stored
    assert "sk-second-0002" not in stored
