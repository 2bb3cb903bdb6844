from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser


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
    """JSON whose every string can be stored: no NUL characters, no unpaired surrogates.

    The error names the field as the serializers do, ``{"<top field>": ["... at <path>"]}``.
    """

    def parse(self, stream, media_type=None, parser_context=None):
        data = super().parse(stream, media_type, parser_context)
        path = _unstorable_path(data)
        if path is not None:
            top = path.split(".", 1)[0].split("[", 1)[0] or "non_field_errors"
            raise ParseError(
                {top: [f"A string at {path or 'the top'} holds a NUL character or an unpaired surrogate."]}
            )
        return data
