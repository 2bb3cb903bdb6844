"""What a load balancer asks: is the process up (``/healthz``), can it serve (``/readyz``)?

Readiness checks the database (``SELECT 1``), the Celery broker and the channel layer (a Redis
``PING`` each, with a one-second timeout); in embedded mode the broker and the channel layer are
inside the process and always there. A check names only what is down, never an address or a
password from the settings.
"""

import logging

import redis
from django.conf import settings
from django.db import connection

logger = logging.getLogger(__name__)

REDIS_TIMEOUT_S = 1.0
OK, DOWN, IN_PROCESS = "ok", "down", "in-process"


def _redis_ping(url: str) -> None:
    client = redis.Redis.from_url(url, socket_connect_timeout=REDIS_TIMEOUT_S, socket_timeout=REDIS_TIMEOUT_S)
    try:
        client.ping()
    finally:
        client.close()


def _database() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return OK


def _broker() -> str:
    url = settings.CELERY_BROKER_URL
    if url.startswith("memory://"):
        return IN_PROCESS
    _redis_ping(url)
    return OK


def _channel_layer() -> str:
    config = settings.CHANNEL_LAYERS.get("default", {})
    hosts = config.get("CONFIG", {}).get("hosts")
    if not hosts:
        return IN_PROCESS
    for host in hosts:
        if isinstance(host, str):
            _redis_ping(host)
        else:
            address = host.get("address", host) if isinstance(host, dict) else host
            if isinstance(address, str):
                _redis_ping(address)
            else:
                raise TypeError("A channel layer host that is neither a URL nor an address.")
    return OK


CHECKS = {"database": _database, "broker": _broker, "channel_layer": _channel_layer}


def readiness() -> dict[str, str]:
    """Each dependency's state: ``ok``, ``in-process`` or ``down``."""
    states = {}
    for name, check in CHECKS.items():
        try:
            states[name] = check()
        except Exception as exc:
            logger.warning("Readiness: the %s is down (%s).", name.replace("_", " "), type(exc).__name__)
            states[name] = DOWN
    return states
