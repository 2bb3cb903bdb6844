"""Running a tool: the approval rule, argument checking, HTTP tools through the guard, built-ins.

Only an **approved** tool that is the workflow owner's own or public may run. The rule is
checked when a tool node or an agent is about to call the tool, every time (:func:`tool_runnable_get`):
a tool rejected after a workflow was published fails the node with :class:`ToolNotRunnable`, which
is not retried. :func:`workflow_tools_issues` checks the same rule ahead of time, for saving or
publishing a graph.

Arguments are an object validated against the tool's ``parameters`` (JSON Schema, draft 2020-12).

- An **HTTP** tool receives them as the JSON body of a ``POST`` to its ``endpoint`` (``config``:
  ``method`` POST/PUT/PATCH, or GET to send them as the query; ``timeout_s``), with its
  ``secret_headers`` (encrypted, write-only: credentials), through the outbound guard, like every
  outbound call. Its answer is its JSON (or its text); 408/429/5xx are retryable, other 4xx are not.
- A **built-in** tool is a Python function from :data:`BUILTIN_TOOLS`, named by ``config.builtin``
  (default: the tool's name): ``echo``, ``current_time``, ``calculator`` (arithmetic read by a
  parser of its own: no ``eval``).
"""

import ast
import asyncio
import json
import math
import operator
import re
import uuid
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.db.models import Q
from django.utils import timezone
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from workflows.engine import (
    GraphIssue,
    NonRetryableError,
    RetryableError,
    guarded_async_client,
    outbound_errors,
    outbound_policy,
    parse_retry_after,
    read_limited,
)

from .models import Agent, Tool

#: An HTTP tool's answer is cut to this size: it goes back to a model, or into a run's output.
TOOL_MAX_BYTES = 1024 * 1024
TOOL_BODY_METHODS = ("POST", "PUT", "PATCH")
SHOWN_ERROR_CHARS = 300


class ToolNotRunnable(NonRetryableError):
    """The tool does not exist for this owner, or is not approved (pending or rejected)."""


class ToolArgumentsInvalid(NonRetryableError):
    """The arguments do not match the tool's ``parameters`` schema (or what a built-in needs)."""


class ToolFailed(NonRetryableError):
    """The tool ran and refused or failed in a way another try will not fix."""


class ToolUnavailable(RetryableError):
    """The tool's endpoint is overloaded or failing for now (408, 429, 5xx)."""


@dataclass(frozen=True)
class ToolSpec:
    """What running a tool needs, read from its row once (so that async code does not touch the ORM)."""

    id: str
    name: str
    description: str
    kind: str
    endpoint: str
    parameters: dict
    config: dict = field(default_factory=dict)
    #: Credentials among them: kept out of ``repr`` (which an error or a log could show).
    headers: dict = field(default_factory=dict, repr=False)

    @classmethod
    def from_tool(cls, tool: Tool) -> "ToolSpec":
        return cls(
            id=str(tool.pk),
            name=tool.name,
            description=tool.description,
            kind=tool.kind,
            endpoint=tool.endpoint,
            parameters=tool.parameters or {"type": "object", "properties": {}},
            config=tool.config or {},
            headers=tool.secret_headers or {},
        )


# --- Who may run what ---------------------------------------------------------------------------


def tools_runnable_for_owner(*, owner_id):
    """Tools a workflow or agent of ``owner_id`` may run: approved, and theirs or public."""
    return Tool.objects.filter(Q(owner_id=owner_id) | Q(visibility=Tool.Visibility.PUBLIC), status=Tool.Status.APPROVED)


def _not_runnable_reason(tool: Tool | None, tool_id: str) -> str:
    if tool is None:
        return f"No tool {tool_id!r} is available to this workflow's owner."
    if tool.status == Tool.Status.REJECTED:
        reason = f" ({tool.review_reason})" if tool.review_reason else ""
        return f"Tool {tool.name!r} was rejected{reason}: only approved tools can run."
    return f"Tool {tool.name!r} is {tool.get_status_display().lower()}: only approved tools can run."


def tool_runnable_get(*, tool_id, owner_id) -> ToolSpec:
    """The tool if ``owner_id``'s workflows may run it now, else :class:`ToolNotRunnable` saying why."""
    try:
        key = uuid.UUID(str(tool_id))
    except ValueError:
        raise ToolNotRunnable(f"{tool_id!r} is not a tool id.") from None
    tool = tools_runnable_for_owner(owner_id=owner_id).filter(pk=key).first()
    if tool is not None:
        return ToolSpec.from_tool(tool)
    visible = Tool.objects.filter(Q(owner_id=owner_id) | Q(visibility=Tool.Visibility.PUBLIC), pk=key).first()
    raise ToolNotRunnable(_not_runnable_reason(visible, str(tool_id)))


def _literal_ids(graph: dict, node_type: str, field_name: str) -> list[tuple[str, uuid.UUID]]:
    found = []
    for node in graph.get("nodes") or []:
        if not isinstance(node, dict) or node.get("type") != node_type:
            continue
        value = (node.get("config") or {}).get(field_name)
        try:
            found.append((str(node.get("id")), uuid.UUID(str(value))))
        except ValueError:
            continue  # a template: checked when the node runs
    return found


