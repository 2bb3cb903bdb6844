import pytest
from django.urls import reverse

from templates.models import WorkflowTemplate
from tests.factories import SIMPLE_GRAPH, WorkflowFactory, WorkflowMemberFactory, WorkflowTemplateFactory
from workflows.models import Workflow
from workflows.selectors import workflow_graph
from workflows.services import workflow_create

pytestmark = pytest.mark.django_db

TEMPLATES = "/api/v1/templates/"


@pytest.fixture(autouse=True)
def _no_official_templates(db):
    """The migration ships official templates; these tests count their own."""
    WorkflowTemplate.objects.filter(is_official=True).delete()


def detail(template) -> str:
    return f"{TEMPLATES}{template.pk}/"


def names(response) -> list[str]:
    assert response.status_code == 200, response.content
    return [row["name"] for row in response.json()["results"]]


@pytest.fixture
def catalogue(user, other_user):
    """One template of each kind the user sees, and two they do not."""
    return {
        "official": WorkflowTemplateFactory(owner=None, is_official=True, name="official", usage_count=1),
        "popular": WorkflowTemplateFactory(owner=other_user, is_public=True, name="popular", usage_count=50),
        "community": WorkflowTemplateFactory(owner=other_user, is_public=True, name="community", usage_count=5),
        "mine": WorkflowTemplateFactory(owner=user, name="mine", usage_count=2),
        "their_private": WorkflowTemplateFactory(owner=other_user, name="their_private"),
        "official_private": WorkflowTemplateFactory(owner=None, is_official=True, name="official2", usage_count=0),
    }


def test_the_default_list_is_official_first_then_most_used(user_client, catalogue):
    assert names(user_client.get(TEMPLATES)) == ["official", "official2", "popular", "community", "mine"]


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("official", ["official", "official2"]),
        ("community", ["popular", "community"]),
        ("mine", ["mine"]),
    ],
)
def test_kinds(user_client, catalogue, kind, expected):
    response = user_client.get(TEMPLATES, {"kind": kind})
    assert names(response) == expected
    assert {row["kind"] for row in response.json()["results"]} == {kind}


def test_a_bad_kind_is_a_400(user_client):
    response = user_client.get(TEMPLATES, {"kind": "secret"})
    assert response.status_code == 400
    assert "kind" in response.json()


def test_category_and_search(user_client, user):
    WorkflowTemplateFactory(owner=user, name="Weather report", category="travel")
    WorkflowTemplateFactory(owner=user, name="Invoice", category="finance", description="bills")
    assert names(user_client.get(TEMPLATES, {"category": "travel"})) == ["Weather report"]
    assert names(user_client.get(TEMPLATES, {"search": "bills"})) == ["Invoice"]


def test_save_a_graph_as_a_template(user_client, user):
    response = user_client.post(
        TEMPLATES, {"name": "Greeter", "description": "d", "category": "demo", "template_data": SIMPLE_GRAPH}
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["kind"], body["is_official"], body["is_public"], body["usage_count"]) == ("mine", False, False, 0)
    template = WorkflowTemplate.objects.get(pk=body["id"])
    assert template.owner == user
    assert [node["id"] for node in template.template_data["nodes"]] == ["start", "greet", "end"]


def test_save_a_workflow_the_caller_can_view_as_a_private_template(user_client, user, other_user):
    workflow = workflow_create(owner=other_user, name="Shared", description="theirs", graph=SIMPLE_GRAPH)
    WorkflowMemberFactory(workflow=workflow, user=user, role="viewer")
    response = user_client.post(TEMPLATES, {"workflow": str(workflow.pk)})
    assert response.status_code == 201, response.content
    assert response.json()["publishable"] is False
    template = WorkflowTemplate.objects.get(pk=response.json()["id"])
    assert (template.owner, template.name, template.description, template.is_public) == (
        user,
        "Shared",
        "theirs",
        False,
    )
    assert template.template_data == workflow_graph(workflow=workflow)


@pytest.mark.parametrize("role", ["viewer", "editor", "executor"])
def test_only_who_manages_a_workflow_may_publish_it_as_a_template(user_client, user, other_user, role):
    workflow = workflow_create(owner=other_user, name="Private", graph=SIMPLE_GRAPH)
    WorkflowMemberFactory(workflow=workflow, user=user, role=role)

    response = user_client.post(TEMPLATES, {"workflow": str(workflow.pk), "is_public": True})

    assert response.status_code == 403, response.content
    assert response.json()["code"] == "not_publishable"
    assert not WorkflowTemplate.objects.exists()


def test_a_private_copy_of_a_workflow_one_cannot_manage_cannot_be_made_public_later(user_client, user, other_user):
    workflow = workflow_create(owner=other_user, name="Private", graph=SIMPLE_GRAPH)
    WorkflowMemberFactory(workflow=workflow, user=user, role="viewer")
    copy_id = user_client.post(TEMPLATES, {"workflow": str(workflow.pk)}).json()["id"]

    response = user_client.patch(f"{TEMPLATES}{copy_id}/", {"is_public": True})

    assert response.status_code == 403
    assert WorkflowTemplate.objects.get(pk=copy_id).is_public is False


def test_the_owner_publishes_their_own_workflow(user_client, user):
    workflow = workflow_create(owner=user, name="Mine", graph=SIMPLE_GRAPH)
    response = user_client.post(TEMPLATES, {"workflow": str(workflow.pk), "is_public": True})
    assert response.status_code == 201, response.content
    assert (response.json()["is_public"], response.json()["publishable"]) == (True, True)
    private = user_client.post(TEMPLATES, {"workflow": str(workflow.pk)}).json()["id"]
    assert user_client.patch(f"{TEMPLATES}{private}/", {"is_public": True}).status_code == 200


