import pytest

from agents.models import Agent
from tests.factories import AgentFactory, LLMProviderFactory, ToolFactory

pytestmark = pytest.mark.django_db

AGENTS = "/api/v1/agents/"


def detail(agent) -> str:
    return f"{AGENTS}{agent.pk}/"


def test_create_an_agent_with_own_provider_and_approved_tools(user_client, user, other_user):
    provider = LLMProviderFactory(owner=user)
    own = ToolFactory(owner=user, status="approved")
    public = ToolFactory(owner=other_user, visibility="public", status="approved")
    response = user_client.post(
        AGENTS,
        {"name": "Helper", "provider": str(provider.pk), "tools": [str(own.pk), str(public.pk)], "goal": "help"},
    )
    assert response.status_code == 201, response.content
    agent = Agent.objects.get(pk=response.json()["id"])
    assert agent.owner == user
    assert agent.provider == provider
    assert set(agent.tools.all()) == {own, public}


@pytest.mark.parametrize("status", ["pending", "rejected"])
def test_an_unapproved_tool_cannot_be_attached(user_client, user, status):
    tool = ToolFactory(owner=user, status=status)
    response = user_client.post(AGENTS, {"name": "Helper", "tools": [str(tool.pk)]})
    assert response.status_code == 400
    assert response.json()["field"] == "tools"
    assert not Agent.objects.exists()

    agent = AgentFactory(owner=user)
    response = user_client.patch(detail(agent), {"tools": [str(tool.pk)]})
    assert response.status_code == 400
    assert response.json()["field"] == "tools"
    assert not agent.tools.exists()


def test_another_users_private_tool_or_provider_cannot_be_used(user_client, other_user):
    private = ToolFactory(owner=other_user, status="approved")
    response = user_client.post(AGENTS, {"name": "Helper", "tools": [str(private.pk)]})
    assert response.status_code == 400
    assert "tools" in response.json()

    provider = LLMProviderFactory(owner=other_user)
    response = user_client.post(AGENTS, {"name": "Helper", "provider": str(provider.pk)})
    assert response.status_code == 400
    assert "provider" in response.json()
    assert not Agent.objects.exists()


def test_another_users_agent_does_not_exist(user_client, other_user):
    theirs = AgentFactory(owner=other_user)
    assert user_client.get(AGENTS).json()["count"] == 0
    assert user_client.get(detail(theirs)).status_code == 404
    assert user_client.patch(detail(theirs), {"name": "x"}).status_code == 404
    assert user_client.delete(detail(theirs)).status_code == 404
    assert Agent.objects.filter(pk=theirs.pk).exists()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "a", "status": "deleted"}, "status"),
        ({"name": "a", "max_steps": 0}, "max_steps"),
        ({"name": "a", "max_steps": "many"}, "max_steps"),
        ({"name": "a" * 256}, "name"),
        ({"name": "a", "tools": ["not-a-uuid"]}, "tools"),
        ({"name": "a", "secret": 1}, "secret"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(user_client, body, field):
    response = user_client.post(AGENTS, body)
    assert response.status_code == 400
    assert field in response.json()


def test_update_and_delete_own_agent(user_client, user):
    agent = AgentFactory(owner=user)
    assert user_client.patch(detail(agent), {"status": "archived"}).json()["status"] == "archived"
    assert user_client.delete(detail(agent)).status_code == 204
    assert not Agent.objects.exists()


def test_replace_an_agents_tools(user_client, user):
    old, new = ToolFactory(owner=user, status="approved"), ToolFactory(owner=user, status="approved")
    agent = AgentFactory(owner=user)
    agent.tools.set([old])
    response = user_client.patch(detail(agent), {"tools": [str(new.pk)]})
    assert response.status_code == 200
    assert response.json()["tools"] == [str(new.pk)]
    assert list(agent.tools.all()) == [new]
