import copy

import pytest

from tests.factories import SIMPLE_GRAPH, UserFactory, WorkflowMemberFactory
from workflows.models import ReleaseChannel, Workflow, WorkflowVersion
from workflows.releases.selectors import flow_latest_released
from workflows.services import workflow_create

pytestmark = pytest.mark.django_db


@pytest.fixture
def workflow(user):
    return workflow_create(owner=user, name="Greeter", graph=copy.deepcopy(SIMPLE_GRAPH))


def publish(client, workflow, version, **extra):
    return client.post(f"/api/v1/workflows/{workflow.id}/publish/", {"version": version, **extra}, format="json")


def test_publish_freezes_the_draft_into_a_version(user_client, workflow):
    response = publish(user_client, workflow, "1.0.0", description="first")

    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["version"] == "1.0.0"
    assert body["channels"] == ["web", "api"]
    assert {node["id"] for node in body["graph"]["nodes"]} == {"start", "greet", "end"}
    workflow.refresh_from_db()
    assert workflow.status == Workflow.Status.PUBLISHED


@pytest.mark.parametrize(
    ("earlier", "later"), [("1.9.3", "1.10.0"), ("1.2.9", "1.2.10"), ("0.9.99", "1.0.0"), ("2.0.0", "10.0.0")]
)
def test_versions_order_numerically_never_as_strings(user_client, workflow, earlier, later):
    assert publish(user_client, workflow, earlier).status_code == 201
    assert publish(user_client, workflow, later).status_code == 201

    latest = flow_latest_released(workflow_id=workflow.id, channel=ReleaseChannel.API)

    assert latest.version == later
    listed = user_client.get(f"/api/v1/workflows/{workflow.id}/versions/").json()
    versions = [row["version"] for row in (listed["results"] if isinstance(listed, dict) else listed)]
    assert versions[0] == later


@pytest.mark.parametrize("second", ["1.2.3", "1.2.2", "1.1.10", "0.99.99"])
def test_a_version_may_not_be_republished_or_go_backwards(user_client, workflow, second):
    assert publish(user_client, workflow, "1.2.3").status_code == 201

    response = publish(user_client, workflow, second)

    assert response.status_code == 409
    assert response.json()["field"] == "version"
    assert WorkflowVersion.objects.filter(workflow=workflow).count() == 1


@pytest.mark.parametrize("version", ["1.2", "v1.2.3", "1.2.3-beta.1", "1.2.3+build", "", "x" * 200, "1.2.3.4"])
def test_a_malformed_version_is_a_400_naming_the_field(user_client, workflow, version):
    response = publish(user_client, workflow, version)

    assert response.status_code == 400
    assert "version" in str(response.json())


def test_rollback_restores_a_version_as_the_draft_and_publishing_continues(user_client, workflow):
    publish(user_client, workflow, "1.0.0")
    changed = copy.deepcopy(SIMPLE_GRAPH)
    changed["nodes"][1]["config"]["template"] = "Changed for {{ start.city }}"
    assert user_client.patch(f"/api/v1/workflows/{workflow.id}/", {"graph": changed}, format="json").status_code == 200
    publish(user_client, workflow, "1.1.0")

    response = user_client.post(f"/api/v1/workflows/{workflow.id}/versions/1.0.0/rollback/")

    assert response.status_code == 200
    greet = next(node for node in response.json()["graph"]["nodes"] if node["id"] == "greet")
    assert greet["config"]["template"] == "Weather for {{ start.city }}"
    assert publish(user_client, workflow, "1.0.1").status_code == 409
    republished = publish(user_client, workflow, "1.2.0").json()
    greet = next(node for node in republished["graph"]["nodes"] if node["id"] == "greet")
    assert greet["config"]["template"] == "Weather for {{ start.city }}"


