import pytest

from history.models import AuditLog
from tests.factories import UserFactory, WorkflowFactory, WorkflowMemberFactory
from workflows.models import WorkflowMember


def members_url(workflow, user=None) -> str:
    url = f"/api/v1/workflows/{workflow.pk}/members/"
    return f"{url}{user.pk}/" if user is not None else url


@pytest.fixture
def workflow(user):
    return WorkflowFactory(owner=user)


def test_the_owner_shares_a_workflow_by_username(user, user_client, workflow, client_for):
    friend = UserFactory(username="friend")

    response = user_client.post(members_url(workflow), {"user": "friend", "role": "viewer"})

    assert response.status_code == 201, response.json()
    assert response.json()["user"] == friend.pk
    assert response.json()["username"] == "friend"
    assert response.json()["role"] == "viewer"
    assert WorkflowMember.objects.get(workflow=workflow, user=friend).role == "viewer"
    audit = AuditLog.objects.get(action="workflow.member_add")
    assert audit.actor == user
    assert audit.target_id == str(workflow.pk)
    assert audit.after == {"user": friend.pk, "role": "viewer"}
    assert client_for(friend).get(f"/api/v1/workflows/{workflow.pk}/").status_code == 200


def test_a_member_is_added_by_id_too(user_client, workflow):
    friend = UserFactory()

    response = user_client.post(members_url(workflow), {"user": friend.pk, "role": "executor"})

    assert response.status_code == 201
    assert WorkflowMember.objects.get(workflow=workflow, user=friend).role == "executor"


def test_the_owner_changes_a_role_and_it_is_audited(user_client, workflow):
    member = WorkflowMemberFactory(workflow=workflow, role=WorkflowMember.Role.VIEWER)

    response = user_client.patch(members_url(workflow, member.user), {"role": "editor"})

    assert response.status_code == 200
    assert response.json()["role"] == "editor"
    member.refresh_from_db()
    assert member.role == "editor"
    audit = AuditLog.objects.get(action="workflow.member_role_change")
    assert audit.before == {"user": member.user_id, "role": "viewer"}
    assert audit.after == {"user": member.user_id, "role": "editor"}


def test_setting_the_same_role_again_changes_nothing(user_client, workflow):
    member = WorkflowMemberFactory(workflow=workflow, role=WorkflowMember.Role.EDITOR)

    response = user_client.post(members_url(workflow), {"user": member.user.username, "role": "editor"})

    assert response.status_code == 201
    assert WorkflowMember.objects.filter(workflow=workflow).count() == 1
    assert not AuditLog.objects.exists()


def test_the_owner_removes_a_member_who_then_loses_access(user_client, workflow, client_for):
    member = WorkflowMemberFactory(workflow=workflow, role=WorkflowMember.Role.EDITOR)

    response = user_client.delete(members_url(workflow, member.user))

    assert response.status_code == 204
    assert not WorkflowMember.objects.filter(pk=member.pk).exists()
    assert AuditLog.objects.get(action="workflow.member_remove").before == {"user": member.user_id, "role": "editor"}
    assert client_for(member.user).get(f"/api/v1/workflows/{workflow.pk}/").status_code == 404


def test_members_are_listed_to_anyone_who_sees_the_workflow(workflow, client_for):
    viewer = WorkflowMemberFactory(workflow=workflow, role=WorkflowMember.Role.VIEWER)
    editor = WorkflowMemberFactory(workflow=workflow, role=WorkflowMember.Role.EDITOR)

    response = client_for(viewer.user).get(members_url(workflow))

    assert response.status_code == 200
    listed = {(item["username"], item["role"]) for item in response.json()["results"]}
    assert listed == {(viewer.user.username, "viewer"), (editor.user.username, "editor")}


@pytest.mark.parametrize("role", ["viewer", "executor", "editor"])
def test_only_an_owner_manages_members(workflow, client_for, role):
    member = WorkflowMemberFactory(workflow=workflow, role=role)
    other = WorkflowMemberFactory(workflow=workflow, role=WorkflowMember.Role.VIEWER)
    client = client_for(member.user)

    assert client.post(members_url(workflow), {"user": UserFactory().username, "role": "owner"}).status_code == 403
    assert client.patch(members_url(workflow, other.user), {"role": "editor"}).status_code == 403
    assert client.delete(members_url(workflow, other.user)).status_code == 403
    assert WorkflowMember.objects.filter(workflow=workflow).count() == 2
    other.refresh_from_db()
    assert other.role == "viewer"


def test_a_co_owner_manages_members(workflow, client_for):
    co_owner = WorkflowMemberFactory(workflow=workflow, role=WorkflowMember.Role.OWNER)

    response = client_for(co_owner.user).post(members_url(workflow), {"user": UserFactory().username, "role": "viewer"})

    assert response.status_code == 201


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"user": "nobody-by-this-name", "role": "viewer"}, "user"),
        ({"user": "friend", "role": "admin"}, "role"),
        ({"user": "friend"}, "role"),
        ({"role": "viewer"}, "user"),
        ({"user": "friend", "role": "viewer", "expires": "never"}, "expires"),
        ({"user": "f" * 151, "role": "viewer"}, "user"),
        ({"user": "9" * 30, "role": "viewer"}, "user"),
        ({"user": "\u00b2", "role": "viewer"}, "user"),
    ],
)
def test_bad_member_input_is_a_400_naming_the_field(user_client, workflow, body, field):
    UserFactory(username="friend")

    response = user_client.post(members_url(workflow), body)

    assert response.status_code == 400
    assert field in response.json()
    assert not WorkflowMember.objects.exists()


def test_the_owner_cannot_be_made_a_member(user, user_client, workflow):
    response = user_client.post(members_url(workflow), {"user": user.username, "role": "viewer"})

    assert response.status_code == 400
    assert response.json()["field"] == "user"


def test_patching_someone_who_is_not_a_member_is_a_404(user_client, workflow):
    stranger = UserFactory()

    assert user_client.patch(members_url(workflow, stranger), {"role": "editor"}).status_code == 404
    assert user_client.delete(members_url(workflow, stranger)).status_code == 404
    assert user_client.delete(f"{members_url(workflow)}{'9' * 30}/").status_code == 404
    assert not WorkflowMember.objects.exists()


def test_another_users_workflow_members_are_invisible(user_client, other_user):
    theirs = WorkflowFactory(owner=other_user)
    member = WorkflowMemberFactory(workflow=theirs)

    assert user_client.get(members_url(theirs)).status_code == 404
    assert user_client.post(members_url(theirs), {"user": member.user.username, "role": "owner"}).status_code == 404
    assert user_client.patch(members_url(theirs, member.user), {"role": "owner"}).status_code == 404
    assert user_client.delete(members_url(theirs, member.user)).status_code == 404
    member.refresh_from_db()
    assert member.role == "viewer"
