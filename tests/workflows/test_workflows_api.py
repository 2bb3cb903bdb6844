import pytest

from tests.factories import (
    EdgeFactory,
    NodeFactory,
    RunFactory,
    WorkflowFactory,
    WorkflowMemberFactory,
    WorkflowVersionFactory,
)
from workflows.models import Edge, Node, Run, Workflow, WorkflowMember

LIST_URL = "/api/v1/workflows/"


def detail_url(workflow) -> str:
    return f"/api/v1/workflows/{workflow.pk}/"


def by_id(nodes: list[dict]) -> dict[str, dict]:
    return {node["id"]: node for node in nodes}


# --- Create, read, round trip -----------------------------------------------------------------
def test_create_returns_the_contract_shape_and_the_graph_round_trips(user, user_client, graph):
    graph["nodes"][1]["name"] = "Greeting"
    graph["nodes"][1]["position"] = {"x": 120.5, "y": -40}
    graph["nodes"][1]["error_policy"] = {"timeout_s": 30, "on_failure": "fail"}

    response = user_client.post(LIST_URL, {"name": "Weather", "description": "Says hi", "graph": graph})

    assert response.status_code == 201, response.json()
    body = response.json()
    assert {"id", "name", "description", "graph", "status", "source", "source_template", "role"} <= set(body)
    assert {"created_at", "updated_at"} <= set(body)
    assert body["status"] == "draft"
    assert body["source"] == "native"
    assert body["role"] == "owner"
    workflow = Workflow.objects.get(pk=body["id"])
    assert workflow.owner == user
    assert Node.objects.filter(workflow=workflow).count() == 3
    assert Edge.objects.filter(workflow=workflow).count() == 2

    fetched = user_client.get(detail_url(workflow)).json()["graph"]
    nodes = by_id(fetched["nodes"])
    assert set(nodes) == {"start", "greet", "end"}
    assert nodes["greet"] == {
        "id": "greet",
        "type": "template",
        "name": "Greeting",
        "config": graph["nodes"][1]["config"],
        "error_policy": {"timeout_s": 30, "on_failure": "fail"},
        "position": {"x": 120.5, "y": -40},
    }
    assert nodes["start"]["config"] == graph["nodes"][0]["config"]
    assert nodes["start"]["position"] == {"x": None, "y": None}
    edges = {(edge["source"], edge["target"], edge["source_handle"]) for edge in fetched["edges"]}
    assert edges == {("start", "greet", None), ("greet", "end", None)}

    # What the API answers can be sent back unchanged.
    again = user_client.put(detail_url(workflow), {"name": "Weather", "graph": fetched})
    assert again.status_code == 200, again.json()
    assert again.json()["graph"] == fetched


def test_create_without_graph_starts_an_empty_draft(user_client):
    response = user_client.post(LIST_URL, {"name": "Empty"})

    assert response.status_code == 201
    assert response.json()["graph"] == {"nodes": [], "edges": []}


def test_put_replaces_the_whole_draft(user, user_client, graph):
    workflow = WorkflowFactory(owner=user)
    EdgeFactory(workflow=workflow)
    assert Node.objects.filter(workflow=workflow).count() == 2

    response = user_client.put(detail_url(workflow), {"name": "Renamed", "graph": graph})

    assert response.status_code == 200, response.json()
    assert set(Node.objects.filter(workflow=workflow).values_list("key", flat=True)) == {"start", "greet", "end"}
    assert Edge.objects.filter(workflow=workflow).count() == 2
    workflow.refresh_from_db()
    assert workflow.name == "Renamed"


def test_patch_changes_only_the_fields_given(user, user_client, graph):
    created = user_client.post(LIST_URL, {"name": "Before", "description": "kept", "graph": graph}).json()

    response = user_client.patch(f"{LIST_URL}{created['id']}/", {"name": "After"})

    assert response.status_code == 200
    body = response.json()
    assert body["name"] == "After"
    assert body["description"] == "kept"
    assert body["graph"] == created["graph"]


def test_an_empty_graph_clears_the_draft(user, user_client, graph):
    created = user_client.post(LIST_URL, {"name": "W", "graph": graph}).json()

    response = user_client.patch(f"{LIST_URL}{created['id']}/", {"graph": {"nodes": [], "edges": []}})

    assert response.status_code == 200
    assert not Node.objects.filter(workflow_id=created["id"]).exists()


