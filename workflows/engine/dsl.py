"""The shape of a DSL v1 graph: one JSON Schema (``dsl_v1.json``), and its problems as GraphIssues.

The schema is the one place that says which fields a graph, a node, an edge and an error policy
have, their types and their limits; the API publishes it and the console checks a graph with it
before saving. What a schema cannot say (unique ids, one start, reachable ends, no cycle, each
node type's config) is checked by :mod:`.validation` on graphs of the right shape.

Problems name the field as the API always has: ``nodes[1].id``, ``edges[0].source_handle``,
``graph.extra`` for an unknown top-level field, and, inside a node's error policy, the field
under the node (``error_policy.retry.max_attempts`` of node ``greet``).
"""

import copy
import json
from functools import cache
from importlib import resources

from jsonschema import Draft202012Validator

from .graph import GraphIssue

IDENTIFIER_MESSAGE = "Must be an identifier: letters, digits and '_', not starting with a digit."
_TYPE_NAMES = {
    "object": "an object",
    "array": "a list",
    "string": "a string",
    "number": "a number",
    "integer": "an integer",
    "boolean": "true or false",
    "null": "null",
}
#: Fields under a node whose problems are named relative to the node (as the engine always has).
_NODE_RELATIVE = frozenset({"error_policy", "cache"})


@cache
def _loaded() -> dict:
    text = resources.files(__package__).joinpath("dsl_v1.json").read_text(encoding="utf-8")
    schema = json.loads(text)
    Draft202012Validator.check_schema(schema)
    return schema


@cache
def _validator() -> Draft202012Validator:
    # jsonschema resolves a $ref each time it is used, nearly half its time on a large graph: the
    # validator gets the schema with each definition written out in place (the DSL has no cycle).
    schema = _loaded()
    return Draft202012Validator(_inlined(schema, schema["$defs"]))


def _inlined(schema, definitions: dict):
    if isinstance(schema, list):
        return [_inlined(item, definitions) for item in schema]
    if not isinstance(schema, dict):
        return schema
    if "$ref" in schema:
        return _inlined(definitions[schema["$ref"].removeprefix("#/$defs/")], definitions)
    return {key: _inlined(value, definitions) for key, value in schema.items() if key != "$defs"}


@cache
def _key_validator() -> Draft202012Validator:
    return Draft202012Validator(_loaded()["$defs"]["key"])


def dsl_schema() -> dict:
    """The JSON Schema (draft 2020-12) of a DSL v1 graph; a copy the caller may change."""
    return copy.deepcopy(_loaded())


def dsl_shape_issues(graph) -> list[GraphIssue]:
    """Every place where ``graph`` does not have the shape of a DSL v1 graph (empty: it has)."""
    found = dict.fromkeys(issue for error in _validator().iter_errors(graph) for issue in _issues_of(error, graph))
    return list(found)


def _issues_of(error, graph) -> list[GraphIssue]:
    path = list(error.absolute_path)
    if error.validator == "additionalProperties":
        known = set(error.schema.get("properties", {}))
        return [
            _issue(graph, [*path, key], "Unknown field.")
            for key in sorted((key for key in error.instance if key not in known), key=str)
        ]
    if error.validator == "required":
        return [
            _issue(graph, [*path, name], "This field is required.")
            for name in error.validator_value
            if name not in error.instance
        ]
    return [_issue(graph, path, _message(error, path))]


def _message(error, path: list) -> str:
    keyword, value = error.validator, error.validator_value
    if keyword == "type":
        if not path:
            return "The graph must be an object with nodes and edges."
        names = [_TYPE_NAMES[name] for name in ([value] if isinstance(value, str) else value)]
        return f"Must be {' or '.join(names)}."
    if keyword == "pattern":
        return IDENTIFIER_MESSAGE
    if keyword == "maxLength":
        return f"At most {value} characters."
    if keyword == "maxItems":
        return f"At most {value} {path[-1]}."
    return error.message


def _issue(graph, path: list, message: str) -> GraphIssue:
    node = _owner(graph, path)
    if node is not None and path[0] == "nodes" and len(path) > 3 and path[2] in _NODE_RELATIVE:
        return GraphIssue(node, _field(path[2:]), message)
    return GraphIssue(node, _field(path) if path else "graph", message)


def _owner(graph, path: list) -> str | None:
    """The node a problem concerns: the node's own id, or an edge's source for its handle, if valid."""
    if len(path) < 3 or path[0] not in ("nodes", "edges"):
        return None
    item = graph[path[0]][path[1]]
    if path[0] == "nodes":
        return _valid_key(item.get("id"))
    return _valid_key(item.get("source")) if path[2] == "source_handle" else None


def _valid_key(value) -> str | None:
    return value if _key_validator().is_valid(value) else None


def _field(path: list) -> str:
    """``["nodes", 1, "id"]`` as ``nodes[1].id``; a top-level unknown field as ``graph.<name>``."""
    if len(path) == 1 and path[0] not in ("nodes", "edges"):
        return f"graph.{_short(path[0])}"
    text = str(path[0])
    for part in path[1:]:
        text += f"[{part}]" if isinstance(part, int) else f".{_short(part)}"
    return text


def _short(value) -> str:
    text = str(value)
    return text if len(text) <= 64 else f"{text[:61]}..."
