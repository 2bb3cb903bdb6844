"""GET/PUT/DELETE /api/v1/workflows/<id>/failure-policy/ and GET .../notifications/."""

import copy

import pytest
from django.db import connection

from alerts.models import Delivery, FailurePolicy
from history.models import AuditLog
from tests.alerts.conftest import FAILING_GRAPH
from tests.factories import RunFactory, UserFactory, WorkflowMemberFactory
from workflows.services import workflow_create

pytestmark = pytest.mark.django_db

SECRET = "a-webhook-secret-of-some-length"


def policy_url(workflow) -> str:
    return f"/api/v1/workflows/{workflow.pk}/failure-policy/"


def notifications_url(workflow) -> str:
    return f"/api/v1/workflows/{workflow.pk}/notifications/"


def test_an_editor_sets_the_policy_and_the_secret_never_comes_back(user_client, failing_workflow, handler_workflow):
    body = {
        "error_workflow": str(handler_workflow.pk),
        "on_cancelled": True,
        "webhook_url": "https://hooks.example.com/weft",
        "webhook_secret": SECRET,
        "emails": ["Ops@Example.com", "ops@example.com", "dev@example.com"],
    }
    answer = user_client.put(policy_url(failing_workflow), body, format="json")

    assert answer.status_code == 200, answer.json()
    data = answer.json()
    assert data["error_workflow"] == str(handler_workflow.pk)
    assert (data["enabled"], data["on_failed"], data["on_succeeded"], data["on_cancelled"]) == (True, True, False, True)
    assert data["webhook_url"] == "https://hooks.example.com/weft"
    assert data["webhook_secret_set"] is True
    assert data["emails"] == ["ops@example.com", "dev@example.com"]
    assert SECRET not in answer.content.decode()
    assert SECRET not in user_client.get(policy_url(failing_workflow)).content.decode()
    audit = AuditLog.objects.get(action="failure_policy.set")
    assert SECRET not in str(audit.after)
    # Stored encrypted: the column does not hold the secret in clear.
    with connection.cursor() as cursor:
        cursor.execute("SELECT webhook_secret FROM alert_policies")
        (stored,) = cursor.fetchone()
    assert SECRET not in str(bytes(stored) if isinstance(stored, memoryview) else stored)

    # A PUT without the secret keeps it.
    again = user_client.put(
        policy_url(failing_workflow), {"webhook_url": "https://hooks.example.com/v2"}, format="json"
    )
    assert again.status_code == 200
    assert FailurePolicy.objects.get(workflow=failing_workflow).webhook_secret == SECRET