# --- Invalid graphs: 400 naming node and field, nothing written ----------------------------------
def _duplicate_id(graph):
    graph["nodes"].append({"id": "greet", "type": "template", "config": {"template": "again"}})
    return graph


def _dangling_edge(graph):
    graph["edges"].append({"source": "greet", "target": "nowhere"})
    return graph


def _node_without_id(graph):
    del graph["nodes"][1]["id"]
    return graph


def _too_long_id(graph):
    graph["nodes"][1]["id"] = "n" * 65
    return graph


def _too_long_handle(graph):
    graph["edges"][0]["source_handle"] = "h" * 65
    return graph


def _unknown_node_field(graph):
    graph["nodes"][1]["colour"] = "red"
    return graph


def _config_not_an_object(graph):
    graph["nodes"][1]["config"] = ["template"]
    return graph


def _position_junk(graph):
    graph["nodes"][1]["position"] = {"x": "left", "y": 1}
    return graph


def _id_not_a_string(graph):
    graph["nodes"][1]["id"] = 7
    return graph


def _id_with_unsafe_characters(graph):
    graph["nodes"][1]["id"] = "../etc"
    return graph


def _nul_in_config(graph):
    graph["nodes"][1]["config"] = {"template": "a\x00b"}
    return graph


def _nul_in_name(graph):
    graph["nodes"][1]["name"] = "a\x00b"
    return graph


def _duplicate_edge(graph):
    graph["edges"].append({"source": "start", "target": "greet"})
    return graph


@pytest.mark.parametrize(
    ("make_graph", "node", "field"),
    [
        (_duplicate_id, "greet", "nodes[3].id"),
        (_dangling_edge, "nowhere", "edges[2].target"),
        (lambda graph: {"nodes": 5, "edges": []}, None, "nodes"),
        (lambda graph: {"nodes": [], "edges": "start->end"}, None, "edges"),
        (lambda graph: {"nodes": ["start"], "edges": []}, None, "nodes[0]"),
        (lambda graph: [graph], None, "graph"),
        (lambda graph: {**graph, "extra": 1}, None, "graph.extra"),
        (_node_without_id, None, "nodes[1].id"),
        (_too_long_id, None, "nodes[1].id"),
        (_id_not_a_string, None, "nodes[1].id"),
        (_id_with_unsafe_characters, None, "nodes[1].id"),
        (_too_long_handle, "start", "edges[0].source_handle"),
        (_unknown_node_field, "greet", "nodes[1].colour"),
        (_config_not_an_object, "greet", "nodes[1].config"),
        (_position_junk, "greet", "nodes[1].position.x"),
        (_duplicate_edge, "start", "edges[2]"),
    ],
    ids=[
        "duplicate-id",
        "dangling-edge",
        "nodes-not-a-list",
        "edges-not-a-list",
        "node-not-an-object",
        "graph-not-an-object",
        "unknown-graph-field",
        "node-without-id",
        "too-long-id",
        "id-not-a-string",
        "id-unsafe",
        "too-long-handle",
        "unknown-node-field",
        "config-not-an-object",
        "position-junk",
        "duplicate-edge",
    ],
)
def test_an_invalid_graph_is_a_400_naming_node_and_field(user, user_client, graph, make_graph, node, field):
    response = user_client.post(LIST_URL, {"name": "Broken", "graph": make_graph(graph)})

    assert response.status_code == 400, response.content
    body = response.json()
    assert body["code"] == "invalid_graph"
    assert body["detail"]
    assert {"node": node, "field": field} in [{"node": e["node"], "field": e["field"]} for e in body["errors"]]
    assert all(set(error) == {"node", "field", "message"} and error["message"] for error in body["errors"])
    assert not Workflow.objects.filter(owner=user).exists()


@pytest.mark.parametrize(
    ("make_graph", "path"),
    [(_nul_in_config, "graph.nodes[1].config.template"), (_nul_in_name, "graph.nodes[1].name")],
)
def test_a_string_the_database_cannot_store_is_a_400_naming_where(user, user_client, graph, make_graph, path):
    response = user_client.post(LIST_URL, {"name": "Broken", "graph": make_graph(graph)})

    assert response.status_code == 400
    assert path in response.json()["graph"][0]
    assert not Workflow.objects.filter(owner=user).exists()


