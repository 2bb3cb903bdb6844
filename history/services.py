from django.db import models

from .models import AuditLog


def audit_log_record(
    *,
    actor,
    action: str,
    target: models.Model,
    before: dict | None = None,
    after: dict | None = None,
    payload: dict | None = None,
) -> AuditLog:
    """Record who changed access or secrets. Callers pass field values, never secret material."""
    return AuditLog.objects.create(
        actor=actor if getattr(actor, "pk", None) else None,
        actor_repr=str(actor)[:255] if actor is not None else "system",
        action=action,
        target_type=target._meta.label_lower,
        target_id=str(target.pk),
        target_repr=str(target)[:255],
        before=before,
        after=after,
        payload=payload or {},
    )
