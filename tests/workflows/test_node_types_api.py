"""GET /api/v1/node-types/: the registry as the editor's palette and forms read it."""

import pytest
import yaml
from jsonschema import Draft202012Validator

from workflows.engine import get_node_type, validate_graph
from workflows.node_reference import documented_types

URL = "/api/v1/node-types/"
BUILT_IN = {"start", "end", "template", "code", "http_request", "condition", "aggregator", "iteration"}
FROM_AGENTS = {"llm", "agent", "tool"}


@pytest.mark.django_db
def test_every_registered_type_is_listed_with_the_contract_fields(user_client):
    response = user_client.get(URL)

    assert response.status_code == 200
    body = response.json()
    by_type = {item["type"]: item for item in body}
    assert set(by_type) >= BUILT_IN | FROM_AGENTS
    assert [item["type"] for item in body] == sorted(by_type)
    for item in body:
        assert {"type", "description", "config_schema", "outputs", "effects"} <= set(item)
        assert item["description"] or item["type"] not in documented_types(), item["type"]
        Draft202012Validator.check_schema(item["config_schema"])


@pytest.mark.django_db
def test_the_fields_are_the_node_types_own(user_client):
    by_type = {item["type"]: item for item in user_client.get(URL).json()}

    assert by_type["http_request"]["outputs"] == ["body", "headers", "json", "status"]
    assert by_type["http_request"]["effects"] is True
    assert by_type["template"]["outputs"] == ["text"]
    assert by_type["template"]["effects"] is False
    assert by_type["code"]["outputs"] is None
    assert by_type["llm"]["config_schema"] == get_node_type("llm").config_schema
    assert by_type["condition"]["config_schema"]["required"] == ["cases"]


@pytest.mark.django_db
def test_each_example_config_is_valid_for_its_type(user_client):
    for item in user_client.get(URL).json():
        if item["type"] not in documented_types():
            continue  # a type a test registered for itself
        assert item["example_config"] is not None, item["type"]
        assert get_node_type(item["type"]).validate_config("example", item["example_config"]) == [], item["type"]


def test_the_iteration_example_is_a_valid_sub_graph():
    example = get_node_type("iteration").example_config
    graph = {
        "nodes": [
            {"id": "start", "type": "start", "config": {"inputs": [{"name": "cities", "type": "array"}]}},
            {"id": "each", "type": "iteration", "config": example},
            {"id": "end", "type": "end"},
        ],
        "edges": [{"source": "start", "target": "each"}, {"source": "each", "target": "end"}],
    }

    assert validate_graph(graph) == []


@pytest.mark.django_db
def test_the_list_needs_an_account(api_client):
    assert api_client.get(URL).status_code in (401, 403)


@pytest.mark.django_db
def test_the_endpoints_are_in_the_openapi_schema(api_client):
    schema = yaml.safe_load(api_client.get("/api/schema/").content)

    listed = schema["paths"]["/api/v1/node-types/"]["get"]
    assert listed["operationId"] == "node_types_list"
    tried = schema["paths"]["/api/v1/workflows/{id}/nodes/{node_id}/try/"]["post"]
    assert tried["operationId"] == "workflow_node_try"
    assert {"200", "400", "404", "429"} <= set(tried["responses"])
    trial = schema["components"]["schemas"]["NodeTrial"]
    assert {"node", "type", "status", "output", "error", "duration_ms"} <= set(trial["properties"])