def test_channels_release_and_withdraw_without_deleting(user_client, workflow):
    publish(user_client, workflow, "1.0.0", channels=["api"])
    publish(user_client, workflow, "1.1.0", channels=["web"])

    assert flow_latest_released(workflow_id=workflow.id, channel=ReleaseChannel.API).version == "1.0.0"
    assert flow_latest_released(workflow_id=workflow.id, channel=ReleaseChannel.WEB).version == "1.1.0"
    assert flow_latest_released(workflow_id=workflow.id, channel=ReleaseChannel.MARKETPLACE) is None

    released = user_client.post(
        f"/api/v1/workflows/{workflow.id}/versions/1.1.0/release/", {"channels": ["api"]}, format="json"
    )
    assert released.json()["channels"] == ["web", "api"]
    assert flow_latest_released(workflow_id=workflow.id, channel=ReleaseChannel.API).version == "1.1.0"

    withdrawn = user_client.post(f"/api/v1/workflows/{workflow.id}/versions/1.1.0/withdraw/", {}, format="json")
    assert withdrawn.json()["channels"] == []
    assert flow_latest_released(workflow_id=workflow.id, channel=ReleaseChannel.API).version == "1.0.0"
    assert WorkflowVersion.objects.filter(workflow=workflow).count() == 2


def test_an_unknown_channel_is_a_400(user_client, workflow):
    response = publish(user_client, workflow, "1.0.0", channels=["radio"])

    assert response.status_code == 400
    assert "channels" in response.json()


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("^1.2", "1.10.0"),
        ("1.2.x", "1.2.10"),
        ("~1.2.3", "1.2.10"),
        ("1.2.9", "1.2.9"),
        ("<1.2.10", "1.2.9"),
        ("^3", None),
    ],
)
def test_a_range_picks_the_greatest_matching_released_version(user_client, workflow, spec, expected):
    for version in ("1.2.9", "1.2.10", "1.10.0", "2.0.0"):
        publish(user_client, workflow, version)

    flow = flow_latest_released(workflow_id=workflow.id, channel=ReleaseChannel.API, version_range=spec)

    assert (flow.version if flow else None) == expected


def test_diff_names_nodes_and_edges_added_removed_and_changed(user_client, workflow):
    publish(user_client, workflow, "1.0.0")
    graph = copy.deepcopy(SIMPLE_GRAPH)
    graph["nodes"][1]["config"]["template"] = "Hi {{ start.city }}"
    graph["nodes"].append({"id": "shout", "type": "template", "config": {"template": "{{ greet.text }}!"}})
    graph["edges"] = [
        {"source": "start", "target": "greet"},
        {"source": "greet", "target": "shout"},
        {"source": "shout", "target": "end"},
    ]
    user_client.patch(f"/api/v1/workflows/{workflow.id}/", {"graph": graph}, format="json")
    publish(user_client, workflow, "1.1.0")

    diff = user_client.get(f"/api/v1/workflows/{workflow.id}/versions/1.1.0/diff/").json()

    assert diff["old"] == "1.0.0"
    assert diff["nodes"] == {"added": ["shout"], "removed": [], "changed": ["greet"]}
    assert {(edge["source"], edge["target"]) for edge in diff["edges"]["added"]} == {
        ("greet", "shout"),
        ("shout", "end"),
    }
    assert [(edge["source"], edge["target"]) for edge in diff["edges"]["removed"]] == [("greet", "end")]


def test_another_users_workflow_is_404_and_a_viewer_may_not_publish(client_for, workflow):
    stranger = UserFactory()
    viewer = UserFactory()
    WorkflowMemberFactory(workflow=workflow, user=viewer, role="viewer")

    assert publish(client_for(stranger), workflow, "1.0.0").status_code == 404
    assert publish(client_for(viewer), workflow, "1.0.0").status_code == 403
    assert client_for(stranger).get(f"/api/v1/workflows/{workflow.id}/versions/1.0.0/").status_code == 404
    assert not WorkflowVersion.objects.exists()


def test_an_unknown_version_is_404(user_client, workflow):
    assert user_client.get(f"/api/v1/workflows/{workflow.id}/versions/9.9.9/").status_code == 404
