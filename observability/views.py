"""``/metrics`` for Prometheus (behind a token or a network list), ``/healthz`` and ``/readyz`` for probes.

``observability.middleware`` serves them (before host validation and the HTTPS redirect); none
is in the URLconf, the API or its schema.
"""

import hmac
import ipaddress
from functools import lru_cache

from django.conf import settings
from django.http import HttpResponse, JsonResponse
from prometheus_client import CONTENT_TYPE_LATEST

from . import health
from . import metrics as exposed


def healthz(request) -> JsonResponse:
    """The process answers: nothing else is looked at."""
    return JsonResponse({"status": "ok"})


def readyz(request) -> JsonResponse:
    """200 when the database, the broker and the channel layer answer; 503 naming those that do not."""
    checks = health.readiness()
    down = [name for name, state in checks.items() if state == health.DOWN]
    extra = {"problems": problems} if (problems := health.problems()) else {}
    if down:
        return JsonResponse({"status": "unavailable", "down": down, "checks": checks, **extra}, status=503)
    return JsonResponse({"status": "ready", "checks": checks, **extra})


@lru_cache(maxsize=8)
def allowed_networks(entries: tuple[str, ...]) -> tuple:
    return tuple(ipaddress.ip_network(entry.strip(), strict=False) for entry in entries if entry.strip())


def _bearer_token(request) -> str | None:
    header = request.headers.get("Authorization")
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def _address_allowed(request) -> bool:
    networks = allowed_networks(tuple(settings.METRICS_ALLOW))
    try:
        address = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return False
    return any(address in network for network in networks)


def metrics(request) -> HttpResponse:
    """The Prometheus exposition, for a bearer of ``WEFT_METRICS_TOKEN`` or a client in ``WEFT_METRICS_ALLOW``.

    404 when neither is configured (the endpoint does not exist), 401 for a missing or wrong
    token when a token is configured, 403 for a client outside the allowed networks otherwise.
    """
    token, networks = settings.METRICS_TOKEN, settings.METRICS_ALLOW
    if not token and not networks:
        return HttpResponse("Not found.\n", status=404, content_type="text/plain")
    presented = _bearer_token(request)
    token_ok = bool(token) and presented is not None and hmac.compare_digest(presented.encode(), token.encode())
    if not token_ok and (presented is not None or not _address_allowed(request)):
        if token:
            response = HttpResponse("A valid bearer token is required.\n", status=401, content_type="text/plain")
            response["WWW-Authenticate"] = 'Bearer realm="metrics"'
            return response
        return HttpResponse("This address may not read the metrics.\n", status=403, content_type="text/plain")
    return HttpResponse(exposed.exposition(), content_type=CONTENT_TYPE_LATEST)
