"""Variables and templates: sandboxed Jinja2 over the outputs a node may see.

The scope of a node is ``{"start": <run inputs>, <ancestor id>: <its outputs>, "sys": {...}}``
(see :func:`workflows.engine.executor` for how it is built). Undefined names are errors, never
empty strings. A string that is one expression and nothing else (``"{{ start.items }}"``)
renders to the value itself (a list stays a list); any other string renders to text.

Every render spends from a budget (:mod:`.template_budget`): loop iterations and calls, what it
writes and builds, the size of one operation, and its node's deadline. Nodes render with
:func:`arender_text` / :func:`arender_value`: a render first runs on the event loop for at most
``INLINE_SLICE_S`` (nearly all do: they take microseconds), and one that takes longer is
abandoned and rendered again in a thread, so that a heavy template never holds the loop that
every run of the worker shares. Rendering again is safe: a template cannot change its inputs.
"""

import asyncio
import functools
import re
import weakref
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache, wraps
from typing import Any

from jinja2 import StrictUndefined, TemplateError, Undefined, meta, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .template_budget import (
    INTERNAL_FILTERS,
    BoundedTree,
    Budget,
    RenderBudgetExceeded,
    SliceSpent,
    TemplateRenderError,
    bounded_filter,
    bounded_test,
    charge_result,
    charged,
    charged_loop_call,
    check_binop,
    check_call,
    check_format,
    current,
    weight,
)

__all__ = [
    "RenderBudgetExceeded",
    "TemplateRenderError",
    "arender_text",
    "arender_value",
    "parse_error",
    "references",
    "render_text",
    "render_value",
    "strings_in",
]

_SINGLE_EXPRESSION = re.compile(r"^\s*\{\{(?P<expr>(?:(?!\{\{|\}\}).)*)\}\}\s*$", re.DOTALL)
#: What a render may take on the event loop before it moves to a thread.
INLINE_SLICE_S = 0.002
#: Renders that outlast their slice run here, one per run at a time (see ``_lane``).
RENDER_THREADS = 4


def _finalize(value: Any) -> Any:
    """Before ``{{ value }}`` becomes text: its text must fit in the output budget."""
    current().fits(value)
    return value


class _Environment(ImmutableSandboxedEnvironment):
    """The sandbox, charging the render's budget for every loop, call, filter and costly operator.

    It also reads ``a.b`` of a dict as its key first: ``{{ start.items }}`` is the input, not ``dict.items``.
    """

    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self, **options):
        super().__init__(finalize=_finalize, **options)
        self.filters = {name: bounded_filter(name, function) for name, function in self.filters.items()}
        self.filters.update(INTERNAL_FILTERS)
        self.tests = {name: bounded_test(function) for name, function in self.tests.items()}

    def getattr(self, obj, attribute):
        if isinstance(obj, dict) and isinstance(attribute, str) and attribute in obj:
            return obj[attribute]
        return super().getattr(obj, attribute)

    def call_binop(self, context, operator, left, right):
        check_binop(current(), operator, left, right)
        return super().call_binop(context, operator, left, right)

    def call(self, context, function, /, *args, **kwargs):
        budget = current()
        budget.step()
        args = charged_loop_call(function, check_call(budget, function, args, kwargs), budget)
        result = super().call(context, function, *args, **kwargs)
        charge_result(budget, result, (function, getattr(function, "__self__", None), *args, *kwargs.values()))
        return result

    def wrap_str_format(self, value):
        formatter = super().wrap_str_format(value)
        if formatter is None:
            return None
        template, is_map = value.__self__, value.__name__ == "format_map"

        @wraps(formatter)
        def checked(*args, **kwargs):
            if is_map and args and isinstance(args[0], dict):
                check_format(current(), template, (), args[0])
            else:
                check_format(current(), template, args, kwargs)
            return formatter(*args, **kwargs)

        return checked

    def compile(self, source, name=None, filename=None, raw=False, defer_init=False):
        """Compile with loops, ``~``, slices and set blocks rewritten to charge the budget."""
        tree = self.parse(source, name, filename) if isinstance(source, str) else source
        return super().compile(BoundedTree(self).visit(tree), name, filename, raw, defer_init)


environment = _Environment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)


@lru_cache(maxsize=2048)
def _compiled_template(source: str):
    return environment.from_string(source)


@lru_cache(maxsize=2048)
def _compiled_expression(source: str):
    return environment.compile_expression(source, undefined_to_none=False)


