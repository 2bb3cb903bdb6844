"""One Redis connection pool per process, for the counters and locks that must be shared by workers."""

from functools import lru_cache

import redis
from django.conf import settings


@lru_cache(maxsize=1)
def redis_client() -> redis.Redis:
    if not settings.REDIS_URL:
        raise RuntimeError("REDIS_URL is not set: embedded mode has no Redis.")
    return redis.Redis.from_url(settings.REDIS_URL, health_check_interval=30)
