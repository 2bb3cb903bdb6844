"""Writes of triggers: create, change, rotate, switch off, delete. Each writes its audit row.

The token is returned by :func:`trigger_create` and :func:`trigger_rotate` only, once; what is kept
is its hash. The secret is written, never read back by any caller but the signature check.
"""

import re
import secrets
from typing import Any

import jinja2
from django.db import transaction
from django.utils import timezone

from config.errors import InvalidInput
from history.services import audit_log_record
from workflows.releases.versions import parse_range

from .models import Trigger
from .selectors import token_hash

TOKEN_PREFIX = "whk_"  # noqa: S105 (the public prefix of every token, no secret)
VERSION_DRAFT = "draft"
VERSION_LATEST = "latest"
MIN_SECRET_LENGTH = 16
MAX_SECRET_LENGTH = 256
MAX_TEMPLATE_LENGTH = 10_000
MAX_MAPPED_INPUTS = 64
#: Where a start input's value comes from: the body (or a path into it), a query parameter, a header.
_SOURCE = re.compile(r"^(body(\.[A-Za-z0-9_-]{1,64}){0,8}|query\.[A-Za-z0-9_.-]{1,64}|headers\.[A-Za-z0-9_-]{1,64})$")
_INPUT_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
#: Fields a caller sets; every other field is the service's.
SETTABLE = (
    "name",
    "enabled",
    "secret",
    "version",
    "input_mapping",
    "wait",
    "wait_timeout_s",
    "response_template",
    "response_content_type",
    "rate_limit_per_minute",
)


def _new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def _audit_fields(trigger: Trigger) -> dict:
    """What the audit row keeps of a trigger: its settings, whether it has a secret, never the secret."""
    return {
        "name": trigger.name,
        "enabled": trigger.enabled,
        "has_secret": trigger.has_secret,
        "version": trigger.version,
        "input_mapping": trigger.input_mapping,
        "wait": trigger.wait,
        "wait_timeout_s": trigger.wait_timeout_s,
        "response_template": bool(trigger.response_template),
        "response_content_type": trigger.response_content_type,
        "rate_limit_per_minute": trigger.rate_limit_per_minute,
        "token_prefix": trigger.token_prefix,
    }


def trigger_version_clean(version: Any) -> str:
    """``draft``, ``latest``, or a semver range (``1.2.3``, ``^1.2``...): else InvalidInput naming ``version``."""
    if version in (VERSION_DRAFT, VERSION_LATEST):
        return version
    parse_range(version, field="version")
    return version.strip()


def trigger_mapping_clean(mapping: Any) -> dict:
    """``{"<start input>": "body.a.b" | "body" | "query.<name>" | "headers.<name>"}``, else InvalidInput
    naming ``input_mapping.<input>``."""
    if not isinstance(mapping, dict):
        raise InvalidInput("Must be an object of start input names to sources.", field="input_mapping")
    if len(mapping) > MAX_MAPPED_INPUTS:
        raise InvalidInput(f"At most {MAX_MAPPED_INPUTS} inputs may be mapped.", field="input_mapping")
    for name, source in mapping.items():
        if not _INPUT_NAME.match(name):
            raise InvalidInput("Not an input name (letters, digits and _).", field=f"input_mapping.{name[:64]}")
        if not isinstance(source, str) or not _SOURCE.match(source):
            raise InvalidInput(
                'A source is "body", "body.<key>[.<key>...]", "query.<name>" or "headers.<name>".',
                field=f"input_mapping.{name}",
                code="invalid_source",
            )
    return dict(mapping)


def trigger_template_clean(template: Any) -> str:
    """A response template: sandboxed Jinja over ``outputs`` and ``run``; its syntax is checked now."""
    if not isinstance(template, str) or len(template) > MAX_TEMPLATE_LENGTH:
        raise InvalidInput(
            f"A template is text of at most {MAX_TEMPLATE_LENGTH} characters.", field="response_template"
        )
    try:
        jinja2.Environment(autoescape=True).parse(template)  # syntax only: it renders in the engine's sandbox
    except jinja2.TemplateSyntaxError as exc:
        raise InvalidInput(
            f"Template syntax error on line {exc.lineno}: {exc.message}",
            field="response_template",
            code="invalid_template",
        ) from None
    return template


def _secret_clean(secret: Any) -> str:
    if secret is None or secret == "":
        return ""
    if not isinstance(secret, str) or not MIN_SECRET_LENGTH <= len(secret) <= MAX_SECRET_LENGTH:
        raise InvalidInput(
            f"A secret is {MIN_SECRET_LENGTH} to {MAX_SECRET_LENGTH} characters (or empty: unsigned).", field="secret"
        )
    return secret


_CLEANERS = {
    "secret": _secret_clean,
    "version": trigger_version_clean,
    "input_mapping": trigger_mapping_clean,
    "response_template": trigger_template_clean,
}


def _fields_clean(fields: dict) -> dict:
    """The fields with their rules checked (types and ranges are the serializer's and the table's)."""
    unknown = set(fields) - set(SETTABLE)
    if unknown:
        raise InvalidInput("Not a field of a trigger.", field=sorted(unknown)[0])
    return {name: _CLEANERS[name](value) if name in _CLEANERS else value for name, value in fields.items()}


def trigger_create(*, workflow, user, **fields) -> tuple[Trigger, str]:
    """A new webhook trigger of ``workflow``, and its token (shown this once)."""
    cleaned = _fields_clean(fields)
    token = _new_token()
    with transaction.atomic():
        trigger = Trigger.objects.create(
            workflow=workflow,
            token_hash=token_hash(token),
            token_prefix=token[: len(TOKEN_PREFIX) + 6],
            created_by=user if getattr(user, "pk", None) else None,
            **cleaned,
        )
        audit_log_record(actor=user, action="trigger.create", target=trigger, after=_audit_fields(trigger))
    return trigger, token


def trigger_update(*, trigger: Trigger, user, **fields) -> Trigger:
    cleaned = _fields_clean(fields)
    if not cleaned:
        return trigger
    with transaction.atomic():
        before = _audit_fields(trigger)
        for name, value in cleaned.items():
            setattr(trigger, name, value)
        trigger.save(update_fields=[*cleaned, "updated_at"])
        audit_log_record(
            actor=user, action="trigger.update", target=trigger, before=before, after=_audit_fields(trigger)
        )
    return trigger


def trigger_set_enabled(*, trigger: Trigger, enabled: bool, user) -> Trigger:
    """Switch a trigger on or off: a call to a switched-off hook is refused (403 ``trigger_disabled``)."""
    return trigger_update(trigger=trigger, user=user, enabled=enabled)


def trigger_rotate(*, trigger: Trigger, user) -> tuple[Trigger, str]:
    """A new token for ``trigger``: the old one stops working with this commit (it is looked up by hash)."""
    token = _new_token()
    with transaction.atomic():
        before = _audit_fields(trigger)
        trigger.token_hash = token_hash(token)
        trigger.token_prefix = token[: len(TOKEN_PREFIX) + 6]
        trigger.rotated_at = timezone.now()
        trigger.save(update_fields=["token_hash", "token_prefix", "rotated_at", "updated_at"])
        audit_log_record(
            actor=user, action="trigger.rotate", target=trigger, before=before, after=_audit_fields(trigger)
        )
    return trigger, token


def trigger_delete(*, trigger: Trigger, user) -> None:
    with transaction.atomic():
        audit_log_record(actor=user, action="trigger.delete", target=trigger, before=_audit_fields(trigger))
        trigger.delete()
