import pytest

from agents.models import SessionWorkflow
from tests.factories import SIMPLE_GRAPH, SessionFactory, WorkflowTemplateFactory

pytestmark = pytest.mark.django_db


def graph(label: str) -> dict:
    return {"nodes": [{"id": label, "type": "start", "config": {}}], "edges": []}


@pytest.fixture
def session(user):
    return SessionFactory(owner=user)


def url(session, tail: str = "") -> str:
    return f"/api/v1/sessions/{session.pk}/workflows/{tail}"


def post_version(client, session, label: str, **extra):
    response = client.post(url(session), {"workflow_data": graph(label), **extra})
    assert response.status_code == 201, response.content
    return response.json()


def test_each_post_adds_the_next_version_and_makes_it_current(user_client, session):
    first = post_version(user_client, session, "a")
    second = post_version(user_client, session, "b")
    third = post_version(user_client, session, "c")
    assert [first["sequence_number"], second["sequence_number"], third["sequence_number"]] == [1, 2, 3]
    assert first["parent"] is None
    assert second["parent"] == first["id"]
    assert third["parent"] == second["id"]

    listed = user_client.get(url(session)).json()["results"]
    assert [(v["sequence_number"], v["is_current"]) for v in listed] == [(1, False), (2, False), (3, True)]
    assert SessionWorkflow.objects.filter(session=session, is_current=True).count() == 1

    assert user_client.get(url(session, "current/")).json()["id"] == third["id"]
    assert user_client.get(url(session, "previous/")).json()["id"] == second["id"]
    assert user_client.get(url(session, "1/")).json()["workflow_data"] == graph("a")


def test_current_and_previous_when_there_are_none(user_client, session):
    assert user_client.get(url(session, "current/")).status_code == 404
    post_version(user_client, session, "a")
    assert user_client.get(url(session, "previous/")).status_code == 404
    assert user_client.get(url(session, "9/")).status_code == 404


def test_revert_appends_a_copy_of_the_old_version(user_client, session):
    first = post_version(user_client, session, "a")
    post_version(user_client, session, "b")
    third = post_version(user_client, session, "c")

    response = user_client.post(url(session, "1/revert/"))
    assert response.status_code == 201
    fourth = response.json()
    assert fourth["sequence_number"] == 4
    assert fourth["is_current"] is True
    assert fourth["parent"] == third["id"]
    assert fourth["workflow_data"] == first["workflow_data"]
    assert user_client.get(url(session, "current/")).json()["id"] == fourth["id"]
    assert user_client.get(url(session, "previous/")).json()["id"] == third["id"]
    assert SessionWorkflow.objects.filter(session=session).count() == 4
    assert SessionWorkflow.objects.filter(session=session, is_current=True).count() == 1


def test_reverting_to_the_current_version_changes_nothing(user_client, session):
    current = post_version(user_client, session, "a")
    response = user_client.post(url(session, "1/revert/"))
    assert response.status_code == 200
    assert response.json()["id"] == current["id"]
    assert SessionWorkflow.objects.filter(session=session).count() == 1
    assert user_client.post(url(session, "7/revert/")).status_code == 404


def test_a_version_from_a_template_copies_its_data(user_client, user, session, other_user):
    template = WorkflowTemplateFactory(owner=other_user, is_public=True)
    response = user_client.post(url(session), {"source_template": str(template.pk)})
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["source_type"] == "template"
    assert body["source_template"] == str(template.pk)
    assert body["workflow_data"] == SIMPLE_GRAPH


def test_a_private_template_of_another_user_cannot_be_used(user_client, session, other_user):
    private = WorkflowTemplateFactory(owner=other_user, is_public=False)
    response = user_client.post(url(session), {"source_template": str(private.pk)})
    assert response.status_code == 400
    assert "source_template" in response.json()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "workflow_data"),
        ({"workflow_data": ["not", "an", "object"]}, "workflow_data"),
        ({"workflow_data": {}, "source_type": "magic"}, "source_type"),
        ({"workflow_data": {}, "source_type": "template"}, "source_template"),
        ({"workflow_data": {}, "status": "finished"}, "status"),
        ({"workflow_data": {}, "parent": None}, "parent"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(user_client, session, body, field):
    response = user_client.post(url(session), body)
    assert response.status_code == 400
    body = response.json()
    assert field in body or body.get("field") == field
    assert not SessionWorkflow.objects.exists()


def test_another_users_session_workflows_do_not_exist(user_client, other_user):
    theirs = SessionFactory(owner=other_user)
    SessionWorkflow.objects.create(session=theirs, user=other_user, sequence_number=1, workflow_data={})
    for response in (
        user_client.get(url(theirs)),
        user_client.post(url(theirs), {"workflow_data": {}}),
        user_client.get(url(theirs, "current/")),
        user_client.get(url(theirs, "previous/")),
        user_client.get(url(theirs, "1/")),
        user_client.post(url(theirs, "1/revert/")),
    ):
        assert response.status_code == 404
    assert SessionWorkflow.objects.count() == 1
