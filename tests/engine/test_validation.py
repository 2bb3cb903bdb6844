"""One test per validation rule: each problem is one GraphIssue naming the node and the field."""

import copy

from tests.engine.conftest import chain, edge, end, node, start
from workflows.engine import GraphIssue, validate_graph, validation_cache_info

VALID = chain(
    start("city"),
    node("greet", "template", {"template": "Weather for {{ start.city }}"}),
    end(text="{{ greet.text }}"),
)


def issues_of(graph: dict) -> set[tuple]:
    return {(issue.node, issue.field) for issue in validate_graph(graph)}


def messages_of(graph: dict) -> list[str]:
    return [issue.message for issue in validate_graph(graph)]


def test_the_design_documents_example_is_valid():
    graph = copy.deepcopy(VALID)
    graph["nodes"][1]["error_policy"] = {
        "timeout_s": 30,
        "retry": {"max_attempts": 3, "backoff": "exponential", "initial_s": 1, "max_s": 60, "jitter": True},
        "on_failure": "fail",
    }
    assert validate_graph(graph) == []


def test_unknown_node_type():
    graph = chain(start(), node("x", "teleport"), end())
    assert issues_of(graph) == {("x", "type")}
    assert "teleport" in messages_of(graph)[0]


def test_bad_config_for_the_type():
    graph = chain(start(), node("greet", "template", {"template": 3}), end())
    assert issues_of(graph) == {("greet", "config.template")}


def test_missing_required_config_names_the_missing_field():
    graph = chain(start(), node("greet", "template", {}), end())
    assert issues_of(graph) == {("greet", "config.template")}


def test_duplicate_ids():
    graph = chain(start(), node("a", "template", {"template": "x"}), end())
    graph["nodes"].append(node("a", "template", {"template": "y"}))
    assert ("a", "nodes[3].id") in issues_of(graph)


def test_dangling_edges():
    graph = copy.deepcopy(VALID)
    graph["edges"].append(edge("greet", "ghost"))
    assert issues_of(graph) == {("ghost", "edges[2].target")}


def test_cycles():
    graph = chain(start(), node("a", "template", {"template": "a"}), node("b", "template", {"template": "b"}), end())
    graph["edges"].append(edge("b", "a"))
    found = validate_graph(graph)
    assert [(issue.node, issue.field) for issue in found] == [("a", "edges")]
    assert "a, b" in found[0].message


def test_no_start():
    graph = chain(node("greet", "template", {"template": "x"}), end())
    assert (None, "nodes") in issues_of(graph)
    assert "no start" in " ".join(messages_of(graph))


def test_more_than_one_start():
    graph = copy.deepcopy(VALID)
    graph["nodes"].append(node("second", "start"))
    graph["edges"].append(edge("second", "greet"))
    assert issues_of(graph) == {("second", "type")}


def test_no_end():
    graph = chain(start(), node("greet", "template", {"template": "x"}))
    assert issues_of(graph) == {(None, "nodes")}
    assert "no end" in messages_of(graph)[0]


def test_end_unreachable():
    graph = chain(start(), node("greet", "template", {"template": "x"}), end())
    graph["edges"].pop()
    assert issues_of(graph) == {("end", "edges")}
    assert "not reachable" in messages_of(graph)[0]


def test_reference_to_a_node_that_is_not_an_ancestor():
    graph = {
        "nodes": [
            start(),
            node("a", "template", {"template": "{{ b.text }}"}),
            node("b", "template", {"template": "b"}),
            end(),
        ],
        "edges": [edge("start", "a"), edge("start", "b"), edge("a", "end"), edge("b", "end")],
    }
    assert issues_of(graph) == {("a", "config.template")}
    assert "not upstream" in messages_of(graph)[0]


def test_reference_to_a_downstream_node():
    graph = chain(start(), node("a", "template", {"template": "{{ end.text }}"}), end(text="{{ a.text }}"))
    assert issues_of(graph) == {("a", "config.template")}


def test_reference_to_something_that_does_not_exist():
    graph = chain(start(), node("a", "template", {"template": "{{ nowhere.text }}"}), end())
    assert issues_of(graph) == {("a", "config.template")}


def test_reference_to_an_undeclared_input_and_an_unknown_output_and_sys_field():
    graph = chain(
        start("city"),
        node("a", "template", {"template": "{{ start.country }}"}),
        node("b", "template", {"template": "{{ a.txt }} {{ sys.password }}"}),
        end(),
    )
    assert [(i.node, i.field) for i in validate_graph(graph)] == [
        ("a", "config.template"),
        ("b", "config.template"),
        ("b", "config.template"),
    ]


def test_template_that_does_not_parse():
    graph = chain(start(), node("a", "template", {"template": "{{ start.city "}), end())
    assert issues_of(graph) == {("a", "config.template")}
    assert "does not parse" in messages_of(graph)[0]


def test_bad_error_policy():
    graph = copy.deepcopy(VALID)
    graph["nodes"][1]["error_policy"] = {"on_failure": "explode", "retry": {"max_attempts": 0}}
    assert issues_of(graph) == {("greet", "error_policy.on_failure"), ("greet", "error_policy.retry.max_attempts")}


