"""What a load balancer asks: is the process up (``/healthz``), can it serve (``/readyz``)?

Readiness checks the database (``SELECT 1``), the Celery broker and the channel layer (a Redis
``PING`` each, with a one-second timeout); in embedded mode the broker and the channel layer are
inside the process and always there. A check names only what is down, never an address or a
password from the settings.

It also says whether the code sandbox can isolate code here (bubblewrap and libseccomp present):
``ok``, or ``down`` where this process executes runs (embedded mode) and isolation is required,
``missing`` where runs execute elsewhere (a web server in front of Celery workers: not a reason
to take it out of rotation), ``unisolated`` where a developer turned isolation off. What is
missing, with the package to install, is in :func:`problems`.
"""

import logging

import redis
from django.conf import settings
from django.db import connection

from workflows.engine.sandbox import isolation_required, isolation_status

logger = logging.getLogger(__name__)

REDIS_TIMEOUT_S = 1.0
OK, DOWN, IN_PROCESS, MISSING, UNISOLATED = "ok", "down", "in-process", "missing", "unisolated"


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


def _sandbox() -> str:
    if isolation_status()["isolated"]:
        return OK
    if not isolation_required():
        return UNISOLATED
    return DOWN if settings.CELERY_BROKER_URL.startswith("memory://") else MISSING


CHECKS = {"database": _database, "broker": _broker, "channel_layer": _channel_layer, "sandbox": _sandbox}


def problems() -> dict[str, str]:
    """What keeps a part from working, in words an operator acts on (only the sandbox says more than down)."""
    state = isolation_status()
    return {} if state["isolated"] else {"sandbox": state["problem"]}


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
