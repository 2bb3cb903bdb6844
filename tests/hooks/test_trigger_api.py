"""Managing a workflow's triggers: who may, what is shown, what is refused."""

import pytest

from history.models import AuditLog
from hooks.models import Trigger
from hooks.selectors import token_hash
from tests.factories import UserFactory
from tests.hooks.conftest import HOOK_SECRET
from workflows.models import WorkflowMember, WorkflowMemberRole

pytestmark = pytest.mark.django_db


def triggers_url(workflow) -> str:
    return f"/api/v1/workflows/{workflow.id}/triggers/"


def test_creating_a_trigger_shows_its_token_and_url_once_and_keeps_only_a_hash(user_client, workflow, user):
    response = user_client.post(
        triggers_url(workflow),
        {"name": "from the shop", "secret": HOOK_SECRET, "input_mapping": {"city": "body.city"}},
        format="json",
    )

    assert response.status_code == 201, response.content
    created = response.json()
    assert created["workflow"] == str(workflow.pk)  # the whole trigger, as the schema says, and its token
    token = created["token"]
    assert token.startswith("whk_")
    assert len(token) > 40
    assert created["url"] == f"http://testserver/api/v1/hooks/{token}/"
    assert created["has_secret"] is True
    assert "secret" not in created
    stored = Trigger.objects.get(pk=created["id"])
    assert stored.token_hash == token_hash(token)
    assert token not in stored.token_hash
    assert stored.created_by == user

    listed = user_client.get(triggers_url(workflow)).content.decode()
    detail = user_client.get(f"{triggers_url(workflow)}{created['id']}/").content.decode()
    for page in (listed, detail):
        assert token not in page
        assert HOOK_SECRET not in page
        assert created["token_prefix"] in page
    audit = AuditLog.objects.get(action="trigger.create")
    assert HOOK_SECRET not in str(audit.after)
    assert token not in str(audit.after)
    assert audit.after["has_secret"] is True


def test_the_secret_is_encrypted_at_rest(user_client, workflow):
    from django.db import connection

    created = user_client.post(triggers_url(workflow), {"secret": HOOK_SECRET}, format="json").json()

    with connection.cursor() as cursor:
        cursor.execute("SELECT secret FROM workflow_triggers")  # the only trigger
        (raw,) = cursor.fetchone()
    assert HOOK_SECRET.encode() not in bytes(raw)
    assert Trigger.objects.get(pk=created["id"]).secret == HOOK_SECRET


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"version": "not a range!"}, "version"),
        ({"input_mapping": {"city": "cookies.city"}}, "input_mapping.city"),
        ({"input_mapping": {"bad name": "body.city"}}, "input_mapping.bad name"),
        ({"response_template": "{{ outputs.text "}, "response_template"),
        ({"secret": "short"}, "secret"),
        ({"wait_timeout_s": 0}, "wait_timeout_s"),
        ({"rate_limit_per_minute": 0}, "rate_limit_per_minute"),
        ({"response_content_type": "text/html"}, "response_content_type"),
        ({"token_hash": "x"}, "token_hash"),
    ],
)
def test_a_bad_setting_is_a_400_naming_its_field(user_client, workflow, body, field):
    response = user_client.post(triggers_url(workflow), body, format="json")

    assert response.status_code == 400, response.content
    assert field in response.content.decode()
    assert not Trigger.objects.exists()


def test_patch_changes_settings_and_an_empty_secret_stops_signing(user_client, make_trigger, workflow):
    created = make_trigger(secret=HOOK_SECRET)
    url = f"{triggers_url(workflow)}{created['id']}/"

    response = user_client.patch(url, {"secret": "", "wait": True, "version": "^1.0"}, format="json")

    assert response.status_code == 200, response.content
    assert response.json()["has_secret"] is False
    assert response.json()["wait"] is True
    assert response.json()["version"] == "^1.0"
    assert "token" not in response.json()


def test_only_editors_manage_triggers(client_for, make_trigger, workflow):
    created = make_trigger()
    viewer, executor, stranger = UserFactory(), UserFactory(), UserFactory()
    WorkflowMember.objects.create(workflow=workflow, user=viewer, role=WorkflowMemberRole.VIEWER)
    WorkflowMember.objects.create(workflow=workflow, user=executor, role=WorkflowMemberRole.EXECUTOR)
    editor = UserFactory()
    WorkflowMember.objects.create(workflow=workflow, user=editor, role=WorkflowMemberRole.EDITOR)
    detail = f"{triggers_url(workflow)}{created['id']}/"

    for member in (viewer, executor):
        client = client_for(member)
        assert client.get(triggers_url(workflow)).status_code == 403
        assert client.post(triggers_url(workflow), {}, format="json").status_code == 403
        assert client.post(f"{detail}rotate/").status_code == 403
        assert client.delete(detail).status_code == 403
    assert client_for(stranger).get(triggers_url(workflow)).status_code == 404
    assert client_for(editor).get(triggers_url(workflow)).json()["results"][0]["id"] == created["id"]
    assert client_for(editor).delete(detail).status_code == 204
    assert not Trigger.objects.exists()


def test_a_trigger_of_another_workflow_is_not_found(user_client, make_trigger, user):
    from tests.hooks.conftest import GREETER
    from workflows.services import workflow_create

    created = make_trigger()
    other = workflow_create(owner=user, name="Other", graph=GREETER)

    assert user_client.get(f"{triggers_url(other)}{created['id']}/").status_code == 404


def test_anonymous_callers_cannot_list_triggers(api_client, workflow):
    assert api_client.get(triggers_url(workflow)).status_code in (401, 403)
