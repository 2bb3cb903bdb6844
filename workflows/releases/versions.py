"""Semantic versions of published workflows: parsing, ordering, and ranges clients ask for."""

import semantic_version

from config.errors import InvalidInput


def parse_version(text: str, *, field: str = "version") -> semantic_version.Version:
    """A release version is exactly MAJOR.MINOR.PATCH, so that "latest" is a plain numeric order."""
    if not isinstance(text, str):
        raise InvalidInput("A version is a string such as 1.2.3.", field=field, code="invalid_version")
    try:
        version = semantic_version.Version(text.strip())
    except ValueError:
        raise InvalidInput(
            f"'{text[:64]}' is not a semantic version such as 1.2.3.", field=field, code="invalid_version"
        ) from None
    if version.prerelease or version.build:
        raise InvalidInput(
            "Release versions are MAJOR.MINOR.PATCH, without pre-release or build parts.",
            field=field,
            code="invalid_version",
        )
    return version


def parse_range(text: str, *, field: str = "version") -> semantic_version.NpmSpec:
    """An exact version or an npm-style range: ``1.2.3``, ``1.2.x``, ``^1.2``, ``~1.2.3``, ``>=1.0 <2``."""
    if not isinstance(text, str) or not text.strip() or len(text) > 128:
        raise InvalidInput("A version range is a non-empty string such as ^1.2.", field=field, code="invalid_range")
    try:
        return semantic_version.NpmSpec(text.strip())
    except ValueError:
        raise InvalidInput(
            f"'{text[:64]}' is neither a version nor a range such as 1.2.x or ^1.2.", field=field, code="invalid_range"
        ) from None