def workflow_tools_issues(*, graph: dict, owner) -> list[GraphIssue]:
    """Tool and agent nodes whose tool or agent ``owner``'s workflow may not use, as graph issues.

    For saving and publishing (the engine's ``validate_graph`` sees no database); every run
    checks again, since a tool can be rejected after the graph was published.
    """
    issues: list[GraphIssue] = []
    tool_refs = _literal_ids(graph, "tool", "tool")
    if tool_refs:
        runnable = set(
            tools_runnable_for_owner(owner_id=owner.pk)
            .filter(pk__in=[key for _, key in tool_refs])
            .values_list("pk", flat=True)
        )
        for node_id, key in tool_refs:
            if key not in runnable:
                visible = Tool.objects.filter(Q(owner=owner) | Q(visibility=Tool.Visibility.PUBLIC), pk=key).first()
                issues.append(GraphIssue(node_id, "config.tool", _not_runnable_reason(visible, str(key))))
    agent_refs = _literal_ids(graph, "agent", "agent")
    if agent_refs:
        owned = set(
            Agent.objects.filter(owner=owner, pk__in=[key for _, key in agent_refs]).values_list("pk", flat=True)
        )
        for node_id, key in agent_refs:
            if key not in owned:
                issues.append(GraphIssue(node_id, "config.agent", f"No agent {str(key)!r} among the owner's agents."))
    return issues


# --- Arguments ----------------------------------------------------------------------------------


def tool_arguments_check(*, spec: ToolSpec, arguments) -> dict:
    """``arguments`` if they are an object matching the tool's ``parameters``, else :class:`ToolArgumentsInvalid`."""
    if not isinstance(arguments, dict):
        raise ToolArgumentsInvalid(f"The arguments of tool {spec.name!r} must be an object.")
    try:
        validator = Draft202012Validator(spec.parameters)
        errors = sorted(validator.iter_errors(arguments), key=lambda error: list(error.absolute_path))
    except SchemaError as exc:
        raise ToolFailed(f"Tool {spec.name!r} has an invalid parameters schema: {exc.message}") from exc
    if errors:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error.absolute_path) or '(arguments)'}: {error.message}"
            for error in errors[:5]
        )
        raise ToolArgumentsInvalid(f"Bad arguments for tool {spec.name!r}: {problems}")
    return arguments


def tool_arguments_parse(*, spec: ToolSpec, raw: str) -> dict:
    """Arguments as a model sends them (a JSON string), parsed and checked."""
    try:
        arguments = json.loads(raw or "{}")
    except ValueError as exc:
        raise ToolArgumentsInvalid(f"The arguments of tool {spec.name!r} are not valid JSON: {exc}") from exc
    return tool_arguments_check(spec=spec, arguments=arguments)


# --- Built-in tools -----------------------------------------------------------------------------


@dataclass(frozen=True)
class BuiltinTool:
    function: Callable[[dict], Any]
    description: str
    #: The parameters to register the tool with.
    parameters: dict


def _echo(arguments: dict) -> Any:
    return arguments


def _current_time(arguments: dict) -> dict:
    name = arguments.get("timezone") or "UTC"
    try:
        zone = zoneinfo.ZoneInfo(str(name))
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise ToolArgumentsInvalid(f"Unknown time zone {name!r}.") from exc
    now = timezone.now().astimezone(zone)
    return {"iso": now.isoformat(), "timezone": str(name), "weekday": now.strftime("%A")}


CALCULATOR_MAX_LENGTH = 500
CALCULATOR_MAX_EXPONENT = 100
CALCULATOR_MAX_MAGNITUDE = 1e300

_BINARY = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_FUNCTIONS = {"sqrt": math.sqrt, "abs": abs, "round": round, "min": min, "max": max}


def calculate(expression: str) -> int | float:
    """The value of an arithmetic expression: numbers, + - * / // % **, parentheses, a few functions.

    The expression is parsed into a syntax tree and only those node kinds are evaluated, by this
    function; anything else (names, attributes, calls to other functions) is refused.
    """
    if len(expression) > CALCULATOR_MAX_LENGTH:
        raise ToolArgumentsInvalid(f"The expression is longer than {CALCULATOR_MAX_LENGTH} characters.")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except (SyntaxError, ValueError) as exc:
        raise ToolArgumentsInvalid(f"Not an arithmetic expression: {expression!r}.") from exc
    try:
        return _evaluate(tree.body)
    except ZeroDivisionError as exc:
        raise ToolFailed("Division by zero.") from exc
    except (OverflowError, ValueError, TypeError) as exc:
        raise ToolFailed(f"Cannot compute this: {exc}.") from exc


