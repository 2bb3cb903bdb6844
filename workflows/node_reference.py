"""The node reference: one page on every node type, generated from the engine's registry.

``python manage.py node_reference`` writes it to ``docs/nodes.md`` (``--check``: only say whether
that file is current); the console renders the same entries at ``/docs/nodes/``. Each entry comes
from the node type's class: ``description`` (one line, in the table of contents), its docstring
(what it does; paragraphs that start with "On failure:" go to the failure section),
``config_schema`` (the config's fields), ``example_config``, ``outputs`` and ``effects``.

Only the types defined by the engine or by an installed app are documented: a node type that a
test registers for itself is not a part of the product.
"""

import inspect
import json
from dataclasses import dataclass

from django.apps import apps

from workflows.engine import RetryPolicy, get_node_type, node_type_names

#: Where ``node_reference`` writes the page, from the project's root.
REFERENCE_PATH = "docs/nodes.md"
FAILURE_PREFIX = "On failure:"


@dataclass(frozen=True)
class ConfigField:
    name: str
    kind: str
    required: bool


@dataclass(frozen=True)
class NodeDoc:
    """What the reference says about one node type."""

    type: str
    description: str
    paragraphs: tuple[str, ...]
    failure: tuple[str, ...]
    fields: tuple[ConfigField, ...]
    example: str | None
    outputs: str
    effects: bool

    @property
    def effects_text(self) -> str:
        return EFFECTS_TEXT if self.effects else NO_EFFECTS_TEXT


EFFECTS_TEXT = (
    "It acts outside the run (a request, a model or tool call). Before it executes, everything the run "
    "recorded before it is stored, and its outcome is stored before the run goes on: once it has succeeded it is "
    "never executed again, not even when the run resumes on another worker. Each retry acts again (another "
    "request, another call): make what it calls safe to repeat."
)
NO_EFFECTS_TEXT = (
    "It only computes. If a worker stops before its outcome is stored, it is simply computed again when the "
    "run resumes; a retry computes it again."
)


def _retry_defaults() -> str:
    policy = RetryPolicy()
    return (
        f"`max_attempts` {policy.max_attempts} (no retry), `backoff` `{policy.backoff}` from `initial_s` "
        f"{policy.initial_s:g} (times `multiplier` {policy.multiplier:g} each attempt) up to `max_s` "
        f"{policy.max_s:g}, `jitter` {'true' if policy.jitter else 'false'}"
    )


def error_policy_paragraphs() -> tuple[str, ...]:
    """What every node's ``error_policy`` means: the part of the reference common to all types."""
    return (
        "Every node may carry an `error_policy` beside its `config`: "
        '`{"timeout_s": 30, "retry": {"max_attempts": 3, "backoff": "exponential", "initial_s": 1, '
        '"max_s": 60, "jitter": true}, "on_failure": "fail"}`. Absent keys take the defaults.',
        "`timeout_s`: how long one attempt may take (default: the engine's `NODE_TIMEOUT_S`; null: no "
        "timeout). A node that runs longer is stopped and fails with a retryable timeout.",
        f"`retry`: how often a failing node is tried and how long apart (defaults: {_retry_defaults()}). "
        "Only a retryable failure is tried again: a timeout, a lost connection, a 429 or 5xx answer, any "
        "unexpected error. A failure that trying again will not fix (bad input, a 4xx answer, a template that "
        "does not render, an output too large) skips the remaining attempts. A `Retry-After` from the other "
        "side is honoured when it is longer than the delay.",
        "`on_failure`, once the attempts are spent: `fail` (the default) fails the run; `continue` gives the "
        "node's `default_output` plus `error` as its output and the run goes on; `skip` skips the nodes only "
        "it leads to; `branch` follows its outgoing edges whose `source_handle` is `error`, where "
        "`{{ <node>.error }}` holds the error.",
        "A node's outcome is recorded as a task of the run (`succeeded`, `failed`, `retrying`, `skipped`) with "
        "its attempt, output and error; the run's events (`node.started`, `node.retrying`, `node.succeeded`, "
        "`node.failed`) say the same as it happens. To try one node alone with sample inputs, without a run: "
        "`POST /api/v1/workflows/<id>/nodes/<node id>/try/`.",
    )


def documented_types() -> list[str]:
    """The node types of the product, by name: those the engine or an installed app defines."""
    names = []
    for name in node_type_names():
        module = type(get_node_type(name)).__module__
        if module.startswith("workflows.engine.") or apps.get_containing_app_config(module) is not None:
            names.append(name)
    return names


