"""The example plugin (examples/weft-plugin-example, installed by `make install-dev`): unseen until enabled,
then a node type like any other: listed, validated, executed with the same context and checks."""

import pytest

from tests.engine.conftest import execute, timeline
from tests.plugins.conftest import EXAMPLE, plugin_graph
from workflows.engine import get_node_type, get_plugin_of, plugins_installed, validate_graph
from workflows.services import workflow_create

REVERSE = plugin_graph("example_reverse", {"text": "{{ start.text }}", "by": "word"})


def test_an_installed_plugin_is_not_used_until_it_is_enabled():
    found = [info for info in plugins_installed() if info.name == EXAMPLE]
    assert found, f"{EXAMPLE} is not installed: `make install-dev` installs it from examples/"
    (example,) = found
    assert example.types == ("example_reverse",)
    assert not example.enabled
    assert get_node_type("example_reverse") is None

    (issue,) = validate_graph(REVERSE)
    assert (issue.node, issue.field) == ("plug", "type")
    assert f"plugin {EXAMPLE} {example.version}, which is not enabled" in issue.message


async def test_an_enabled_plugin_runs_with_the_context_of_any_node(enable_plugins):
    enable_plugins(EXAMPLE)

    result, journal = await execute(REVERSE, {"text": "one two three"})

    assert result.status == "succeeded", result.error
    assert result.outputs == {"out": {"text": "three two one", "length": 13}}
    deltas = [event["data"] for event in journal.events if event["type"] == "node.delta"]
    assert deltas == [{"text": "reversing 13 characters"}]  # ctx.delta, sent back to the run's journal
    assert ("node.succeeded", "plug") in timeline(journal)


async def test_its_errors_name_the_plugin_and_its_version(enable_plugins):
    enable_plugins(EXAMPLE)
    graph = plugin_graph("example_reverse", {"text": "{{ start.text }}", "max_chars": 3})

    result, journal = await execute(graph, {"text": "too long"})

    assert result.status == "failed"
    version = get_plugin_of("example_reverse").version
    assert f"Plugin {EXAMPLE} {version}: The text has 8 characters" in journal.tasks[("", "plug")].error
    assert journal.tasks[("", "plug")].attempt == 1  # a NonRetryableError stays one


def test_its_config_is_validated_against_its_schema(enable_plugins):
    enable_plugins(EXAMPLE)
    graph = plugin_graph("example_reverse", {"text": "x", "by": "sentence"})

    assert [(issue.node, issue.field) for issue in validate_graph(graph)] == [("plug", "config.by")]
    assert validate_graph(plugin_graph("example_reverse", {"text": "{{ start.nope }}"}))[0].field == "config.text"


@pytest.mark.django_db
def test_the_node_types_api_lists_it_once_enabled(user_client, enable_plugins):
    assert "example_reverse" not in {item["type"] for item in user_client.get("/api/v1/node-types/").json()}
    enable_plugins(EXAMPLE)

    by_type = {item["type"]: item for item in user_client.get("/api/v1/node-types/").json()}

    listed = by_type["example_reverse"]
    assert listed["plugin"] == {"name": EXAMPLE, "version": get_plugin_of("example_reverse").version}
    assert listed["outputs"] == ["length", "text"]
    assert listed["config_schema"]["required"] == ["text"]
    assert get_node_type("example_reverse").validate_config("x", listed["example_config"]) == []
    assert by_type["template"]["plugin"] is None


@pytest.mark.django_db
def test_a_draft_using_it_while_it_is_not_enabled_is_a_400_naming_node_and_plugin(user, user_client, enable_plugins):
    enable_plugins(EXAMPLE)
    workflow = workflow_create(owner=user, name="Reverse", graph=REVERSE)
    enable_plugins()

    response = user_client.post(f"/api/v1/workflows/{workflow.pk}/validate/", {}, format="json")

    assert response.status_code == 400
    (error,) = response.json()["errors"]
    assert (error["node"], error["field"]) == ("plug", "type")
    assert EXAMPLE in error["message"]
    assert "not enabled" in error["message"]


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("embedded")
def test_a_run_through_the_api_executes_it(user, user_client, enable_plugins):
    enable_plugins(EXAMPLE)
    workflow = workflow_create(owner=user, name="Reverse", graph=REVERSE)

    response = user_client.post(
        f"/api/v1/workflows/{workflow.pk}/runs/", {"inputs": {"text": "a b"}, "wait": True}, format="json"
    )

    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["status"] == "succeeded", body["error"]
    assert body["outputs"] == {"out": {"text": "b a", "length": 3}}
