import pytest
from django.urls import reverse
from django.utils import timezone

from agents.models import Agent, LLMProvider, SessionWorkflow, Tool
from agents.services import tool_approve
from history.models import AuditLog
from tests.agents.conftest import CANARY_KEY, admin_change, admin_changelist
from tests.factories import (
    AgentFactory,
    LLMProviderFactory,
    MessageFactory,
    SessionFactory,
    SessionWorkflowFactory,
    ToolFactory,
)

pytestmark = pytest.mark.django_db


def provider_form(provider_owner, **extra) -> dict:
    return {
        "owner": provider_owner.pk,
        "name": "openai",
        "base_url": "https://api.example.com/v1",
        "model": "gpt",
        "available_models": "[]",
        "metadata": "{}",
        **extra,
    }


def test_provider_pages_never_show_the_key(operator, user):
    provider = LLMProviderFactory(owner=user, api_key=CANARY_KEY)
    pages = [
        admin_changelist(LLMProvider),
        admin_change(provider),
        reverse("admin:agents_llmprovider_history", args=[provider.pk]),
        reverse("admin:agents_llmprovider_delete", args=[provider.pk]),
        reverse("admin:agents_llmprovider_add"),
    ]
    for page in pages:
        response = operator.get(page)
        assert response.status_code == 200, page
        assert CANARY_KEY not in response.content.decode(), page
    searched = operator.get(admin_changelist(LLMProvider), {"q": CANARY_KEY})
    assert searched.context["cl"].result_count == 0
    form = operator.get(admin_change(provider)).content.decode()
    assert 'type="password" name="new_api_key"' in form
    assert 'name="api_key"' not in form


def test_adding_a_provider_in_the_admin_stores_the_key(operator, user, staff_user):
    response = operator.post(reverse("admin:agents_llmprovider_add"), provider_form(user, new_api_key=CANARY_KEY))
    assert response.status_code == 302
    provider = LLMProvider.objects.get(name="openai")
    assert provider.api_key == CANARY_KEY
    assert AuditLog.objects.filter(action="provider.api_key_change", actor=staff_user).count() == 1
    assert CANARY_KEY not in operator.get(admin_change(provider)).content.decode()


def test_a_blank_key_box_keeps_the_stored_key(operator, user):
    provider = LLMProviderFactory(owner=user, api_key=CANARY_KEY)
    response = operator.post(admin_change(provider), provider_form(user, name="renamed", new_api_key=""))
    assert response.status_code == 302
    provider.refresh_from_db()
    assert (provider.name, provider.api_key) == ("renamed", CANARY_KEY)
    assert not AuditLog.objects.exists()


def test_a_new_key_replaces_it_and_clearing_removes_it(operator, user):
    provider = LLMProviderFactory(owner=user, api_key=CANARY_KEY)
    operator.post(admin_change(provider), provider_form(user, new_api_key="sk-rotated"))
    provider.refresh_from_db()
    assert provider.api_key == "sk-rotated"
    operator.post(admin_change(provider), provider_form(user, clear_api_key="on"))
    provider.refresh_from_db()
    assert provider.api_key == ""


def run_tool_action(operator, action: str, tools, **extra):
    return operator.post(
        admin_changelist(Tool),
        {"action": action, "_selected_action": [tool.pk for tool in tools], **extra},
        follow=True,
    )


def test_the_approve_action_records_reviewer_time_and_audit_rows(operator, user, staff_user):
    tools = [ToolFactory(owner=user), ToolFactory(owner=user, status="rejected")]
    before = timezone.now()
    response = run_tool_action(operator, "approve_tools", tools)
    assert response.status_code == 200
    for tool in tools:
        tool.refresh_from_db()
        assert tool.status == "approved"
        assert tool.reviewer == staff_user
        assert tool.reviewed_at >= before
        row = AuditLog.objects.get(action="tool.approve", target_id=str(tool.pk))
        assert row.actor == staff_user
        assert row.after == {"status": "approved"}


def test_the_reject_action_records_the_reason(operator, user, staff_user):
    tool = ToolFactory(owner=user)
    run_tool_action(operator, "reject_tools", [tool], reason="Calls an unknown host")
    tool.refresh_from_db()
    assert (tool.status, tool.review_reason, tool.reviewer) == ("rejected", "Calls an unknown host", staff_user)
    row = AuditLog.objects.get(action="tool.reject", target_id=str(tool.pk))
    assert row.payload == {"reason": "Calls an unknown host"}


def test_the_reject_action_without_a_reason_changes_nothing(operator, user):
    tool = ToolFactory(owner=user)
    response = run_tool_action(operator, "reject_tools", [tool], reason="")
    assert "Reason box" in response.content.decode()
    tool.refresh_from_db()
    assert tool.status == "pending"
    assert tool.reviewer is None
    assert not AuditLog.objects.exists()


def test_tool_changelist_filters(operator, user):
    ToolFactory(owner=user, name="approved_one", status="approved")
    ToolFactory(owner=user, name="pending_one")
    content = operator.get(f"{admin_changelist(Tool)}?status__exact=approved").content.decode()
    assert "approved_one" in content
    assert "pending_one" not in content


