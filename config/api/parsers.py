"""How the API reads request bodies: JSON only, of bounded size and depth, whose strings can be stored."""

import json
import re
from itertools import accumulate

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser, get_encoding
from rest_framework.utils.json import strict_constant

from config.conf import weft_settings
from config.errors import InvalidInput, WeftError

# A JSON string (escapes included), and a run of characters that are not brackets.
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


class RequestTooLarge(WeftError):
    """A request body over ``DATA_UPLOAD_MAX_MEMORY_SIZE`` (WEFT_REQUEST_MAX_BYTES): 413."""

    status_code = 413
    default_code = "request_too_large"

    def __init__(self, limit: int):
        super().__init__(f"The request body is larger than {limit} bytes, the most accepted.", limit=limit)


def json_depth(text: str) -> int:
    """How deep arrays and objects nest in ``text``, counted without parsing (so without recursion).

    Brackets inside strings do not count; in text that is not JSON the count may be off, and the
    parser then refuses the text anyway.
    """
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0)


def json_max_depth() -> int:
    return weft_settings.JSON_MAX_DEPTH


def json_depth_check(text: str) -> None:
    """Refuse JSON nested deeper than ``WEFT_JSON_MAX_DEPTH`` before ``json.loads`` recurses into it."""
    limit = json_max_depth()
    if json_depth(text) > limit:
        raise InvalidInput(
            f"The JSON nests arrays and objects more than {limit} deep, the most accepted.",
            code="json_too_deep",
            limit=limit,
        )


def json_loads_bounded(text: str | bytes):
    """``json.loads`` of outside input, refused (InvalidInput) when nested too deep."""
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    json_depth_check(text)
    return json.loads(text)


def _unstorable_path(value, path: str = "") -> str | None:
    """Where in ``value`` a string holds a NUL or a lone surrogate (which PostgreSQL cannot store)."""
    if isinstance(value, str):
        if "\x00" in value or any("\ud800" <= char <= "\udfff" for char in value):
            return path
        return None
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        child = f"{path}[{key}]" if isinstance(key, int) else f"{path}.{key}" if path else str(key)
        found = _unstorable_path(key, child) if isinstance(key, str) else None
        found = found or _unstorable_path(item, child)
        if found is not None:
            return found
    return None


class StrictJSONParser(JSONParser):
    """JSON of bounded size and depth whose every string can be stored: no NUL characters, no
    unpaired surrogates.

    A body over ``DATA_UPLOAD_MAX_MEMORY_SIZE`` is a 413 (``request_too_large``); nesting deeper
    than ``WEFT_JSON_MAX_DEPTH`` a 400 (``json_too_deep``), both naming their ``limit``. A string
    that cannot be stored names the field as the serializers do, ``{"<top field>": ["... at <path>"]}``.
    """

    def parse(self, stream, media_type=None, parser_context=None):
        text = self._text(stream, get_encoding(parser_context or {}))
        json_depth_check(text)
        try:
            data = json.loads(text, parse_constant=strict_constant if self.strict else None)
        except ValueError as exc:
            raise ParseError(f"JSON parse error - {exc}") from None
        path = _unstorable_path(data)
        if path is not None:
            top = path.split(".", 1)[0].split("[", 1)[0] or "non_field_errors"
            raise ParseError(
                {top: [f"A string at {path or 'the top'} holds a NUL character or an unpaired surrogate."]}
            )
        return data

    @staticmethod
    def _text(stream, encoding: str) -> str:
        # DRF reads the request's stream itself, past Django's check of request.body's size.
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        body = stream.read() if limit is None else stream.read(limit + 1)
        if limit is not None and len(body) > limit:
            raise RequestTooLarge(limit)
        try:
            return body.decode(encoding)
        except UnicodeDecodeError as exc:
            raise ParseError(f"JSON parse error - {exc}") from None