def node_docs() -> list[NodeDoc]:
    return [_node_doc(name) for name in documented_types()]


def _node_doc(name: str) -> NodeDoc:
    node_type = get_node_type(name)
    cls = type(node_type)
    docstring = inspect.cleandoc(cls.__doc__) if cls.__doc__ and "__doc__" in cls.__dict__ else ""
    # One line per paragraph, in Markdown's code spans (a docstring writes ``x``).
    paragraphs = [" ".join(part.split()).replace("``", "`") for part in docstring.split("\n\n") if part.strip()]
    failure = [_capitalized(p.removeprefix(FAILURE_PREFIX).strip()) for p in paragraphs if p.startswith(FAILURE_PREFIX)]
    paragraphs = [p for p in paragraphs if not p.startswith(FAILURE_PREFIX)] or [node_type.description]
    example = node_type.example_config
    return NodeDoc(
        type=name,
        description=node_type.description,
        paragraphs=tuple(paragraphs),
        failure=tuple(failure),
        fields=tuple(_fields(node_type.config_schema)),
        example=json.dumps({"id": name, "type": name, "config": example}, indent=2) if example is not None else None,
        outputs=_outputs(node_type, example),
        effects=node_type.effects,
    )


def _capitalized(text: str) -> str:
    return text[:1].upper() + text[1:]


def _fields(schema: dict) -> list[ConfigField]:
    required = set(schema.get("required", ()))
    return [ConfigField(name, _kind(spec), name in required) for name, spec in (schema.get("properties") or {}).items()]


def _kind(spec: dict) -> str:
    if "enum" in spec:
        return "one of " + ", ".join(f"`{json.dumps(value)}`" for value in spec["enum"])
    kind = spec.get("type")
    if kind is None:
        return "any JSON value"
    kinds = kind if isinstance(kind, list) else [kind]
    text = " or ".join(kinds)
    if "array" in kinds and isinstance(spec.get("items"), dict) and spec["items"].get("type"):
        text = text.replace("array", f"array of {spec['items']['type']}")
    return text


def _outputs(node_type, example: dict | None) -> str:
    if node_type.outputs is not None:
        return ", ".join(f"`{name}`" for name in sorted(node_type.outputs)) or "none"
    if example is not None:
        fields = node_type.declared_outputs(example)
        if fields is not None:
            listed = ", ".join(f"`{name}`" for name in sorted(fields)) or "none"
            return f"Depend on the config (for the example: {listed})."
    return "Not known before the run: they depend on what the node returns."


def reference_markdown() -> str:
    """The reference page, as ``docs/nodes.md`` holds it."""
    docs = node_docs()
    lines = [
        "# Node reference",
        "",
        "<!-- Generated by `python manage.py node_reference` from the node registry: do not edit by hand. -->",
        "",
        "A workflow is a graph of nodes (DSL v1). Each node has an `id`, a `type` (one of those below), a "
        "`config` checked against its type's schema, and an optional `error_policy`. Its templates "
        "(`{{ start.city }}`, `{{ summary.text }}`) read the run's inputs and the outputs of its ancestors.",
        "",
        "| type | what it does | effects |",
        "| --- | --- | --- |",
        *(f"| [`{doc.type}`](#{doc.type}) | {doc.description} | {'yes' if doc.effects else 'no'} |" for doc in docs),
        "",
        "## Timeouts, retries and failures",
        "",
    ]
    for paragraph in error_policy_paragraphs():
        lines += [paragraph, ""]
    for doc in docs:
        lines += [f"## {doc.type}", ""]
        for paragraph in doc.paragraphs:
            lines += [paragraph, ""]
        lines += ["### Config", ""]
        if doc.fields:
            lines += ["| field | type | required |", "| --- | --- | --- |"]
            lines += [f"| `{f.name}` | {f.kind} | {'yes' if f.required else 'no'} |" for f in doc.fields]
        else:
            lines.append("No config.")
        lines.append("")
        if doc.example is not None:
            lines += ["Example:", "", "```json", doc.example, "```", ""]
        lines += ["### Outputs", "", doc.outputs, ""]
        lines += ["### Retry and failure", "", f"Effects: {'yes' if doc.effects else 'no'}. {doc.effects_text}", ""]
        for paragraph in doc.failure:
            lines += [paragraph, ""]
    return "\n".join(lines).rstrip("\n") + "\n"