def test_the_agent_form_offers_only_approved_tools(operator, user):
    approved = ToolFactory(owner=user, status="approved")
    pending = ToolFactory(owner=user)
    response = operator.get(reverse("admin:agents_agent_add"))
    choices = set(response.context["adminform"].form.fields["tools"].queryset)
    assert approved in choices
    assert pending not in choices

    agent = AgentFactory(owner=user)
    response = operator.post(
        admin_change(agent),
        {
            "owner": user.pk,
            "name": agent.name,
            "status": "active",
            "tools": [pending.pk],
            "max_steps": 10,
            "token_budget": 0,
        },
    )
    assert response.status_code == 200  # the form comes back with an error
    assert not Agent.objects.get(pk=agent.pk).tools.exists()


def test_session_page_shows_its_messages_read_only(operator, user):
    session = SessionFactory(owner=user)
    MessageFactory(session=session, content="the first message", sequence_number=1)
    response = operator.get(admin_change(session))
    content = response.content.decode()
    assert response.status_code == 200
    assert "the first message" in content
    assert 'name="messages-0-content"' not in content


def test_session_workflow_pages_render(operator, user):
    version = SessionWorkflowFactory(session=SessionFactory(owner=user))
    assert operator.get(admin_changelist(SessionWorkflow)).status_code == 200
    assert operator.get(admin_change(version)).status_code == 200


def tool_form(tool, **extra) -> dict:
    return {
        "owner": tool.owner_id,
        "name": tool.name,
        "description": tool.description,
        "category": "",
        "kind": tool.kind,
        "endpoint": tool.endpoint,
        "parameters": '{"type": "object"}',
        "config": "{}",
        "visibility": tool.visibility,
        **extra,
    }


def test_tool_pages_never_show_its_headers_and_the_form_sets_them(operator, user):
    tool = ToolFactory(owner=user, secret_headers={"Authorization": f"Bearer {CANARY_KEY}"})
    pages = [
        admin_changelist(Tool),
        admin_change(tool),
        reverse("admin:agents_tool_history", args=[tool.pk]),
        reverse("admin:agents_tool_delete", args=[tool.pk]),
    ]
    for page in pages:
        response = operator.get(page)
        assert response.status_code == 200, page
        assert CANARY_KEY not in response.content.decode(), page
    assert "Authorization" in operator.get(admin_change(tool)).content.decode()  # the name only

    kept = operator.post(admin_change(tool), tool_form(tool, description="renamed"))
    assert kept.status_code == 302
    tool.refresh_from_db()
    assert tool.secret_headers == {"Authorization": f"Bearer {CANARY_KEY}"}
    operator.post(admin_change(tool), tool_form(tool, new_headers='{"X-Api-Key": "rotated"}'))
    tool.refresh_from_db()
    assert tool.secret_headers == {"X-Api-Key": "rotated"}
    in_config = operator.post(admin_change(tool), tool_form(tool, config='{"headers": {"X-Api-Key": "k"}}'))
    assert in_config.status_code == 200  # the form again, with its error
    operator.post(admin_change(tool), tool_form(tool, clear_headers="on"))
    tool.refresh_from_db()
    assert tool.secret_headers == {}


def test_a_tool_changed_in_the_admin_goes_back_to_review_as_through_the_api(operator, user, staff_user):
    tool = ToolFactory(owner=user, endpoint="https://tools.example.com/a")
    tool_approve(tool=tool, reviewer=staff_user)

    response = operator.post(admin_change(tool), tool_form(tool, endpoint="https://tools.example.com/b"))

    assert response.status_code == 302
    tool.refresh_from_db()
    assert (tool.endpoint, tool.status, tool.reviewer) == ("https://tools.example.com/b", "pending", None)
    reset = AuditLog.objects.get(action="tool.review_reset")
    assert (reset.actor, reset.before, reset.after) == (staff_user, {"status": "approved"}, {"status": "pending"})


def test_tools_deleted_in_the_admin_are_audited_one_by_one(operator, user, staff_user):
    tools = [ToolFactory(owner=user), ToolFactory(owner=user)]
    operator.post(reverse("admin:agents_tool_delete", args=[tools[0].pk]), {"post": "yes"})
    operator.post(
        admin_changelist(Tool), {"action": "delete_selected", "_selected_action": [tools[1].pk], "post": "yes"}
    )

    assert not Tool.objects.exists()
    deleted = AuditLog.objects.filter(action="tool.delete", actor=staff_user)
    assert sorted(deleted.values_list("target_id", flat=True)) == sorted(str(tool.pk) for tool in tools)


def test_a_provider_added_in_the_admin_is_its_owners_and_its_key_change_names_the_operator(operator, user, staff_user):
    operator.post(reverse("admin:agents_llmprovider_add"), provider_form(user, new_api_key=CANARY_KEY))
    provider = LLMProvider.objects.get(name="openai")

    response = operator.post(admin_change(provider), provider_form(user, name="taken", owner=staff_user.pk))

    assert response.status_code == 302
    provider.refresh_from_db()
    assert (provider.owner, provider.name) == (user, "taken")  # the owner is not the form's to change