def test_an_invalid_graph_leaves_the_previous_draft_in_place(user, user_client, graph):
    created = user_client.post(LIST_URL, {"name": "W", "graph": graph}).json()

    response = user_client.patch(f"{LIST_URL}{created['id']}/", {"name": "New", "graph": _dangling_edge(graph)})

    assert response.status_code == 400
    fetched = user_client.get(f"{LIST_URL}{created['id']}/").json()
    assert fetched["name"] == "W"
    assert fetched["graph"] == created["graph"]


# --- Bad input -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "x" * 256}, "name"),
        ({"name": ""}, "name"),
        ({}, "name"),
        ({"name": "ok", "description": "d" * 10_001}, "description"),
        ({"name": "ok", "colour": "red"}, "colour"),
        ({"name": ["not", "a", "string"]}, "name"),
    ],
)
def test_bad_workflow_input_is_a_400_naming_the_field(user, user_client, body, field):
    response = user_client.post(LIST_URL, body)

    assert response.status_code == 400
    assert field in response.json()
    assert not Workflow.objects.filter(owner=user).exists()


def test_read_only_fields_cannot_be_set(user, user_client):
    response = user_client.post(LIST_URL, {"name": "W", "status": "published", "source": "coze"})

    assert response.status_code == 201
    assert response.json()["status"] == "draft"
    assert response.json()["source"] == "native"


@pytest.mark.parametrize("query", ["status=bogus", "source=nowhere"])
def test_a_bad_filter_value_is_a_400(user_client, query):
    response = user_client.get(f"{LIST_URL}?{query}")

    assert response.status_code == 400
    assert query.split("=")[0] in response.json()


def test_filters_and_search(user, user_client):
    WorkflowFactory(owner=user, name="Weather report")
    WorkflowFactory(owner=user, name="Stock ticker", status=Workflow.Status.ARCHIVED)
    WorkflowFactory(owner=user, name="Weather alerts", source=Workflow.Source.TEMPLATE)

    def names(query):
        return sorted(item["name"] for item in user_client.get(f"{LIST_URL}?{query}").json()["results"])

    assert names("search=weather") == ["Weather alerts", "Weather report"]
    assert names("status=archived") == ["Stock ticker"]
    assert names("source=template") == ["Weather alerts"]


def test_a_malformed_id_is_a_404(user_client):
    assert user_client.get(f"{LIST_URL}not-a-uuid/").status_code == 404


# --- Isolation --------------------------------------------------------------------------------
def test_another_users_workflow_is_invisible(user, user_client, other_user):
    mine = WorkflowFactory(owner=user)
    theirs = WorkflowFactory(owner=other_user)
    WorkflowVersionFactory(workflow=theirs)

    listed = {item["id"] for item in user_client.get(LIST_URL).json()["results"]}
    assert listed == {str(mine.pk)}
    url = detail_url(theirs)
    assert user_client.get(url).status_code == 404
    assert user_client.patch(url, {"name": "mine now"}).status_code == 404
    assert user_client.put(url, {"name": "mine now"}).status_code == 404
    assert user_client.delete(url).status_code == 404
    assert user_client.get(f"{url}versions/").status_code == 404
    theirs.refresh_from_db()
    assert theirs.name != "mine now"


def test_an_anonymous_caller_is_refused(api_client):
    assert api_client.get(LIST_URL).status_code in (401, 403)


