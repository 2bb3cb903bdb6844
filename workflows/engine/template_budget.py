"""What one render of a template may spend, and the sandbox hooks that charge it.

A template is user code: a loop, a macro or an operator can ask for unbounded CPU or memory.
Each render gets a :class:`Budget` (reached from the hooks through a context variable) with
three operator settings (``config.conf.weft_settings``, from the environment):

- ``TEMPLATE_MAX_ITERATIONS`` (200,000): steps, i.e. loop iterations, calls (functions, methods,
  macros) and filter or test applications. A step costs from a fraction of a microsecond (an
  empty loop) to several (a macro call), so this bounds the CPU of a render to about a second,
  whatever its node's timeout.
- ``TEMPLATE_MAX_OUTPUT_CHARS`` (16,000,000): characters (and items) the render writes or builds:
  its text, a lone expression's value, and every string, list or number its operators, calls,
  filters, slices and ``{% set %}`` blocks make. Above the 10 MiB an http_request may read, so
  that a response can pass through a template.
- ``TEMPLATE_MAX_OPERAND`` (1,000,000): what one amplifying operation may make: ``'x' * n``,
  ``[x] * n``, ``a ** b`` and ``a * b`` on integers (in bits), a width or count given to
  ``center``, ``indent``, ``format``, ``%``, ``zfill``, ``batch``, ``lipsum``..., the growth a
  ``replace`` or ``join`` adds. It is checked before the operation, so nothing is allocated.

A string, list or number is sized before Python turns it into text (output, ``~``, string
filters, ``%``, ``format``): a list holding a million references to one large string is refused
before ``str()`` would build it. Every step also checks the render's deadline (the node's
timeout) and whether the render was stopped (its node cancelled), so a render in a thread ends
within a step of either.
"""

import math
import re
import string
import time
from collections.abc import Callable, Iterable, Iterator, Sized
from contextlib import contextmanager
from contextvars import ContextVar
from functools import wraps
from inspect import signature
from typing import Any

from jinja2 import Undefined, nodes, pass_context
from jinja2.runtime import LoopContext, markup_join, str_join
from jinja2.utils import Namespace, generate_lorem_ipsum
from jinja2.visitor import NodeTransformer

from config.conf import weft_settings

from .errors import NodeTimeout, NonRetryableError

#: A render in a thread lets the event loop's thread take the GIL this often.
YIELD_EVERY_S = 0.0005
#: How many items a size estimate walks between two looks at the clock.
WALK_CHECK_EVERY = 4096


class TemplateRenderError(NonRetryableError):
    """A template that does not parse, reads an undefined variable, or does something unsafe."""


class RenderBudgetExceeded(TemplateRenderError):
    """A render went past one of its budgets; the message names the setting and its value."""


class SliceSpent(Exception):
    """The render outlasted the slice it may take on the event loop: render it again in a thread."""


class RenderStopped(Exception):
    """The render's node was cancelled or timed out while the render ran in a thread."""