def test_retry_attempts_above_the_engine_limit():
    graph = copy.deepcopy(VALID)
    graph["nodes"][1]["error_policy"] = {"retry": {"max_attempts": 1000}}
    assert issues_of(graph) == {("greet", "error_policy.retry.max_attempts")}


def test_branch_on_failure_needs_an_error_edge():
    graph = copy.deepcopy(VALID)
    graph["nodes"][1]["error_policy"] = {"on_failure": "branch"}
    assert issues_of(graph) == {("greet", "error_policy.on_failure")}


def test_error_edge_from_a_node_without_branch_policy():
    graph = copy.deepcopy(VALID)
    graph["edges"].append(edge("greet", "end", "error"))
    assert issues_of(graph) == {("greet", "edges[2].source_handle")}


def test_condition_handles_that_match_no_case():
    graph = {
        "nodes": [
            start(n="number"),
            node("check", "condition", {"cases": [{"id": "big", "expression": "{{ start.n > 10 }}"}]}),
            end(),
        ],
        "edges": [edge("start", "check"), edge("check", "end", "big"), edge("check", "end", "small")],
    }
    assert issues_of(graph) == {("check", "edges[2].source_handle")}
    assert "'big', 'else'" in messages_of(graph)[0]


def test_every_problem_is_reported_at_once():
    graph = {
        "nodes": [
            node("a", "teleport"),
            node("b", "template", {}),
            node("b", "template", {"template": "x"}),
        ],
        "edges": [edge("a", "ghost")],
    }
    found = validate_graph(graph)
    assert all(isinstance(issue, GraphIssue) for issue in found)
    assert {("a", "type"), ("b", "config.template"), ("b", "nodes[2].id"), ("ghost", "edges[0].target")} <= {
        (issue.node, issue.field) for issue in found
    }
    assert {(None, "nodes")} <= {(issue.node, issue.field) for issue in found}


def test_iteration_sub_graph_problems_name_the_iteration_node_and_the_inner_field():
    inner = chain(node("in", "start"), node("say", "template", {"template": "{{ item }} {{ nope.x }}"}), end())
    graph = chain(
        start(items="array"), node("each", "iteration", {"items": "{{ start.items }}", "graph": inner}), end()
    )
    assert issues_of(graph) == {("each", "config.graph.say.config.template")}


def test_iteration_sub_graph_may_read_item_and_the_outer_ancestors():
    inner = chain(
        node("in", "start"),
        node("say", "template", {"template": "{{ index }}: {{ item }} {{ pre.text }} {{ start.items }}"}),
        end(line="{{ say.text }}"),
    )
    graph = chain(
        start(items="array"),
        node("pre", "template", {"template": "p"}),
        node("each", "iteration", {"items": "{{ start.items }}", "graph": inner}),
        end(results="{{ each.results }}"),
    )
    assert validate_graph(graph) == []


def test_reserved_ids():
    graph = chain(start(), node("sys", "template", {"template": "x"}), end())
    assert issues_of(graph) == {("sys", "id")}


# --- The cache of validated graphs --------------------------------------------------------------


def test_a_graph_validated_again_is_answered_from_the_cache():
    graph = copy.deepcopy(VALID)
    graph["nodes"][1]["config"]["template"] = "{{ ghost.text }}"
    first = validate_graph(graph)
    before = validation_cache_info()

    again = validate_graph(copy.deepcopy(graph))

    assert again == first
    assert len(first) == 1
    assert validation_cache_info()[:2] == (before.hits + 1, before.misses)
    again.clear()  # the caller's list is its own
    assert validate_graph(graph) == first
    graph["nodes"][1]["config"]["template"] = "{{ start.city }} (seen by no other test)"
    assert validate_graph(graph) == []  # new content: checked
    after = validation_cache_info()
    assert after[:2] == (before.hits + 2, before.misses + 1)
    assert 0 < after.currsize <= after.maxsize


def test_a_changed_limit_is_applied_to_a_graph_seen_before(settings):
    graph = copy.deepcopy(VALID)
    graph["nodes"][1]["error_policy"] = {"retry": {"max_attempts": 5}}
    assert validate_graph(graph) == []
    settings.WEFT = {**settings.WEFT, "ENGINE": {**settings.WEFT.get("ENGINE", {}), "RETRY_MAX_ATTEMPTS": 3}}
    assert issues_of(graph) == {("greet", "error_policy.retry.max_attempts")}


def test_a_node_type_registered_later_makes_a_graph_seen_before_valid():
    from workflows.engine.nodes import NodeType, base, register

    graph = chain(start(), node("x", "test_registered_later"), end())
    assert issues_of(graph) == {("x", "type")}

    @register
    class RegisteredLater(NodeType):
        type = "test_registered_later"
        config_schema = {"type": "object"}

        async def execute(self, ctx, config):
            return {}

    try:
        assert validate_graph(graph) == []
    finally:
        del base._registry["test_registered_later"]
        base.registry_version += 1
