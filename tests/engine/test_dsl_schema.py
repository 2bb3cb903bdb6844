"""The DSL's JSON Schema: the one statement of a graph's shape, its problems named as the API names them."""

import copy
import json
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from tests.engine.conftest import chain, end, node, start
from workflows.engine import dsl_schema, dsl_shape_issues, validate_graph

DESIGN_EXAMPLE = {
    "nodes": [
        {"id": "start", "type": "start", "config": {"inputs": [{"name": "city", "type": "string", "required": True}]}},
        {
            "id": "greet",
            "type": "template",
            "config": {"template": "Weather for {{ start.city }}"},
            "error_policy": {
                "timeout_s": 30,
                "retry": {"max_attempts": 3, "backoff": "exponential", "initial_s": 1, "max_s": 60, "jitter": True},
                "on_failure": "fail",
            },
        },
        {"id": "end", "type": "end", "config": {"outputs": {"text": "{{ greet.text }}"}}},
    ],
    "edges": [{"source": "start", "target": "greet"}, {"source": "greet", "target": "end"}],
}


def where(issues) -> set[tuple]:
    return {(issue.node, issue.field) for issue in issues}


def test_the_schema_is_draft_2020_12_and_the_design_documents_example_has_its_shape():
    schema = dsl_schema()
    Draft202012Validator.check_schema(schema)
    assert Draft202012Validator(schema).is_valid(DESIGN_EXAMPLE)
    assert dsl_shape_issues(DESIGN_EXAMPLE) == []


def test_the_schema_is_the_file_beside_the_engine_and_a_copy_the_caller_may_change():
    from workflows import engine

    on_disk = json.loads((Path(engine.__file__).parent / "dsl_v1.json").read_text())
    schema = dsl_schema()
    assert schema == on_disk
    schema["properties"].clear()
    assert dsl_schema() == on_disk


def test_an_empty_draft_has_the_shape():
    for empty in ({}, {"nodes": [], "edges": []}, {"nodes": None, "edges": None}):
        assert dsl_shape_issues(empty) == []


#: Changes that give the design document's example the wrong shape, and where each problem is.
MISSHAPEN = [
    (lambda g: [g], {(None, "graph")}),
    (lambda g: {**g, "extra": 1, "more": 2}, {(None, "graph.extra"), (None, "graph.more")}),
    (lambda g: {**g, "nodes": 5}, {(None, "nodes")}),
    (lambda g: {**g, "nodes": [*g["nodes"], "start"]}, {(None, "nodes[3]")}),
    (lambda g: g["nodes"][1].pop("id") and g, {(None, "nodes[1].id")}),
    (lambda g: g["nodes"][1].pop("type") and g, {("greet", "nodes[1].type")}),
    (lambda g: g["nodes"][1].update(id="../etc") or g, {(None, "nodes[1].id")}),
    (lambda g: g["nodes"][1].update(id="n" * 65) or g, {(None, "nodes[1].id")}),
    (lambda g: g["nodes"][1].update(colour="red") or g, {("greet", "nodes[1].colour")}),
    (lambda g: g["nodes"][1].update(config=["template"]) or g, {("greet", "nodes[1].config")}),
    (lambda g: g["nodes"][1].update(name="n" * 256) or g, {("greet", "nodes[1].name")}),
    (lambda g: g["nodes"][1].update(position={"x": "left", "y": 1}) or g, {("greet", "nodes[1].position.x")}),
    (lambda g: g["nodes"][1].update(error_policy=[]) or g, {("greet", "nodes[1].error_policy")}),
    (lambda g: g["edges"][0].update(source=1) or g, {(None, "edges[0].source")}),
    (lambda g: g["edges"][0].update(source_handle="h" * 65) or g, {("start", "edges[0].source_handle")}),
    (lambda g: g["edges"][0].pop("target") and g, {(None, "edges[0].target")}),
]


@pytest.mark.parametrize(("change", "expected"), MISSHAPEN)
def test_each_shape_problem_names_its_node_and_field(change, expected):
    graph = change(copy.deepcopy(DESIGN_EXAMPLE))
    issues = dsl_shape_issues(graph)
    assert where(issues) == expected
    assert all(issue.message for issue in issues)


def test_error_policy_problems_are_named_under_the_node_as_the_engine_always_has():
    graph = copy.deepcopy(DESIGN_EXAMPLE)
    graph["nodes"][1]["error_policy"] = {"on_failure": "explode", "retry": {"max_attempts": 0}, "sleep": 1}
    assert where(dsl_shape_issues(graph)) == {
        ("greet", "error_policy.on_failure"),
        ("greet", "error_policy.retry.max_attempts"),
        ("greet", "error_policy.sleep"),
    }


def test_messages_say_what_is_wanted():
    graph = copy.deepcopy(DESIGN_EXAMPLE)
    graph["nodes"][1]["id"] = "../etc"
    graph["nodes"][2]["name"] = "n" * 256
    del graph["edges"][0]["target"]
    messages = {issue.field: issue.message for issue in dsl_shape_issues(graph)}
    assert messages == {
        "nodes[1].id": "Must be an identifier: letters, digits and '_', not starting with a digit.",
        "nodes[2].name": "At most 255 characters.",
        "edges[0].target": "This field is required.",
    }
    assert [issue.message for issue in dsl_shape_issues({"nodes": "many"})] == ["Must be a list or null."]


def test_a_graph_of_the_wrong_shape_is_answered_with_its_shape_problems_alone():
    graph = chain(start(), node("a", "teleport"), end())
    graph["edges"].append({"source": "a", "target": "ghost", "colour": "red"})
    assert where(validate_graph(graph)) == {(None, "edges[2].colour")}
    del graph["edges"][2]["colour"]
    assert where(validate_graph(graph)) == {("a", "type"), ("ghost", "edges[2].target")}


def test_a_sub_graph_of_the_wrong_shape_is_named_under_its_iteration_node():
    inner = chain(node("in", "start"), node("say", "template", {"template": "{{ item }}"}), end())
    inner["nodes"][1]["id"] = "9lives"
    graph = chain(
        start(items="array"), node("each", "iteration", {"items": "{{ start.items }}", "graph": inner}), end()
    )
    # Its edges still name "say", which no longer exists: only the shape is reported.
    assert where(validate_graph(graph)) == {("each", "config.graph.nodes[1].id")}
