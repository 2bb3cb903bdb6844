"""Single-use nonces of signed requests (an app's, a webhook trigger's): Redis when configured, else the database."""

from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, models, transaction
from django.utils import timezone

from config.redis_connection import redis_client

from .models import App, AppNonce


def nonce_claim(*, app: App, nonce: str, ttl: timedelta) -> bool:
    """True the first time ``nonce`` is seen for ``app`` within ``ttl``; False on a replay."""
    return single_use_claim(redis_key=f"weft:nonce:{app.pk}:{nonce}", ttl=ttl, model=AppNonce, app=app, nonce=nonce)


def single_use_claim(*, redis_key: str, ttl: timedelta, model: type[models.Model], **row) -> bool:
    """True the first time within ``ttl``: a Redis key set if absent, or (without Redis) a row of ``model``
    (``row``: its owner and ``nonce``, unique together; rows older than ``ttl`` are purged first)."""
    if settings.REDIS_URL:
        return bool(redis_client().set(redis_key, 1, nx=True, ex=int(ttl.total_seconds())))
    owner = {name: value for name, value in row.items() if name != "nonce"}
    model.objects.filter(**owner, created_at__lt=timezone.now() - ttl).delete()
    try:
        with transaction.atomic():
            model.objects.create(**row)
    except IntegrityError:
        return False
    return True
