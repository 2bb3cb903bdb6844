"""Sign-in lockout (django-axes): what a locked-out caller gets, and the audit row of each lockout.

Axes counts failures by username and by address (settings AXES_*). The API's token endpoint
answers a lockout itself (``SignInLockedOut``, through the API's error pipeline); the console's
and the admin's sign-in forms get the page below from axes's middleware.
"""

from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render

from config.errors import RateLimited
from history.services import AuditTarget, audit_log_record


class SignInLockedOut(RateLimited):
    """Too many failed sign-ins for this username or from this address: 429 until the cool-off ends."""

    default_code = "locked_out"

    def __init__(self):
        cooloff_s = cooloff_seconds()
        super().__init__(
            f"Too many failed sign-ins for this username or from this address: "
            f"try again in {cooloff_s} s (limit {settings.AXES_FAILURE_LIMIT} failures).",
            retry_after=cooloff_s,
            limit=settings.AXES_FAILURE_LIMIT,
        )


def cooloff_seconds() -> int:
    return int(settings.AXES_COOLOFF_TIME.total_seconds())


def client_ip(request: HttpRequest) -> str | None:
    """The address axes counts: REMOTE_ADDR, which config/proxy.py sets from a trusted proxy only."""
    return request.META.get("REMOTE_ADDR")


def lockout_response(request: HttpRequest, *args) -> HttpResponse:
    """axes's AXES_LOCKOUT_CALLABLE: the contract's JSON under /api/, else a page saying when to retry.

    ``*args``: axes passes the original response and the credentials, in an order that depends on
    its sync or async path; neither is needed here.
    """
    error = SignInLockedOut()
    if request.path.startswith("/api/"):
        response = JsonResponse(error.as_dict(), status=error.status_code)
    else:
        context = {"cooloff_minutes": max(1, round(error.retry_after / 60))}
        response = render(request, "accounts/locked_out.html", context, status=error.status_code)
    response["Retry-After"] = str(error.retry_after)
    return response


def lockout_audit(sender, request, username: str | None, ip_address: str | None, **kwargs) -> None:
    """axes's ``user_locked_out`` signal: one audit row per username and address per cool-off.

    Axes signals again on each try during a lockout; the cache key keeps those out of the audit log.
    """
    if not cache.add(f"axes:audited:{username}:{ip_address}", 1, timeout=cooloff_seconds()):
        return
    audit_log_record(
        actor=f"sign-in from {ip_address or 'unknown address'}",
        action="auth.locked_out",
        target=AuditTarget(type="accounts.user", id=(username or "")[:64], repr=(username or "")[:255]),
        payload={"ip_address": ip_address, "path": request.path if request is not None else None},
    )
