"""Single-use nonces of signed app requests: Redis when configured, else the database."""

from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from config.redis_connection import redis_client

from .models import App, AppNonce


def nonce_claim(*, app: App, nonce: str, ttl: timedelta) -> bool:
    """True the first time ``nonce`` is seen for ``app`` within ``ttl``; False on a replay."""
    if settings.REDIS_URL:
        return bool(redis_client().set(f"weft:nonce:{app.pk}:{nonce}", 1, nx=True, ex=int(ttl.total_seconds())))
    now = timezone.now()
    AppNonce.objects.filter(app=app, created_at__lt=now - ttl).delete()
    try:
        with transaction.atomic():
            AppNonce.objects.create(app=app, nonce=nonce)
    except IntegrityError:
        return False
    return True
