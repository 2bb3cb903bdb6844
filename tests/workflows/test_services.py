"""The services and selectors other apps call (templates, releases, the engine)."""

import pytest

from config.errors import Forbidden, NotFound
from history.models import AuditLog
from tests.factories import (
    EdgeFactory,
    RunFactory,
    UserFactory,
    WorkflowFactory,
    WorkflowMemberFactory,
    WorkflowTemplateFactory,
)
from workflows import services
from workflows.models import Node, Workflow, WorkflowMember
from workflows.permissions import CAN_EDIT, CAN_MANAGE, CAN_RUN, CAN_VIEW
from workflows.selectors import runs_for_user, workflow_get_for_user, workflow_graph, workflows_for_user


def test_workflow_create_from_a_template_records_its_source(user, graph):
    template = WorkflowTemplateFactory()

    workflow = services.workflow_create(
        owner=user, name="From template", graph=graph, source=Workflow.Source.TEMPLATE, source_template=template
    )

    workflow.refresh_from_db()
    assert (workflow.source, workflow.source_template) == ("template", template)
    assert {node["id"] for node in workflow_graph(workflow=workflow)["nodes"]} == {"start", "greet", "end"}


def test_graph_invalid_answers_with_every_issue(user, graph):
    graph["nodes"][1]["id"] = "x" * 65
    graph["edges"].append({"source": 1, "target": "end"})

    with pytest.raises(services.GraphInvalid) as caught:
        services.workflow_create(owner=user, name="Broken", graph=graph)

    body = caught.value.as_dict()
    assert caught.value.status_code == 400
    assert body["code"] == "invalid_graph"
    assert {(error["node"], error["field"]) for error in body["errors"]} == {
        (None, "nodes[1].id"),
        (None, "edges[2].source"),
    }
    assert not Workflow.objects.exists()


def test_workflow_update_needs_an_editor(user, graph):
    workflow = WorkflowFactory()
    WorkflowMemberFactory(workflow=workflow, user=user, role=WorkflowMember.Role.EXECUTOR)

    with pytest.raises(Forbidden):
        services.workflow_update(workflow=workflow, user=user, graph=graph)
    with pytest.raises(NotFound):
        services.workflow_update(workflow=workflow, user=UserFactory(), name="x")

    assert not Node.objects.filter(workflow=workflow).exists()


def test_workflows_for_user_gives_each_workflow_once_with_the_callers_role(user):
    owned = WorkflowFactory(owner=user)
    WorkflowMemberFactory.create_batch(3, workflow=owned)
    edited = WorkflowFactory()
    WorkflowMemberFactory(workflow=edited, user=user, role=WorkflowMember.Role.EDITOR)
    WorkflowMemberFactory.create_batch(2, workflow=edited)
    watched = WorkflowFactory()
    WorkflowMemberFactory(workflow=watched, user=user, role=WorkflowMember.Role.VIEWER)
    WorkflowFactory()

    def roles(allowed):
        return sorted((str(w.pk), w.caller_role) for w in workflows_for_user(user=user, roles=allowed))

    everything = [(str(owned.pk), "owner"), (str(edited.pk), "editor"), (str(watched.pk), "viewer")]
    assert roles(CAN_VIEW) == sorted(everything)
    assert roles(CAN_EDIT) == sorted([(str(owned.pk), "owner"), (str(edited.pk), "editor")])
    assert roles(CAN_RUN) == roles(CAN_EDIT)
    assert roles(CAN_MANAGE) == [(str(owned.pk), "owner")]
    assert roles({WorkflowMember.Role.VIEWER}) == [(str(watched.pk), "viewer")]


def test_workflow_get_for_user_tells_hidden_from_forbidden(user):
    watched = WorkflowFactory()
    WorkflowMemberFactory(workflow=watched, user=user, role=WorkflowMember.Role.VIEWER)

    assert workflow_get_for_user(user=user, workflow_id=watched.pk, roles=CAN_VIEW) == watched
    with pytest.raises(Forbidden):
        workflow_get_for_user(user=user, workflow_id=str(watched.pk), roles=CAN_EDIT)
    with pytest.raises(NotFound):
        workflow_get_for_user(user=user, workflow_id=WorkflowFactory().pk, roles=CAN_VIEW)
    with pytest.raises(NotFound):
        workflow_get_for_user(user=user, workflow_id="nonsense", roles=CAN_VIEW)


def test_workflow_graph_reads_prefetched_rows_without_queries(user, django_assert_num_queries):
    workflow = WorkflowFactory(owner=user)
    EdgeFactory(workflow=workflow, source_handle="error")
    fetched = Workflow.objects.prefetch_related("nodes", "edges").get(pk=workflow.pk)

    with django_assert_num_queries(0):
        graph = workflow_graph(workflow=fetched)

    assert len(graph["nodes"]) == 2
    assert graph["edges"][0]["source_handle"] == "error"
    assert set(graph["edges"][0]) == {"source", "target", "source_handle"}


def test_runs_for_user_follows_membership(user):
    shared = WorkflowFactory()
    member = WorkflowMemberFactory(workflow=shared, user=user)
    run = RunFactory(workflow=shared)
    RunFactory()

    assert list(runs_for_user(user=user)) == [run]
    member.delete()
    assert not runs_for_user(user=user).exists()


def test_an_operator_sets_members_with_an_audit_row(staff_user):
    workflow = WorkflowFactory()
    friend = UserFactory()

    services.workflow_member_set(workflow=workflow, actor=staff_user, user=friend, role="editor", as_operator=True)

    assert WorkflowMember.objects.get(workflow=workflow, user=friend).role == "editor"
    assert AuditLog.objects.get(action="workflow.member_add").actor == staff_user
    with pytest.raises(NotFound):
        services.workflow_member_set(workflow=workflow, actor=staff_user, user=friend, role="viewer")


def test_graph_clean_fills_in_the_optional_fields(graph):
    cleaned = services.graph_clean(
        {"nodes": graph["nodes"], "edges": [{**edge, "source_handle": ""} for edge in graph["edges"]]}
    )
    assert all(set(node) == {"id", "type", "name", "config", "error_policy", "position"} for node in cleaned["nodes"])
    assert all(edge["source_handle"] is None for edge in cleaned["edges"])
    assert services.graph_clean({}) == {"nodes": [], "edges": []}


@pytest.mark.parametrize(
    ("where", "value", "field"),
    [("name", "a\x00b", "nodes[1].name"), ("config", {"template": "a\x00b"}, "nodes[1].config")],
)
def test_graph_clean_refuses_what_postgresql_cannot_store(graph, where, value, field):
    graph["nodes"][1][where] = value
    with pytest.raises(services.GraphInvalid) as caught:
        services.graph_clean(graph)
    assert [(issue.node, issue.field) for issue in caught.value.issues] == [("greet", field)]


def test_graph_clean_refuses_a_coordinate_json_cannot_hold(graph):
    graph["nodes"][1]["position"] = {"x": float("nan"), "y": 1}
    with pytest.raises(services.GraphInvalid) as caught:
        services.graph_clean(graph)
    assert [(issue.node, issue.field) for issue in caught.value.issues] == [("greet", "nodes[1].position.x")]


def test_an_empty_draft_is_checked_for_its_shape_only():
    with pytest.raises(services.GraphInvalid) as caught:
        services.graph_clean({"nodes": [], "edges": 0})
    assert [(issue.node, issue.field) for issue in caught.value.issues] == [(None, "edges")]