# --- Roles ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("role", "can_edit", "can_delete"),
    [
        (WorkflowMember.Role.VIEWER, False, False),
        (WorkflowMember.Role.EXECUTOR, False, False),
        (WorkflowMember.Role.EDITOR, True, False),
        (WorkflowMember.Role.OWNER, True, True),
    ],
)
def test_what_each_member_role_may_do(other_user, client_for, user, role, can_edit, can_delete, graph):
    workflow = WorkflowFactory(owner=other_user, name="Shared")
    WorkflowMemberFactory(workflow=workflow, user=user, role=role)
    client = client_for(user)

    listed = client.get(LIST_URL).json()["results"]
    assert [(item["id"], item["role"]) for item in listed] == [(str(workflow.pk), role)]
    assert client.get(detail_url(workflow)).json()["role"] == role

    edit = client.patch(detail_url(workflow), {"name": "Edited", "graph": graph})
    assert edit.status_code == (200 if can_edit else 403)
    workflow.refresh_from_db()
    assert (workflow.name == "Edited") is can_edit

    delete = client.delete(detail_url(workflow))
    assert delete.status_code == (204 if can_delete else 403)
    assert Workflow.objects.filter(pk=workflow.pk).exists() is not can_delete


def test_the_owner_may_delete(user, user_client):
    workflow = WorkflowFactory(owner=user)
    NodeFactory(workflow=workflow)
    RunFactory(workflow=workflow, status=Run.Status.SUCCEEDED)

    assert user_client.delete(detail_url(workflow)).status_code == 204
    assert not Workflow.objects.filter(pk=workflow.pk).exists()
    assert not Run.objects.filter(workflow_id=workflow.pk).exists()


def test_a_workflow_with_a_run_in_progress_is_not_deleted(user, user_client):
    workflow = WorkflowFactory(owner=user)
    RunFactory(workflow=workflow, status=Run.Status.RUNNING)

    response = user_client.delete(detail_url(workflow))

    assert response.status_code == 409
    assert response.json()["code"] == "runs_in_progress"
    assert Workflow.objects.filter(pk=workflow.pk).exists()


# --- Versions ---------------------------------------------------------------------------------
def test_versions_lists_the_published_versions_newest_first(user, user_client, other_user, client_for):
    workflow = WorkflowFactory(owner=user)
    WorkflowVersionFactory(workflow=workflow, version_major=1, version_minor=0, version_patch=0, description="first")
    WorkflowVersionFactory(workflow=workflow, version_major=1, version_minor=2, version_patch=0, release_status=3)
    WorkflowVersionFactory(workflow=workflow, version_major=1, version_minor=10, version_patch=0)
    WorkflowVersionFactory()  # another workflow's

    response = user_client.get(f"{detail_url(workflow)}versions/")

    assert response.status_code == 200
    results = response.json()["results"]
    assert [item["version"] for item in results] == ["1.10.0", "1.2.0", "1.0.0"]
    assert set(results[0]) >= {"version", "description", "release_status", "created"}
    assert results[1]["release_status"] == 3
    assert results[2]["description"] == "first"
    WorkflowMemberFactory(workflow=workflow, user=other_user, role=WorkflowMember.Role.VIEWER)
    assert client_for(other_user).get(f"{detail_url(workflow)}versions/").status_code == 200


# --- Efficiency -------------------------------------------------------------------------------
def test_the_list_costs_the_same_queries_for_many_workflows(user, user_client, django_assert_max_num_queries):
    for _ in range(8):
        workflow = WorkflowFactory(owner=user)
        EdgeFactory(workflow=workflow)
        WorkflowMemberFactory(workflow=workflow)
    shared = WorkflowFactory()
    WorkflowMemberFactory(workflow=shared, user=user, role=WorkflowMember.Role.EDITOR)

    with django_assert_max_num_queries(6):
        response = user_client.get(LIST_URL)

    assert response.status_code == 200
    assert response.json()["count"] == 9
    assert all(len(item["graph"]["nodes"]) == 2 for item in response.json()["results"] if item["role"] == "owner")


def test_options_on_a_workflow_answers(user, user_client, other_user):
    assert user_client.options(detail_url(WorkflowFactory(owner=user))).status_code == 200
    assert user_client.options(detail_url(WorkflowFactory(owner=other_user))).status_code == 404


@pytest.mark.parametrize("path", ["workflows/", "workflows/{id}/", "workflows/{id}/members/", "runs/", "schedules/"])
def test_the_browsable_api_renders(user, client, path):
    workflow = WorkflowFactory(owner=user)
    client.force_login(user)

    response = client.get(f"/api/v1/{path.format(id=workflow.pk)}", HTTP_ACCEPT="text/html")

    assert response.status_code == 200
    assert b"<html" in response.content