class Budget:
    """One render's allowance and what it has spent. Not shared between threads while it runs."""

    def __init__(self, *, deadline: float | None = None, slice_s: float | None = None, yields: bool = False):
        self.max_iterations = int(weft_settings.TEMPLATE_MAX_ITERATIONS)
        self.max_output = int(weft_settings.TEMPLATE_MAX_OUTPUT_CHARS)
        self.max_operand = int(weft_settings.TEMPLATE_MAX_OPERAND)
        #: ``time.monotonic()`` past which the render fails as its node's timeout.
        self.deadline = deadline
        now = time.monotonic()
        self.slice_end = None if slice_s is None else now + slice_s
        self.yield_at = now + YIELD_EVERY_S if yields else None
        self.steps = 0
        self.output = 0
        self.stopped = False

    def step(self) -> None:
        self.steps += 1
        if self.steps > self.max_iterations:
            raise RenderBudgetExceeded(
                f"Template exceeded the loop iteration budget (WEFT_TEMPLATE_MAX_ITERATIONS = {self.max_iterations}):"
                " it took more loop iterations, calls and filters than that."
            )
        self.tick()

    def tick(self) -> None:
        """Stop if the render was stopped, its slice is spent or its deadline passed; yield the GIL now and then."""
        if self.stopped:
            raise RenderStopped
        now = time.monotonic()
        if self.slice_end is not None and now > self.slice_end:
            raise SliceSpent
        if self.deadline is not None and now > self.deadline:
            raise NodeTimeout("Timed out while rendering a template (the node's timeout_s).")
        if self.yield_at is not None and now > self.yield_at:
            time.sleep(0)  # releases the GIL: the event loop's thread gets it without waiting out a switch interval
            self.yield_at = time.monotonic() + YIELD_EVERY_S

    def produce(self, size: int) -> None:
        """Charge ``size`` characters (or items) written or built."""
        self.output += size
        if self.output > self.max_output:
            raise RenderBudgetExceeded(
                f"Template exceeded the output budget (WEFT_TEMPLATE_MAX_OUTPUT_CHARS = {self.max_output}):"
                " it wrote or built more characters than that."
            )

    def fits(self, value: Any) -> None:
        """Refuse before ``str(value)`` if its text would not fit in what is left of the output budget."""
        left = self.max_output - self.output
        size = len(value) if isinstance(value, str) else weight(value, left, self)
        if size > left:
            raise RenderBudgetExceeded(
                f"Template exceeded the output budget (WEFT_TEMPLATE_MAX_OUTPUT_CHARS = {self.max_output}):"
                f" a value's text would take more than the {max(left, 0)} characters left."
            )

    def operand(self, size: float, what: str, unit: str = "characters or items") -> None:
        """Refuse an operation that would make more than the operand budget: ``what`` would make ``size`` ``unit``."""
        if size > self.max_operand:
            raise RenderBudgetExceeded(
                f"Template exceeded the operand budget (WEFT_TEMPLATE_MAX_OPERAND = {self.max_operand}):"
                f" {what} would make {int(size)} {unit}."
            )

    def stop(self) -> None:
        """Called from the event loop: the thread rendering stops at its next step."""
        self.stopped = True


_current: ContextVar[Budget | None] = ContextVar("weft_template_budget", default=None)


def current() -> Budget:
    """The budget of the render under way; a fresh one outside a render (Jinja folding constants)."""
    return _current.get() or Budget()


@contextmanager
def charged(budget: Budget) -> Iterator[Budget]:
    """``with charged(budget):`` the hooks of the renders inside charge ``budget``."""
    token = _current.set(budget)
    try:
        yield budget
    finally:
        _current.reset(token)


# --- Sizes --------------------------------------------------------------------------------------


def weight(value: Any, limit: int, budget: Budget | None = None) -> int:
    """About how many characters ``str(value)`` takes (strings, numbers, nested lists and dicts).

    Counting stops once past ``limit``; a reference counts as often as it occurs, which is what
    ``str()`` would write. A long walk looks at the budget's clock now and then.
    """
    total = 0
    pending = [value]
    walked = 0
    while pending:
        item = pending.pop()
        if isinstance(item, str | bytes):
            total += len(item)
        elif isinstance(item, int):
            total += item.bit_length() // 3 + 1
        elif isinstance(item, dict):
            total += 2 + 4 * len(item)
            if total <= limit:
                pending.extend(item.keys())
                pending.extend(item.values())
        elif isinstance(item, list | tuple | set | frozenset):
            total += 2 + 2 * len(item)
            if total <= limit:
                pending.extend(item)
        elif isinstance(item, Namespace):
            pending.append(vars(item))
        elif not isinstance(item, Undefined):
            total += 1
        if total > limit:
            return total
        walked += 1
        if budget is not None and walked % WALK_CHECK_EVERY == 0:
            budget.tick()
    return total


