"""Throttles of the endpoints anyone can reach (signing in, the app API): calls per client address.

A view names its ``throttle_scope``; the rate is ``REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"][scope]``
(``"30/min"``: a count per second, minute, hour or day). Calls are counted in fixed windows with
the cache's atomic increment, which is Redis in production, so every server shares the count.
Over the rate, the answer is the API's 429 (``code`` ``throttled``, the ``throttle``, its ``limit``,
``window_s`` and ``retry_after``, and a ``Retry-After`` header).
"""

from django.core.exceptions import ImproperlyConfigured
from rest_framework.settings import api_settings
from rest_framework.throttling import BaseThrottle

from config.errors import RateLimited
from config.rate_limits import rate_limit_hit

_PERIODS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def throttle_rate_parse(rate: str) -> tuple[int, int]:
    """``"30/min"`` → (30, 60): the calls allowed and the window in seconds."""
    count, _, period = rate.partition("/")
    if not count.isdigit() or period[:1] not in _PERIODS:
        raise ImproperlyConfigured(f"A throttle rate looks like 30/min (per s, min, hour or day), not {rate!r}.")
    return int(count), _PERIODS[period[:1]]


class ClientAddressThrottle(BaseThrottle):
    """At most the scope's rate of calls per client address.

    The address is ``REMOTE_ADDR``, never an ``X-Forwarded-For`` the client could write itself:
    behind a trusted proxy (``WEFT_TRUSTED_PROXIES``), config/proxy.py puts there the address that
    proxy saw.
    """

    def allow_request(self, request, view) -> bool:
        hit = self.hit(request, view)
        if hit is None:
            return True
        key, limit, window_s = hit
        # Counted already if the view read it with its other checks (the app API: one round trip)
        decision = getattr(request, "weft_address_decision", None) or rate_limit_hit(
            key=key, limit=limit, window_s=window_s
        )
        if not decision.allowed:
            scope = view.throttle_scope
            raise RateLimited(
                f"Too many requests: {limit} per {window_s} s are allowed from one address here.",
                code="throttled",
                retry_after=decision.retry_after,
                throttle=scope,
                limit=limit,
                window_s=window_s,
            )
        return True

    @staticmethod
    def hit(request, view) -> tuple[str, int, int] | None:
        """The hit a call counts: its key, the limit and the window (s); None if the view's scope has no rate."""
        scope = getattr(view, "throttle_scope", None)
        rate = api_settings.DEFAULT_THROTTLE_RATES.get(scope) if scope else None
        if not rate:
            return None
        limit, window_s = throttle_rate_parse(rate)
        address = request.META.get("REMOTE_ADDR") or "unknown"
        return f"throttle:{scope}:{address}", limit, window_s
