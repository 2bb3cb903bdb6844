"""What a run stores: the one rule that makes a node's output (or any value) storable as JSON.

PostgreSQL's jsonb refuses the NUL character, UTF-8 cannot encode a lone surrogate and JSON has
no NaN or Infinity; an output holding one of them (an HTTP API answering a NUL byte is enough)
used to make the journal's write fail, and the run was resumed, its requests sent again, until
the reaper gave up. So the executor checks every node output before it is recorded
(:func:`output_checked`), and the journal cleans whatever it writes by the same rule
(:func:`cleaned`, :func:`storable_json`), as a last line of defence. The rule:

- in strings and object keys, NUL and lone surrogates become U+FFFD (the replacement
  character); a surrogate pair left split is joined into its character, as a JSON round trip does;
- a float that is NaN or ±Infinity becomes null, as JSON.stringify does, and so does an integer
  too long to write out (over ``sys.get_int_max_str_digits()`` digits: beyond any double);
- tuples become lists, and keys that are numbers, booleans or null become strings, as ``json``
  does;
- anything else (bytes, a set, a date, an object) is not JSON: an error, and so is nesting
  deeper than :data:`MAX_DEPTH` objects and arrays.

A node output whose JSON (UTF-8, compact) is larger than the operator's
``settings.WEFT["NODE_OUTPUT_MAX_BYTES"]`` is an error too. An error fails the node at once
(:class:`OutputInvalid` is not retryable: the node already did what it does, once). An output
under the limit but over ``OUTPUT_STORE_ABOVE_BYTES`` is the journal's business: it keeps it in
object storage (``workflows.execution.large_outputs``), the engine passes the value on as any other.

The common case costs one C-level ``json`` encoding and a few scans of its text; values are
walked in Python only when that finds something to clean (or very many brackets, to measure the
depth). Walks are iterative, never recursive.
"""

import json
import math
import re
from typing import Any

from config.conf import weft_settings

from .errors import NonRetryableError

#: Objects and arrays nested deeper than this are refused: what reads outputs again recurses
#: (templates; Python's json, which stops near 1000 levels, reading them back on resume or in the API).
MAX_DEPTH = 256
REPLACEMENT = "\ufffd"
#: Levels of a path an error names.
WHERE_MAX_LEVELS = 8

_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
_NOT_ENCODABLE = (ValueError, TypeError, RecursionError)
_CONTAINERS = (dict, list, tuple)
#: ``\u0000`` after an even number of backslashes (none included): an escaped NUL.
_NUL_ESCAPE = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


class OutputInvalid(NonRetryableError):
    """A value no rule makes storable: not JSON, or nested too deep."""


class OutputTooLarge(OutputInvalid):
    """A node's output over ``NODE_OUTPUT_MAX_BYTES``."""


def output_checked(output: dict) -> dict:
    """``output`` as it is stored and passed on (the same object if nothing needed cleaning).

    Raises :class:`OutputInvalid` naming where the output is not JSON or too deep, and
    :class:`OutputTooLarge` naming the limit and its setting.
    """
    encoded = _encoded(output)
    if encoded is None or _deeper_than(output, MAX_DEPTH, encoded[0]):
        output = _rebuilt(output, "output")
        text = _ENCODER.encode(output)
        encoded = text, len(text.encode())
    limit = weft_settings.NODE_OUTPUT_MAX_BYTES
    if encoded[1] > limit:
        raise OutputTooLarge(
            f"The node's output is {encoded[1]} bytes of JSON, over the limit of {limit} bytes"
            " (settings.WEFT['NODE_OUTPUT_MAX_BYTES'], WEFT_NODE_OUTPUT_MAX_BYTES in the environment)."
        )
    return output


def cleaned(value: Any) -> Any:
    """``value`` made storable by the rule (the same object if nothing needed cleaning), or OutputInvalid."""
    encoded = _encoded(value)
    if encoded is not None and not _deeper_than(value, MAX_DEPTH, encoded[0]):
        return value
    return _rebuilt(value, None)


def storable_json(value: Any) -> str | None:
    """The JSON text of ``value`` if it can be stored as it is, else None (then clean it first).

    Depth is not looked at: this is the journal's check of a whole batch, whose wrapping adds
    levels (the node outputs in it were checked by :func:`output_checked`).
    """
    encoded = _encoded(value)
    return None if encoded is None else encoded[0]


