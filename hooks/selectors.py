"""Reads of triggers and their deliveries."""

import hashlib
from datetime import timedelta

from django.db.models import QuerySet
from django.utils import timezone

from workflows.models import Workflow

from .models import HookDelivery, Trigger

#: How long an ``Idempotency-Key`` names the same delivery.
IDEMPOTENCY_WINDOW = timedelta(hours=24)
#: Tokens are ``whk_`` and 43 URL-safe characters; anything much longer is no token of ours.
MAX_TOKEN_LENGTH = 128


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def triggers_for_workflow(*, workflow: Workflow) -> QuerySet[Trigger]:
    return Trigger.objects.filter(workflow=workflow).order_by("created_at", "id")


def trigger_for_token(*, token: str) -> Trigger | None:
    """The trigger whose URL holds ``token`` (enabled or not), with its workflow and owner: one query."""
    if not token or len(token) > MAX_TOKEN_LENGTH:
        return None
    return Trigger.objects.select_related("workflow").filter(token_hash=token_hash(token)).first()


def delivery_for_key(*, trigger: Trigger, idempotency_key: str) -> HookDelivery | None:
    """The delivery of ``trigger`` that ``idempotency_key`` named within the last 24 hours."""
    since = timezone.now() - IDEMPOTENCY_WINDOW
    return (
        HookDelivery.objects.select_related("run")
        .filter(trigger=trigger, idempotency_key=idempotency_key, created_at__gte=since)
        .first()
    )