def test_a_workflow_without_a_policy_shows_nothing_set(user_client, failing_workflow):
    data = user_client.get(policy_url(failing_workflow)).json()

    assert (data["enabled"], data["error_workflow"], data["webhook_url"], data["emails"]) == (False, None, "", [])
    assert data["updated_at"] is None
    # DRF's OPTIONS describes PUT from the policy an editor would change.
    assert user_client.options(policy_url(failing_workflow)).status_code == 200


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"webhook_url": "ftp://example.com/x", "webhook_secret": SECRET}, "webhook_url"),
        ({"webhook_url": "not a url", "webhook_secret": SECRET}, "webhook_url"),
        ({"webhook_url": "https://hooks.example.com/x"}, "webhook_secret"),
        ({"webhook_url": "https://hooks.example.com/x", "webhook_secret": "short"}, "webhook_secret"),
        ({"emails": ["not-an-address"]}, "emails"),
        ({"emails": "ops@example.com"}, "emails"),
        ({"emails": [f"u{n}@example.com" for n in range(21)]}, "emails"),
        ({"on_failed": "perhaps"}, "on_failed"),
        ({"error_workflow": "not-a-uuid"}, "error_workflow"),
        ({"error_workflow": "5f0c7c55-7f37-4a8d-9a9e-0e0d2f6e7f00"}, "error_workflow"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_each_bad_field_is_a_400_naming_it(user_client, failing_workflow, body, field):
    answer = user_client.put(policy_url(failing_workflow), body, format="json")

    assert answer.status_code == 400
    data = answer.json()
    assert field in data or data.get("field") == field, data
    assert not FailurePolicy.objects.exists()


def test_the_error_workflow_cannot_be_the_workflow_itself(user_client, failing_workflow):
    answer = user_client.put(policy_url(failing_workflow), {"error_workflow": str(failing_workflow.pk)}, format="json")

    assert answer.status_code == 400
    assert answer.json()["field"] == "error_workflow"


def test_the_error_workflow_must_take_the_failure_input(user_client, failing_workflow, greeter):
    answer = user_client.put(policy_url(failing_workflow), {"error_workflow": str(greeter.pk)}, format="json")

    assert answer.status_code == 400
    assert answer.json()["field"] == "error_workflow"
    assert "failure" in answer.json()["detail"]


def test_the_error_workflow_must_be_runnable_by_the_owner(user, client_for, failing_workflow):
    editor = UserFactory()
    WorkflowMemberFactory(workflow=failing_workflow, user=editor, role="editor")
    # The editor's own workflow: the editor sees it, the owner of the failing workflow may not run it.
    theirs = workflow_create(owner=editor, name="Editor's", graph=copy.deepcopy(FAILING_GRAPH))

    answer = client_for(editor).put(policy_url(failing_workflow), {"error_workflow": str(theirs.pk)}, format="json")

    assert answer.status_code == 400
    assert answer.json()["field"] == "error_workflow"
    assert "owner" in answer.json()["detail"]


def test_an_error_workflow_the_caller_cannot_see_is_no_such_workflow(user_client, failing_workflow):
    hidden = workflow_create(owner=UserFactory(), name="Hidden", graph=copy.deepcopy(FAILING_GRAPH))

    answer = user_client.put(policy_url(failing_workflow), {"error_workflow": str(hidden.pk)}, format="json")

    assert answer.status_code == 400
    assert answer.json() == {"error_workflow": ["No such workflow."]}


@pytest.mark.parametrize("role", ["viewer", "executor"])
def test_only_editors_change_the_policy(client_for, failing_workflow, role):
    member = UserFactory()
    WorkflowMemberFactory(workflow=failing_workflow, user=member, role=role)
    client = client_for(member)

    assert client.get(policy_url(failing_workflow)).status_code == 200
    assert client.put(policy_url(failing_workflow), {"emails": ["a@example.com"]}, format="json").status_code == 403
    assert client.delete(policy_url(failing_workflow)).status_code == 403
    assert client.get(notifications_url(failing_workflow)).status_code == 200
    assert not FailurePolicy.objects.exists()


def test_an_editor_member_may_change_it(client_for, failing_workflow):
    member = UserFactory()
    WorkflowMemberFactory(workflow=failing_workflow, user=member, role="editor")

    answer = client_for(member).put(policy_url(failing_workflow), {"emails": ["a@example.com"]}, format="json")

    assert answer.status_code == 200
    assert FailurePolicy.objects.get(workflow=failing_workflow).updated_by == member


def test_a_stranger_sees_no_such_workflow(other_client, failing_workflow):
    assert other_client.get(policy_url(failing_workflow)).status_code == 404
    assert other_client.put(policy_url(failing_workflow), {}, format="json").status_code == 404
    assert other_client.get(notifications_url(failing_workflow)).status_code == 404


def test_delete_removes_the_policy(user_client, failing_workflow):
    user_client.put(policy_url(failing_workflow), {"emails": ["a@example.com"]}, format="json")

    assert user_client.delete(policy_url(failing_workflow)).status_code == 204
    assert not FailurePolicy.objects.exists()
    assert user_client.delete(policy_url(failing_workflow)).status_code == 204


def test_notifications_are_listed_with_their_status_and_filtered(user, user_client, failing_workflow):
    user_client.put(policy_url(failing_workflow), {"emails": ["a@example.com"]}, format="json")
    policy = FailurePolicy.objects.get(workflow=failing_workflow)
    first, second = RunFactory(workflow=failing_workflow, status="failed"), RunFactory(workflow=failing_workflow)
    Delivery.objects.create(
        policy=policy,
        run=first,
        event="failed",
        channel="email",
        target="a@example.com",
        status="failed",
        attempts=6,
        last_error="refused",
        next_attempt_at=first.created_at,
    )
    Delivery.objects.create(
        policy=policy,
        run=second,
        event="failed",
        channel="email",
        target="a@example.com",
        status="delivered",
        attempts=1,
        next_attempt_at=second.created_at,
    )

    listed = user_client.get(notifications_url(failing_workflow)).json()
    assert listed["count"] == 2
    only = user_client.get(notifications_url(failing_workflow), {"status": "failed"}).json()["results"]
    assert [(row["run"], row["status"], row["attempts"], row["last_error"]) for row in only] == [
        (str(first.pk), "failed", 6, "refused")
    ]
    by_run = user_client.get(notifications_url(failing_workflow), {"run": str(second.pk)}).json()["results"]
    assert [row["status"] for row in by_run] == ["delivered"]


@pytest.mark.parametrize(("query", "field"), [({"status": "lost"}, "status"), ({"run": "nope"}, "run")])
def test_a_bad_notifications_filter_is_a_400_naming_it(user_client, failing_workflow, query, field):
    answer = user_client.get(notifications_url(failing_workflow), query)

    assert answer.status_code == 400
    assert field in answer.json()


def test_viewers_see_webhook_urls_cut_to_their_host(user, user_client, client_for, failing_workflow):
    hook = "https://hooks.example.com/services/T000/B000/token-in-the-path"
    user_client.put(policy_url(failing_workflow), {"webhook_url": hook, "webhook_secret": SECRET}, format="json")
    run = RunFactory(workflow=failing_workflow, status="failed")
    Delivery.objects.create(
        policy=FailurePolicy.objects.get(workflow=failing_workflow),
        run=run,
        event="failed",
        channel="webhook",
        target=hook,
        next_attempt_at=run.created_at,
    )
    viewer = UserFactory()
    WorkflowMemberFactory(workflow=failing_workflow, user=viewer, role="viewer")

    seen = client_for(viewer).get(policy_url(failing_workflow)).json()
    listed = client_for(viewer).get(notifications_url(failing_workflow)).json()["results"]

    assert seen["webhook_url"] == "https://hooks.example.com/…"
    assert [row["target"] for row in listed] == ["https://hooks.example.com/…"]
    assert user_client.get(policy_url(failing_workflow)).json()["webhook_url"] == hook
    assert user_client.get(notifications_url(failing_workflow)).json()["results"][0]["target"] == hook