def json_text(value: Any) -> str:
    """The JSON text of a value :func:`cleaned` returned."""
    return _ENCODER.encode(value)


def _encoded(value: Any) -> tuple[str, int] | None:
    """(JSON text, its size in UTF-8) if ``value`` needs no cleaning, else None.

    ``json`` refuses NaN, ±Infinity, non-JSON types and very deep values; it escapes NUL as
    ``\\u0000`` (unless the backslash is itself escaped: a string holding that text); and a lone
    surrogate is what makes UTF-8 encoding fail.
    """
    try:
        text = _ENCODER.encode(value)
    except _NOT_ENCODABLE:
        return None
    if "\\u0000" in text and _NUL_ESCAPE.search(text):
        return None
    if text.isascii():
        return text, len(text)
    try:
        return text, len(text.encode())
    except UnicodeEncodeError:
        return None


def _deeper_than(value: Any, limit: int, text: str) -> bool:
    """Whether ``value`` (whose JSON is ``text``) nests more than ``limit`` objects and arrays."""
    if text.count("[") + text.count("{") <= limit:  # each level opens one: cannot be deeper
        return False
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        for child in item.values() if isinstance(item, dict) else item:
            if isinstance(child, _CONTAINERS):
                stack.append((child, depth + 1))
    return False


def _rebuilt(value: Any, root: str | None) -> Any:
    """A copy of ``value`` cleaned by the rule, built without recursion; OutputInvalid names the path."""
    holder = [None]
    # (container to fill, its slot, the value for it, depth, path as (parent path, key) links)
    stack: list[tuple[Any, Any, Any, int, tuple]] = [(holder, 0, value, 1, (None, root))]
    while stack:
        parent, slot, item, depth, path = stack.pop()
        if isinstance(item, str):
            parent[slot] = _text(item)
        elif isinstance(item, _CONTAINERS):
            if depth > MAX_DEPTH:
                raise OutputInvalid(f"{_where(path)}: nested deeper than {MAX_DEPTH} objects and arrays.")
            if isinstance(item, dict):
                copy: Any = {}
                for key, child in item.items():
                    name = _key(key, path)
                    copy[name] = None  # keeps the order; filled when popped
                    stack.append((copy, name, child, depth + 1, (path, name)))
            else:
                copy = [None] * len(item)
                stack.extend((copy, index, child, depth + 1, (path, index)) for index, child in enumerate(item))
            parent[slot] = copy
        elif isinstance(item, float):
            parent[slot] = item if math.isfinite(item) else None
        elif isinstance(item, int):  # bool too
            parent[slot] = item if _writable(item) else None
        elif item is None:
            parent[slot] = None
        else:
            raise OutputInvalid(
                f"{_where(path)}: a value of type {type(item).__name__} is not JSON"
                " (objects, arrays, strings, numbers, booleans and null are)."
            )
    return holder[0]


def _text(text: str) -> str:
    if "\x00" in text:
        text = text.replace("\x00", REPLACEMENT)
    try:
        text.encode()
    except UnicodeEncodeError:  # lone surrogates: UTF-16 joins the pairs and replaces the rest
        text = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return text


def _key(key: Any, path: tuple) -> str:
    if isinstance(key, str):
        return _text(key)
    if key is None or isinstance(key, int | float):
        return json.dumps(key)  # as json writes it: "null", "true", "1", "1.5"
    raise OutputInvalid(f"{_where(path)}: a key of type {type(key).__name__} is not JSON (keys are strings).")


def _writable(number: int) -> bool:
    try:
        int.__repr__(number)
    except ValueError:
        return False
    return True


def _where(path: tuple) -> str:
    """``output.json.items[3]`` from the (parent, key) links (its first levels, for a deep one)."""
    parts = []
    while path is not None:
        path, key = path
        if key is not None:
            parts.append(f"[{key}]" if isinstance(key, int) else f".{key}")
    parts.reverse()
    text = "".join(parts[:WHERE_MAX_LEVELS]).lstrip(".") + ("…" if len(parts) > WHERE_MAX_LEVELS else "")
    return text or "the value"
