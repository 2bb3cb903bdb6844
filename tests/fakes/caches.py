"""Local-memory caches that lose keys the way a full cache does, for the rate limiter's tests."""

import uuid

from django.core.cache.backends.locmem import LocMemCache

RATE_LIMIT_PREFIX = "weft:rl:"


class CullingCache(LocMemCache):
    """A full local-memory cache: whenever a rate-limit key is added, another process adds a key
    right after, and LocMemCache's own culling (with MAX_ENTRIES 1, CULL_FREQUENCY 1) throws the
    rate-limit key out before it is incremented, as happens under load."""

    def add(self, key, value, timeout=None, version=None):
        added = super().add(key, value, timeout, version)
        if key.startswith(RATE_LIMIT_PREFIX):
            super().add(f"someone-else:{uuid.uuid4()}", 1, timeout, version)
        return added


class EvictOnce(LocMemCache):
    """A rate-limit key is evicted once, between its add and its incr; later ones survive."""

    evictions_left = 0

    def add(self, key, value, timeout=None, version=None):
        added = super().add(key, value, timeout, version)
        if key.startswith(RATE_LIMIT_PREFIX) and EvictOnce.evictions_left > 0:
            EvictOnce.evictions_left -= 1
            self.delete(key, version)
        return added


def cache_use(settings, backend: type, **options) -> None:
    """Make ``backend`` the default cache, in a local memory of its own (not shared with other tests)."""
    path = f"{backend.__module__}.{backend.__qualname__}"
    settings.CACHES = {"default": {"BACKEND": path, "LOCATION": f"test-{uuid.uuid4()}", "OPTIONS": options}}
