"""The API's OpenAPI document shows every DSL graph field as the engine's JSON Schema."""

import pytest
import yaml

from workflows.engine import dsl_schema

pytestmark = pytest.mark.django_db


@pytest.fixture
def openapi(api_client) -> dict:
    return yaml.safe_load(api_client.get("/api/schema/").content)


def refs_in(value) -> list[str]:
    if isinstance(value, dict):
        return [value["$ref"]] if "$ref" in value else [ref for inner in value.values() for ref in refs_in(inner)]
    if isinstance(value, list):
        return [ref for inner in value for ref in refs_in(inner)]
    return []


def test_the_graph_fields_refer_to_the_dsl_component(openapi):
    schemas = openapi["components"]["schemas"]
    for component, field in [
        ("Workflow", "graph"),
        ("WorkflowRequest", "graph"),
        ("GraphValidateRequest", "graph"),
        ("TemplateRequest", "template_data"),
        ("FlowDetail", "graph"),
        ("FlowDetail", "release_graph"),
    ]:
        assert "#/components/schemas/DslGraph" in refs_in(schemas[component]["properties"][field]), component


def test_the_dsl_components_are_the_engines_schema_in_openapi_3_0(openapi):
    schemas = openapi["components"]["schemas"]
    engine = dsl_schema()
    graph = schemas["DslGraph"]
    assert graph["properties"]["nodes"] == {
        "description": engine["properties"]["nodes"]["description"],
        "type": "array",
        "nullable": True,
        "maxItems": 5000,
        "items": {"$ref": "#/components/schemas/DslNode"},
    }
    assert set(schemas["DslNode"]["properties"]) == set(engine["$defs"]["node"]["properties"])
    assert schemas["DslErrorPolicy"]["properties"]["timeout_s"] == {
        "type": "number",
        "nullable": True,
        "minimum": 0,
        "exclusiveMinimum": True,
    }
    assert schemas["DslKey"]["pattern"] == engine["$defs"]["key"]["pattern"]
    dsl = [schema for name, schema in schemas.items() if name.startswith("Dsl")]
    assert {ref.rsplit("/", 1)[1] for ref in refs_in(dsl)} <= set(schemas)
    assert "DslGraphRequest" not in schemas  # one component for reading and writing
