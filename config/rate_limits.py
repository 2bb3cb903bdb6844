"""Fixed-window counters through Django's cache: atomic across workers with Redis, in-process otherwise."""

import time
from dataclasses import dataclass

from django.core.cache import cache


@dataclass(frozen=True)
class RateDecision:
    allowed: bool
    retry_after: int
    remaining: int


def rate_limit_hit(*, key: str, limit: int, window_s: int = 60) -> RateDecision:
    """Count one hit against ``limit`` per ``window_s`` seconds for ``key``."""
    now = time.time()
    window = int(now // window_s)
    cache_key = f"weft:rl:{key}:{window}"
    cache.add(cache_key, 0, timeout=window_s + 5)
    count = cache.incr(cache_key)
    retry_after = max(1, int(window_s - (now % window_s)))
    return RateDecision(allowed=count <= limit, retry_after=retry_after, remaining=max(0, limit - count))
