"""The one fixed-window counter of Weft: throttles, app API limits and provider limits all count here.

A window is ``window_s`` seconds of wall time, cut the same way by every process
(``floor(now / window_s)``), and its count is one key in Django's cache: with ``REDIS_URL`` that
is Redis, whose ``INCR`` is atomic, so any number of workers on any number of machines share one
count; without it, the local-memory cache (one process, one count, under its lock).

With Redis a hit is one round trip: ``INCR`` (which starts a vanished key at 1) and ``EXPIRE NX``
in one pipeline, on the key Django's cache would use (``cache.make_key``). Without it, a key can
vanish between the ``add`` that creates it and the ``incr`` that counts (the local-memory cache
culls it when it holds ``MAX_ENTRIES`` keys); Django's ``incr`` then raises ``ValueError`` and the
window is started again, so the caller gets a decision, never a 500. What an evicted key had
counted is lost: the limiter errs on allowing, it never refuses more than ``limit`` would.
"""

import logging
import math
import time
from dataclasses import dataclass

from django.core.cache import cache, caches
from django.core.cache.backends.redis import RedisCache

from config.redis_connection import redis_client

logger = logging.getLogger(__name__)

#: The key is kept a little past its window, so that a late ``incr`` still finds it.
KEY_GRACE_S = 5
#: How often a vanished key is created again before the hit is let through uncounted.
EVICTED_RETRIES = 3


def _now() -> float:
    """The clock the windows are cut from (wall time: every process must agree on it)."""
    return time.time()


@dataclass(frozen=True)
class RateDecision:
    allowed: bool
    #: Hits counted in this window, this one included.
    count: int
    limit: int
    #: Seconds until this window ends and a new count starts.
    resets_in: float

    @property
    def remaining(self) -> int:
        return max(0, self.limit - self.count)

    @property
    def retry_after(self) -> int:
        """Whole seconds for a ``Retry-After`` header: never 0, never before the window ends."""
        return max(1, math.ceil(self.resets_in))


def rate_limit_hit(*, key: str, limit: int, window_s: int = 60) -> RateDecision:
    """Count one hit against ``limit`` per ``window_s`` seconds for ``key``."""
    window = RateWindow(key=key, window_s=window_s)
    return window.decision(count=_window_count(window.cache_key, timeout=window_s + KEY_GRACE_S), limit=limit)


class RateWindow:
    """The fixed window a hit of ``key`` counts in now: its cache key, and the decision for a count in it."""

    def __init__(self, *, key: str, window_s: int):
        self.now = _now()
        self.window = math.floor(self.now / window_s)
        self.window_s = window_s
        self.cache_key = f"weft:rl:{key}:{window_s}:{self.window}"

    def decision(self, *, count: int, limit: int) -> RateDecision:
        resets_in = max((self.window + 1) * self.window_s - self.now, 0.001)
        return RateDecision(allowed=count <= limit, count=count, limit=limit, resets_in=resets_in)


def _window_count(cache_key: str, *, timeout: int) -> int:
    """Add one to the window's count and return it, creating the key again if it was evicted."""
    redis_cache = redis_cache_or_none()
    if redis_cache is not None:
        pipeline = redis_client().pipeline(transaction=False)
        key = redis_cache.make_key(cache_key)
        pipeline.incr(key)
        pipeline.expire(key, timeout, nx=True)
        count, _ = pipeline.execute()
        return int(count)
    for _ in range(EVICTED_RETRIES):
        cache.add(cache_key, 0, timeout=timeout)
        try:
            return cache.incr(cache_key)
        except ValueError:
            continue  # evicted between add and incr: whoever adds it next starts the count again
    logger.warning(
        "Rate-limit key %s was evicted %s times in a row; the hit is not counted.", cache_key, EVICTED_RETRIES
    )
    return 1


def flag_key(key: str) -> str:
    """The cache key of the flag ``key``."""
    return f"weft:flag:{key}"


def flag_raise(*, key: str, seconds: int) -> None:
    """Raise a flag every process sees for ``seconds`` (an address blocked after too many failures, say)."""
    cache.set(flag_key(key), True, timeout=seconds)


def flag_raised(*, key: str) -> bool:
    """Whether the flag ``key`` is up: with Redis one ``EXISTS`` (a check made on every call)."""
    redis_cache = redis_cache_or_none()
    if redis_cache is not None:
        return bool(redis_client().exists(redis_cache.make_key(flag_key(key))))
    return bool(cache.get(flag_key(key)))


def redis_cache_or_none() -> RedisCache | None:
    """Django's cache when it is Redis: its keys are then read and written with one Redis command."""
    default = caches["default"]
    return default if isinstance(default, RedisCache) else None
