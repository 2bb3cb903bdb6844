"""The DSL's JSON Schema in the API's OpenAPI document: one ``Dsl*`` component per definition.

The engine's schema (``workflows/engine/dsl_v1.json``) is JSON Schema 2020-12; the API's document
is OpenAPI 3.0, whose schemas are an older dialect. The translation covers what the DSL's schema
uses: ``$defs`` become components, ``"type": [t, "null"]`` becomes ``nullable``, a numeric
``exclusiveMinimum`` becomes ``minimum`` with ``exclusiveMinimum: true``.
"""

from drf_spectacular.extensions import OpenApiSerializerFieldExtension
from drf_spectacular.plumbing import ResolvedComponent

from .engine import dsl_schema

GRAPH_COMPONENT = "DslGraph"
_DROPPED = frozenset({"$schema", "$id", "$defs"})


def _component_name(definition: str) -> str:
    return "Dsl" + "".join(part.capitalize() for part in definition.split("_"))


def dsl_components() -> dict[str, dict]:
    """The DSL's schema as OpenAPI 3.0 components by name, the graph's first.

    New dicts on every call: drf-spectacular's post-processing changes the components in place
    (it moves enums to components of their own)."""
    schema = dsl_schema()
    components = {GRAPH_COMPONENT: _openapi(schema)}
    for name, definition in schema["$defs"].items():
        components[_component_name(name)] = _openapi(definition)
    return components


def _openapi(schema: dict) -> dict:
    converted = {}
    for keyword, value in schema.items():
        if keyword in _DROPPED:
            continue
        if keyword == "$ref":
            converted["$ref"] = f"#/components/schemas/{_component_name(value.removeprefix('#/$defs/'))}"
        elif keyword == "type" and isinstance(value, list):
            (converted["type"],) = [name for name in value if name != "null"]
            converted["nullable"] = "null" in value
        elif keyword == "exclusiveMinimum":
            converted.update(minimum=value, exclusiveMinimum=True)
        elif keyword == "properties":
            converted["properties"] = {name: _openapi(inner) for name, inner in value.items()}
        elif keyword in ("items", "additionalProperties") and isinstance(value, dict):
            converted[keyword] = _openapi(value)
        else:
            converted[keyword] = value
    return converted


class DslGraphFieldExtension(OpenApiSerializerFieldExtension):
    """Shows a :class:`~workflows.serializers.DslGraphField` (and its subclasses) as ``DslGraph``."""

    target_class = "workflows.serializers.DslGraphField"
    match_subclasses = True

    def map_serializer_field(self, auto_schema, direction):
        for name, schema in dsl_components().items():
            auto_schema.registry.register_on_missing(
                ResolvedComponent(name=name, type=ResolvedComponent.SCHEMA, object=name, schema=schema)
            )
        return {"$ref": f"#/components/schemas/{GRAPH_COMPONENT}"}