def _template_errors(function: Callable) -> Callable:
    """Jinja's errors, and recursion past Python's limit, as :class:`TemplateRenderError`."""

    @wraps(function)
    def translated(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except TemplateError as exc:
            raise TemplateRenderError(f"Template error: {exc}") from exc
        except RecursionError:
            raise TemplateRenderError("Template error: macros or recursive loops nest too deep.") from None

    return translated


def render_text(source: str, scope: dict, *, budget: Budget | None = None) -> str:
    """Render ``source`` as text, within ``budget`` (the operator's limits and no deadline if None)."""
    budget = budget or Budget()
    with charged(budget):
        return _text(source, scope, budget)


def render_value(value: Any, scope: dict, *, budget: Budget | None = None) -> Any:
    """Render every string inside ``value`` (dicts and lists are walked); a lone expression keeps its type.

    The whole value is one render: its strings share ``budget``.
    """
    budget = budget or Budget()
    with charged(budget):
        return _value(value, scope, budget)


@_template_errors
def _text(source: str, scope: dict, budget: Budget) -> str:
    parts: list[str] = []
    written, limit = 0, budget.max_output - budget.output
    for chunk in _compiled_template(source).generate(scope):
        written += len(chunk)
        if written > limit:
            budget.produce(written)  # raises
        parts.append(chunk)
    budget.produce(written)
    return "".join(parts)


@_template_errors
def _expression(source: str, scope: dict, budget: Budget) -> Any:
    result = _compiled_expression(source)(**scope)
    if isinstance(result, Undefined):
        result._fail_with_undefined_error()
    budget.produce(weight(result, budget.max_output - budget.output, budget))
    return result


def _value(value: Any, scope: dict, budget: Budget) -> Any:
    if isinstance(value, str):
        if "{{" not in value and "{%" not in value:
            return value
        match = _SINGLE_EXPRESSION.match(value)
        if match:
            return _expression(match.group("expr").strip(), scope, budget)
        return _text(value, scope, budget)
    if isinstance(value, dict):
        return {key: _value(item, scope, budget) for key, item in value.items()}
    if isinstance(value, list):
        return [_value(item, scope, budget) for item in value]
    return value


async def arender_text(source: str, scope: dict, *, deadline: float | None = None, lane: str = "") -> str:
    """:func:`render_text` without holding the event loop; fails as a timeout past ``deadline`` (monotonic).

    ``lane`` (the run's id) keeps one run's slow renders to one thread at a time.
    """
    return await _off_loop(render_text, source, scope, deadline=deadline, lane=lane)


async def arender_value(value: Any, scope: dict, *, deadline: float | None = None, lane: str = "") -> Any:
    """:func:`render_value` without holding the event loop (see :func:`arender_text`)."""
    return await _off_loop(render_value, value, scope, deadline=deadline, lane=lane)


_threads = ThreadPoolExecutor(max_workers=RENDER_THREADS, thread_name_prefix="weft-render")
_lanes: weakref.WeakValueDictionary[tuple[int, str], asyncio.Semaphore] = weakref.WeakValueDictionary()


async def _off_loop(render: Callable, value: Any, scope: dict, *, deadline: float | None, lane: str) -> Any:
    try:
        return render(value, scope, budget=Budget(deadline=deadline, slice_s=INLINE_SLICE_S))
    except SliceSpent:
        pass
    async with _lane(lane):
        budget = Budget(deadline=deadline, yields=True)
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(_threads, functools.partial(render, value, scope, budget=budget))
        except asyncio.CancelledError:
            budget.stop()  # the thread's render ends at its next step
            raise


def _lane(key: str) -> asyncio.Semaphore:
    """The run's turn at the render threads: a run rendering many heavy templates at once holds one thread.

    Semaphores live while a render holds or awaits them (weak values), per loop (they bind to one).
    """
    loop_key = (id(asyncio.get_running_loop()), key)
    lane = _lanes.get(loop_key)
    if lane is None:
        lane = _lanes[loop_key] = asyncio.Semaphore(1)
    return lane


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
    Sources that do not parse give nothing. Each source is parsed once per process (every run of
    a workflow asks again for the same templates).
    """
    if "{{" not in source and "{%" not in source:
        return iter(())
    return iter(_references(source))


@lru_cache(maxsize=2048)
def _references(source: str) -> tuple[tuple[str, str | None], ...]:
    return tuple(_parsed_references(source))


def _parsed_references(source: str) -> Iterator[tuple[str, str | None]]:
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