def built_size(value: Any) -> int:
    """What a new value costs to hold: its length, or an integer's digits."""
    if isinstance(value, str | bytes | list | tuple | dict | set | frozenset):
        return len(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value.bit_length() // 3
    return 0


def charge_result(budget: Budget, result: Any, sources: Iterable[Any]) -> None:
    """Charge ``result`` unless it is one of ``sources`` (a filter that returned its input builds nothing)."""
    for source in sources:
        if result is source:
            return
    budget.produce(built_size(result))


def _bits(value: int) -> int:
    return abs(value).bit_length()


def _is_sequence(value: Any) -> bool:
    return isinstance(value, str | bytes | list | tuple)


# --- Operators ----------------------------------------------------------------------------------

_PRINTF_SPEC = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?[a-zA-Z%]")


def check_binop(budget: Budget, operator: str, left: Any, right: Any) -> None:
    """Refuse an operator whose result would exceed the operand budget; charge what it builds."""
    if operator == "*":
        _check_repeat(budget, left, right)
    elif operator == "**":
        _check_power(budget, left, right)
    elif operator == "+" and _is_sequence(left) and _is_sequence(right):
        budget.produce(len(left) + len(right))
    elif operator == "%" and isinstance(left, str | bytes):
        arguments = right if isinstance(right, tuple) else (right,)
        check_printf(budget, left if isinstance(left, str) else left.decode("latin-1"), arguments)


def _check_repeat(budget: Budget, left: Any, right: Any) -> None:
    sequence, times = (left, right) if _is_sequence(left) else (right, left)
    if _is_sequence(sequence) and isinstance(times, int):
        if times <= 1:
            return  # nothing repeated
        length = len(sequence) * times
        budget.operand(length, f"a sequence of length {len(sequence)} times {times}")
        if isinstance(sequence, list | tuple):
            each = weight(sequence, budget.max_operand // times + 1, budget)
            budget.operand(each * times, f"a list times {times}", "characters of text or more")
        budget.produce(length)
    elif isinstance(left, int) and isinstance(right, int):
        bits = _bits(left) + _bits(right)
        budget.operand(bits, f"a {_bits(left)}-bit integer times a {_bits(right)}-bit one", "bits")
        budget.produce(bits // 3)


def _check_power(budget: Budget, base: Any, exponent: Any) -> None:
    if not (isinstance(base, int) and isinstance(exponent, int)) or exponent <= 0 or abs(base) <= 1:
        return
    budget.operand(exponent, f"{base} ** {exponent}", "bits")
    bits = exponent * math.log2(abs(base))
    budget.operand(bits, f"{base} ** {exponent}", "bits")
    budget.produce(int(bits) // 3)


def check_printf(budget: Budget, template: str, arguments: Iterable[Any]) -> None:
    """``template % arguments``: widths and precisions within the operand budget, arguments' text within the output."""
    arguments = list(arguments)
    for width, precision in _PRINTF_SPEC.findall(template):
        for number in (width, precision):
            if number == "*":
                _check_int_arguments(budget, arguments, "a * width in a % format")
            elif number:
                budget.operand(int(number), f"a width of {number} in a % format")
    budget.fits(arguments)


def check_format(budget: Budget, template: str, args: tuple, kwargs: dict) -> None:
    """``template.format(...)``: the same rules as ``%``, widths nested as ``{:{w}}`` included."""
    try:
        fields = list(string.Formatter().parse(template))
    except ValueError:
        return  # format() itself raises the error
    for _, _, spec, _ in fields:
        if not spec:
            continue
        if "{" in spec:
            _check_int_arguments(budget, [*args, *kwargs.values()], "a nested width in a format string")
        for number in re.findall(r"\d+", spec):
            budget.operand(int(number), f"a width of {number} in a format string")
    budget.fits([args, kwargs])


def _check_int_arguments(budget: Budget, arguments: Iterable[Any], what: str) -> None:
    for argument in arguments:
        if isinstance(argument, int):
            budget.operand(abs(argument), what)


# --- Calls: str and bytes methods, lipsum -------------------------------------------------------


def _argument(args: tuple, kwargs: dict, position: int, name: str, default: Any = None) -> Any:
    if len(args) > position:
        return args[position]
    return kwargs.get(name, default)


def _padded(budget: Budget, text: Any, args: tuple, kwargs: dict, name: str) -> None:
    width = _argument(args, kwargs, 0, "width", 0)
    if isinstance(width, int):
        budget.operand(width, f"{name}({width})")


def _replaced(budget: Budget, text: Any, args: tuple, kwargs: dict, name: str) -> None:
    old, new = _argument(args, kwargs, 0, "old"), _argument(args, kwargs, 1, "new")
    count = _argument(args, kwargs, 2, "count", -1)
    check_replace(budget, text, old, new, count)


def check_replace(budget: Budget, text: Any, old: Any, new: Any, count: Any) -> None:
    if not (isinstance(text, str | bytes) and isinstance(old, type(text)) and isinstance(new, type(text))):
        return
    occurrences = len(text) + 1 if not old else text.count(old)
    if isinstance(count, int) and count >= 0:
        occurrences = min(occurrences, count)
    growth = occurrences * (len(new) - len(old))
    budget.operand(growth, f"replace() adding {len(new) - len(old)} characters {occurrences} times")


def check_join(budget: Budget, items: Any, separator: Any) -> Any:
    """Check what joining ``items`` makes; the items, made a list first if they came from an iterator."""
    if not isinstance(items, Sized):
        items = list(items)  # join() would make it a list anyway: now its length is known beforehand
    budget.operand(len(separator) * len(items), f"a separator of {len(separator)} joining {len(items)} items")
    if not isinstance(items, range):
        budget.fits(items)
    return items


def _expanded(budget: Budget, text: Any, args: tuple, kwargs: dict, name: str) -> None:
    size = _argument(args, kwargs, 0, "tabsize", 8)
    if isinstance(size, int):
        budget.operand(text.count("\t" if isinstance(text, str) else b"\t") * size, f"expandtabs({size})")


def _translated(budget: Budget, text: Any, args: tuple, kwargs: dict, name: str) -> None:
    table = _argument(args, kwargs, 0, "table")
    if isinstance(table, dict):
        longest = max((len(item) for item in table.values() if isinstance(item, str)), default=1)
        budget.operand(len(text) * (longest - 1), f"translate() into strings of {longest} characters")


def _to_bytes(budget: Budget, number: Any, args: tuple, kwargs: dict, name: str) -> None:
    length = _argument(args, kwargs, 0, "length", 1)
    if isinstance(length, int):
        budget.operand(length, f"to_bytes({length})")


#: Methods of str and bytes (and int.to_bytes) whose result may be far larger than their object
#: (``join`` too, in :func:`check_call`).
_METHOD_CHECKS: dict[str, Callable[..., None]] = {
    "center": _padded,
    "ljust": _padded,
    "rjust": _padded,
    "zfill": _padded,
    "replace": _replaced,
    "expandtabs": _expanded,
    "translate": _translated,
    "to_bytes": _to_bytes,
}


def check_call(budget: Budget, function: Any, args: tuple, kwargs: dict) -> tuple:
    """Check a call made by a template; the arguments to make it with (an iterator to join becomes a list)."""
    owner = getattr(function, "__self__", None)
    if isinstance(owner, str | bytes | int) and not isinstance(owner, bool):
        name = getattr(function, "__name__", "")
        if name == "join" and args and isinstance(owner, str | bytes):
            return (check_join(budget, args[0], owner), *args[1:])
        check = _METHOD_CHECKS.get(name)
        if check is not None:
            check(budget, owner, args, kwargs, name)
    elif function is generate_lorem_ipsum:
        paragraphs = _argument(args, kwargs, 0, "n", 5)
        words = _argument(args, kwargs, 3, "max", 100)
        if isinstance(paragraphs, int) and isinstance(words, int):
            budget.operand(paragraphs * max(words, 20) * 8, f"lipsum({paragraphs}, max={words})")
    return args


# --- Filters and tests --------------------------------------------------------------------------

#: Filters that turn their value into text: its text must fit in what is left of the output budget.
_TEXT_FILTERS = frozenset(
    {
        "capitalize", "center", "e", "escape", "forceescape", "format", "indent", "join", "lower", "pprint",
        "replace", "safe", "string", "striptags", "title", "tojson", "trim", "truncate", "upper", "urlencode",
        "urlize", "wordcount", "wordwrap", "xmlattr",
    }
)  # fmt: skip
#: Filters slow per character in pure Python: their value's text within the operand budget.
_SLOW_TEXT_FILTERS = frozenset({"pprint", "urlize", "wordwrap"})


def _filter_center(budget: Budget, arguments: dict) -> None:
    width = arguments.get("width", 80)
    budget.operand(width if isinstance(width, int) else 0, f"center({width})")


def _filter_indent(budget: Budget, arguments: dict) -> None:
    width, text = arguments.get("width", 4), arguments["s"]
    each = len(width) if isinstance(width, str) else width if isinstance(width, int) else 0
    lines = text.count("\n") + 1 if isinstance(text, str) else 1
    budget.operand(each * lines, f"indent({width!r}) of {lines} lines")


def _filter_batch(budget: Budget, arguments: dict) -> None:
    count = arguments.get("linecount", arguments.get("slices"))
    if isinstance(count, int):
        budget.operand(count, f"batches or slices of {count}")
        if arguments.get("fill_with") is not None:
            filler = weight(arguments["fill_with"], budget.max_operand, budget)
            budget.operand(count * filler, f"{count} fillers of {filler} characters")


def _filter_format(budget: Budget, arguments: dict) -> None:
    if isinstance(arguments["value"], str):
        check_printf(budget, arguments["value"], [*arguments.get("args", ()), *arguments.get("kwargs", {}).values()])


def _filter_join(budget: Budget, arguments: dict) -> None:
    arguments["value"] = check_join(budget, arguments["value"], arguments.get("d", ""))


def _filter_replace(budget: Budget, arguments: dict) -> None:
    count = arguments.get("count")
    check_replace(budget, arguments["s"], arguments["old"], arguments["new"], -1 if count is None else count)


_FILTER_CHECKS: dict[str, Callable[[Budget, dict], None]] = {
    "center": _filter_center,
    "indent": _filter_indent,
    "batch": _filter_batch,
    "slice": _filter_batch,
    "format": _filter_format,
    "join": _filter_join,
    "replace": _filter_replace,
}


def bounded_filter(name: str, function: Callable) -> Callable:
    """``function`` charging a step, checked for what it would make, its result charged."""
    check = _FILTER_CHECKS.get(name)
    parameters = signature(function) if check is not None else None
    value_at = 1 if hasattr(function, "jinja_pass_arg") else 0  # after the context Jinja passes first
    is_text, is_slow = name in _TEXT_FILTERS, name in _SLOW_TEXT_FILTERS

    @wraps(function)
    def bounded(*args, **kwargs):
        budget = current()
        budget.step()
        if is_text and len(args) > value_at:
            value = args[value_at]
            if is_slow:
                budget.operand(weight(value, budget.max_operand, budget), f"the {name} filter on a value")
            budget.fits(value)
        if parameters is not None:
            bound = parameters.bind(*args, **kwargs)
            check(budget, bound.arguments)  # may replace an argument (an iterator by a list)
            args, kwargs = bound.args, bound.kwargs
        result = function(*args, **kwargs)
        charge_result(budget, result, (*args, *kwargs.values()))
        return result

    return bounded


def bounded_test(function: Callable) -> Callable:
    """A test charging a step: ``select('odd')`` over a long list is as many steps as items."""

    @wraps(function)
    def bounded(*args, **kwargs):
        current().step()
        return function(*args, **kwargs)

    return bounded


# --- The template's own loops, concatenations, slices and set blocks ---------------------------
# Compiled templates run these as plain Python: the tree is rewritten before compiling so that
# each goes through one of these filters. Their names cannot be written in a template; being
# ``pass_context`` they are never folded into constants at compile time.


def charged_iteration(iterable: Iterable, budget: Budget) -> Iterator:
    for item in iterable:
        budget.step()
        yield item


@pass_context
def _iterate(context, iterable):
    return charged_iteration(iterable, current())


@pass_context
def _concat(context, pieces):
    budget = current()
    budget.fits(pieces)
    result = (markup_join if context.eval_ctx.autoescape else str_join)(pieces)
    budget.produce(len(result))
    return result


@pass_context
def _slice(context, value, start, stop, step):
    result = value[start:stop:step]
    charge_result(current(), result, (value,))
    return result


@pass_context
def _built(context, value):
    current().produce(built_size(value))
    return value


INTERNAL_FILTERS = {"weft:iterate": _iterate, "weft:concat": _concat, "weft:slice": _slice, "weft:built": _built}


class BoundedTree(NodeTransformer):
    """Rewrite a parsed template so that its loops, ``~``, slices and set blocks charge the budget."""

    def __init__(self, environment):
        self.environment = environment

    def _filter(self, name: str, node: nodes.Node | None, args: list, lineno: int) -> nodes.Filter:
        result = nodes.Filter(node, name, args, [], None, None, lineno=lineno)
        return result.set_environment(self.environment)

    def visit_For(self, node: nodes.For) -> nodes.Node:
        node = self.generic_visit(node)
        node.iter = self._filter("weft:iterate", node.iter, [], node.lineno)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        node = self.generic_visit(node)
        pieces = nodes.List(node.nodes, lineno=node.lineno).set_environment(self.environment)
        return self._filter("weft:concat", pieces, [], node.lineno)

    def visit_Getitem(self, node: nodes.Getitem) -> nodes.Node:
        node = self.generic_visit(node)
        if not isinstance(node.arg, nodes.Slice):
            return node
        none = nodes.Const(None, lineno=node.lineno).set_environment(self.environment)
        bounds = [part if part is not None else none for part in (node.arg.start, node.arg.stop, node.arg.step)]
        return self._filter("weft:slice", node.node, bounds, node.lineno)

    def visit_AssignBlock(self, node: nodes.AssignBlock) -> nodes.Node:
        node = self.generic_visit(node)
        node.filter = self._filter("weft:built", node.filter, [], node.lineno)
        return node


def charged_loop_call(function: Any, args: tuple, budget: Budget) -> tuple:
    """``loop(children)`` in a recursive for: its iterations are charged like the loop's own."""
    if isinstance(function, LoopContext) and args:
        return (charged_iteration(args[0], budget), *args[1:])
    return args