def test_a_workflow_the_caller_cannot_view_is_not_found(user_client, other_user):
    workflow = WorkflowFactory(owner=other_user)
    response = user_client.post(TEMPLATES, {"workflow": str(workflow.pk)})
    assert response.status_code == 404
    assert not WorkflowTemplate.objects.exists()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "t"}, "template_data"),
        (
            {"name": "t", "template_data": SIMPLE_GRAPH, "workflow": "00000000-0000-0000-0000-000000000000"},
            "template_data",
        ),
        ({"template_data": SIMPLE_GRAPH}, "name"),
        ({"name": "t" * 256, "template_data": SIMPLE_GRAPH}, "name"),
        ({"name": "t", "template_data": SIMPLE_GRAPH, "category": "c" * 65}, "category"),
        ({"name": "t", "template_data": SIMPLE_GRAPH, "is_official": True}, "is_official"),
        ({"name": "t", "template_data": "a graph"}, "template_data"),
        ({"name": "t", "template_data": SIMPLE_GRAPH, "is_public": "perhaps"}, "is_public"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(user_client, body, field):
    response = user_client.post(TEMPLATES, body)
    assert response.status_code == 400
    assert field in response.json()
    assert not WorkflowTemplate.objects.exists()


def test_an_invalid_graph_is_a_400_with_its_errors(user_client):
    bad = {"nodes": [{"id": "start", "type": "start"}], "edges": [{"source": "start", "target": "nowhere"}]}
    response = user_client.post(TEMPLATES, {"name": "t", "template_data": bad})
    assert response.status_code == 400
    assert response.json()["errors"]
    assert not WorkflowTemplate.objects.exists()


def test_instantiate_makes_a_workflow_and_counts_the_use(user_client, user, other_user):
    template = WorkflowTemplateFactory(owner=other_user, is_public=True, name="Greeter")
    response = user_client.post(f"{detail(template)}instantiate/", {"name": "My greeter"})
    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["name"], body["source"], body["source_template"]) == ("My greeter", "template", str(template.pk))
    workflow = Workflow.objects.get(pk=body["id"])
    assert workflow.owner == user
    assert sorted(node["id"] for node in workflow_graph(workflow=workflow)["nodes"]) == ["end", "greet", "start"]

    second = user_client.post(f"{detail(template)}instantiate/")
    assert second.json()["name"] == "Greeter"
    template.refresh_from_db()
    assert template.usage_count == 2


@pytest.mark.parametrize("body", [{"name": "n" * 256}, {"name": "x", "owner": 3}])
def test_instantiate_rejects_bad_input(user_client, user, body):
    template = WorkflowTemplateFactory(owner=user)
    assert user_client.post(f"{detail(template)}instantiate/", body).status_code == 400
    assert not Workflow.objects.exists()
    template.refresh_from_db()
    assert template.usage_count == 0


def test_another_users_private_template_does_not_exist(user_client, other_user):
    private = WorkflowTemplateFactory(owner=other_user)
    assert names(user_client.get(TEMPLATES)) == []
    for response in (
        user_client.get(detail(private)),
        user_client.patch(detail(private), {"name": "x"}),
        user_client.delete(detail(private)),
        user_client.post(f"{detail(private)}instantiate/"),
    ):
        assert response.status_code == 404
    private.refresh_from_db()
    assert private.usage_count == 0


def test_visible_templates_of_others_and_official_ones_are_read_only(user_client, other_user):
    for template in (
        WorkflowTemplateFactory(owner=other_user, is_public=True),
        WorkflowTemplateFactory(owner=None, is_official=True),
    ):
        assert user_client.get(detail(template)).status_code == 200
        assert user_client.patch(detail(template), {"name": "x"}).status_code == 403
        assert user_client.delete(detail(template)).status_code == 403
        assert WorkflowTemplate.objects.filter(pk=template.pk).exclude(name="x").exists()


def test_owner_edits_and_deletes_own_template(user_client, user):
    template = WorkflowTemplateFactory(owner=user)
    response = user_client.patch(detail(template), {"is_public": True, "category": "demo"})
    assert response.status_code == 200
    assert (response.json()["is_public"], response.json()["category"]) == (True, "demo")
    bad = user_client.patch(detail(template), {"template_data": {"nodes": "many"}})
    assert bad.status_code == 400
    assert user_client.delete(detail(template)).status_code == 204
    assert not WorkflowTemplate.objects.exists()


def test_staff_edit_official_templates_in_the_admin(client, staff_user):
    client.force_login(staff_user)
    template = WorkflowTemplateFactory(owner=None, is_official=True, name="Official")
    url = reverse("admin:workflow_templates_workflowtemplate_change", args=[template.pk])
    assert client.get(url).status_code == 200
    form = {
        "name": "Official v2",
        "description": "",
        "category": "",
        "owner": "",
        "is_official": "on",
        "is_public": "on",
        "template_data": '{"nodes": [], "edges": []}',
    }
    assert client.post(url, form).status_code == 302
    template.refresh_from_db()
    assert template.name == "Official v2"
    bad = client.post(url, {**form, "template_data": '{"nodes": 3}'})
    assert bad.status_code == 200
    template.refresh_from_db()
    assert template.template_data == {"nodes": [], "edges": []}