def _evaluate(node: ast.AST) -> int | float:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_evaluate(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > CALCULATOR_MAX_EXPONENT:
            raise ToolFailed(f"Exponents above {CALCULATOR_MAX_EXPONENT} are not computed.")
        return _bounded(_BINARY[type(node.op)](left, right))
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in _FUNCTIONS
        and not node.keywords
        and node.args
    ):
        return _bounded(_FUNCTIONS[node.func.id](*(_evaluate(arg) for arg in node.args)))
    raise ToolArgumentsInvalid(f"Only numbers, + - * / // % ** and {', '.join(_FUNCTIONS)} are allowed.")


def _bounded(value):
    if isinstance(value, complex) or abs(value) > CALCULATOR_MAX_MAGNITUDE:
        raise ToolFailed("The result is out of range.")
    return value


def _calculator(arguments: dict) -> dict:
    expression = arguments.get("expression")
    if not isinstance(expression, str):
        raise ToolArgumentsInvalid("calculator needs an 'expression' string.")
    return {"expression": expression, "value": calculate(expression)}


BUILTIN_TOOLS: dict[str, BuiltinTool] = {
    "echo": BuiltinTool(
        _echo, "Answers with the arguments it was given.", {"type": "object", "additionalProperties": True}
    ),
    "current_time": BuiltinTool(
        _current_time,
        "The current date and time in a time zone (IANA name, default UTC).",
        {"type": "object", "properties": {"timezone": {"type": "string"}}, "additionalProperties": False},
    ),
    "calculator": BuiltinTool(
        _calculator,
        "Evaluates an arithmetic expression, e.g. '(2 + 3) * 4 ** 2'.",
        {
            "type": "object",
            "required": ["expression"],
            "properties": {"expression": {"type": "string", "maxLength": CALCULATOR_MAX_LENGTH}},
            "additionalProperties": False,
        },
    ),
}


# --- Running ------------------------------------------------------------------------------------


async def tool_execute(*, spec: ToolSpec, arguments: dict, timeout_s: float | None = None) -> Any:
    """Run an approved tool with checked arguments; its JSON-able result.

    Raises :class:`ToolFailed` / :class:`ToolArgumentsInvalid` (not retryable), :class:`ToolUnavailable`
    or the guard's errors (``OutboundBlocked`` not retryable; timeouts retryable).
    """
    arguments = tool_arguments_check(spec=spec, arguments=arguments)
    if spec.kind == Tool.Kind.BUILTIN:
        name = spec.config.get("builtin") or spec.name
        builtin = BUILTIN_TOOLS.get(name)
        if builtin is None:
            raise ToolFailed(f"There is no built-in tool {name!r}; built-ins are {', '.join(sorted(BUILTIN_TOOLS))}.")
        return builtin.function(arguments)
    return await _http_tool_call(spec=spec, arguments=arguments, timeout_s=timeout_s)


async def _http_tool_call(*, spec: ToolSpec, arguments: dict, timeout_s: float | None) -> Any:
    policy = outbound_policy()
    configured = spec.config.get("timeout_s")
    limit = min(float(configured), policy.timeout_s) if isinstance(configured, int | float) else policy.timeout_s
    if timeout_s is not None:
        limit = min(limit, max(timeout_s, 0.001))
    max_bytes = min(TOOL_MAX_BYTES, policy.max_bytes)
    method = str(spec.config.get("method", "POST")).upper()
    headers = {str(k): str(v) for k, v in spec.headers.items()}
    request: dict = {"headers": headers}
    if method in TOOL_BODY_METHODS:
        request["json"] = arguments
    elif method == "GET":
        request["params"] = {
            name: value if isinstance(value, str) else json.dumps(value) for name, value in arguments.items()
        }
    else:
        raise ToolFailed(f"Tool {spec.name!r} has an unsupported method {method!r}.")
    async with guarded_async_client(timeout_s=limit, follow_redirects=False, policy=policy) as client:
        with outbound_errors():
            async with asyncio.timeout(limit):
                async with client.stream(method, spec.endpoint, **request) as response:
                    raw = await read_limited(response, max_bytes=max_bytes)
    text = raw.decode(response.encoding or "utf-8", "replace")
    status = response.status_code
    if status >= 400:
        message = f"Tool {spec.name!r} answered {status}: {text[:SHOWN_ERROR_CHARS]}"
        if status in (408, 429) or status >= 500:
            raise ToolUnavailable(message, retry_after=parse_retry_after(response.headers.get("retry-after")))
        raise ToolFailed(message)
    try:
        return json.loads(text)
    except ValueError:
        return text


def openai_function_name(name: str, taken: set[str]) -> str:
    """A function name a model API accepts (``[a-zA-Z0-9_-]{1,64}``), unique among ``taken``."""
    base = re.sub(r"[^a-zA-Z0-9_-]", "_", name)[:64] or "tool"
    candidate, n = base, 1
    while candidate in taken:
        n += 1
        suffix = f"_{n}"
        candidate = base[: 64 - len(suffix)] + suffix
    return candidate


def tool_definition(spec: ToolSpec, *, function_name: str) -> dict:
    """The tool in OpenAI's ``tools`` format."""
    return {
        "type": "function",
        "function": {
            "name": function_name,
            "description": (spec.description or spec.name)[:1024],
            "parameters": spec.parameters,
        },
    }
