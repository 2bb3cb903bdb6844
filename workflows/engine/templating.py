"""Variables and templates: sandboxed Jinja2 over the outputs a node may see.

The scope of a node is ``{"start": <run inputs>, <ancestor id>: <its outputs>, "sys": {...}}``
(see :func:`workflows.engine.executor` for how it is built). Undefined names are errors, never
empty strings. A string that is one expression and nothing else (``"{{ start.items }}"``)
renders to the value itself (a list stays a list); any other string renders to text.
"""

import re
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, TemplateError, Undefined, meta, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .errors import NonRetryableError

_SINGLE_EXPRESSION = re.compile(r"^\s*\{\{(?P<expr>(?:(?!\{\{|\}\}).)*)\}\}\s*$", re.DOTALL)


class _Environment(ImmutableSandboxedEnvironment):
    """Reads ``a.b`` of a dict as its key first: ``{{ start.items }}`` is the input, not ``dict.items``."""

    def getattr(self, obj, attribute):
        if isinstance(obj, dict) and isinstance(attribute, str) and attribute in obj:
            return obj[attribute]
        return super().getattr(obj, attribute)


environment = _Environment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)


class TemplateRenderError(NonRetryableError):
    """A template that does not parse, reads an undefined variable, or does something unsafe."""


@lru_cache(maxsize=2048)
def _compiled_template(source: str):
    return environment.from_string(source)


@lru_cache(maxsize=2048)
def _compiled_expression(source: str):
    return environment.compile_expression(source, undefined_to_none=False)


def render_text(source: str, scope: dict) -> str:
    """Render ``source`` as text."""
    try:
        return _compiled_template(source).render(scope)
    except TemplateError as exc:
        raise TemplateRenderError(f"Template error: {exc}") from exc


def render_value(value: Any, scope: dict) -> Any:
    """Render every string inside ``value`` (dicts and lists are walked); a lone expression keeps its type."""
    if isinstance(value, str):
        if "{{" not in value and "{%" not in value:
            return value
        match = _SINGLE_EXPRESSION.match(value)
        if match:
            try:
                result = _compiled_expression(match.group("expr").strip())(**scope)
                if isinstance(result, Undefined):
                    result._fail_with_undefined_error()
            except TemplateError as exc:
                raise TemplateRenderError(f"Template error: {exc}") from exc
            return result
        return render_text(value, scope)
    if isinstance(value, dict):
        return {key: render_value(item, scope) for key, item in value.items()}
    if isinstance(value, list):
        return [render_value(item, scope) for item in value]
    return value


def parse_error(source: str) -> str | None:
    """The syntax error of ``source`` as a message, or None when it parses."""
    try:
        environment.parse(source)
    except TemplateError as exc:
        return str(exc)
    return None


def references(source: str) -> Iterator[tuple[str, str | None]]:
    """Every ``(name, attribute)`` that ``source`` reads at top level: ``{{ a.b }}`` gives ``("a", "b")``.

    A name read without an attribute gives ``(name, None)``. Names bound inside the template
    (``{% for x in ... %}``, ``{% set %}``, ``loop``) and Jinja's globals are not references.
    Sources that do not parse give nothing.
    """
    if "{{" not in source and "{%" not in source:
        return
    try:
        tree = environment.parse(source)
    except TemplateError:
        return
    free = meta.find_undeclared_variables(tree) - set(environment.globals)
    attribute_of: dict[int, str] = {}
    for getter in tree.find_all((nodes.Getattr, nodes.Getitem)):
        if isinstance(getter.node, nodes.Name):
            if isinstance(getter, nodes.Getattr):
                attribute_of[id(getter.node)] = getter.attr
            elif isinstance(getter.arg, nodes.Const) and isinstance(getter.arg.value, str):
                attribute_of[id(getter.node)] = getter.arg.value
    for name in tree.find_all(nodes.Name):
        if name.ctx == "load" and name.name in free:
            yield name.name, attribute_of.get(id(name))


def strings_in(value: Any, path: str) -> Iterator[tuple[str, str]]:
    """Every string inside ``value`` with its dotted path (``config.headers.Authorization``)."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from strings_in(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from strings_in(item, f"{path}[{index}]")
