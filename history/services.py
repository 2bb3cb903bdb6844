from dataclasses import dataclass

from django.db import models

from .models import AuditLog


@dataclass(frozen=True)
class AuditTarget:
    """What an audit row is about when it is not one model row (a key, a whole table)."""

    type: str
    id: str
    repr: str = ""


def audit_log_record(
    *,
    actor,
    action: str,
    target: models.Model | AuditTarget,
    before: dict | None = None,
    after: dict | None = None,
    payload: dict | None = None,
) -> AuditLog:
    """Record who changed access or secrets. Callers pass field values, never secret material.

    ``actor`` is a user, or a string naming who acted when no user did (a command's operator).
    """
    if isinstance(target, AuditTarget):
        target_type, target_id, target_repr = target.type, target.id, target.repr
    else:
        target_type, target_id, target_repr = target._meta.label_lower, str(target.pk), str(target)
    return AuditLog.objects.create(
        actor=actor if getattr(actor, "pk", None) else None,
        actor_repr=str(actor)[:255] if actor is not None else "system",
        action=action,
        target_type=target_type[:64],
        target_id=target_id[:64],
        target_repr=target_repr[:255],
        before=before,
        after=after,
        payload=payload or {},
    )
