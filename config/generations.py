"""Generations: a token per kind of data that every change to that data replaces, so that a process that
keeps some of it in memory knows, with one read, whether what it kept is still current.

With Redis the token is one key there (the key Django's cache would use), shared by every process;
without it (the embedded mode: one process) it is in the local-memory cache. A change replaces it
when the change is made and again when its transaction commits: whatever a reader kept under a
token it read before the commit is dropped at its next read. Tokens are random, never counted: a
key that vanishes (evicted, flushed) comes back as a token nobody kept anything under.
"""

import threading
import time
import uuid

from django.core.cache import cache
from django.db import transaction

from config.rate_limits import redis_cache_or_none
from config.redis_connection import redis_client

#: Apps, their licenses, workflows and their releases: what the app API checks on every call
#: (``licensing.access`` keeps them between calls).
ACCESS = "access"


def generation_key(name: str) -> str:
    """The cache key of ``name``'s token (``config.call_checks.call_checks_read`` reads it with others)."""
    return f"weft:generation:{name}"


def generation(name: str) -> str:
    """The current token of ``name`` (one is made if there is none)."""
    key = generation_key(name)
    redis_cache = redis_cache_or_none()
    if redis_cache is not None:
        client, key = redis_client(), redis_cache.make_key(key)
        token = client.get(key)
        if token is None:
            client.set(key, uuid.uuid4().hex, nx=True)
            token = client.get(key)
        return token.decode() if isinstance(token, bytes) else str(token)
    token = cache.get(key)
    if token is None:
        cache.add(key, uuid.uuid4().hex, timeout=None)
        token = cache.get(key)
    return str(token)


def generation_move(name: str) -> None:
    """``name``'s data changed: replace its token now, and again once the current transaction commits.

    Now, so that a reader in the same transaction (or a test that never commits) sees the change;
    again at the commit, so that what another process read in between, still the old rows, is not
    kept under the token it read.
    """
    _move(name)
    if transaction.get_connection().in_atomic_block:
        transaction.on_commit(lambda: _move(name), robust=True)


def _move(name: str) -> None:
    key, token = generation_key(name), uuid.uuid4().hex
    redis_cache = redis_cache_or_none()
    if redis_cache is not None:
        redis_client().set(redis_cache.make_key(key), token)
        return
    cache.set(key, token, timeout=None)


class GenerationCache:
    """Values kept in this process under the generation ``name``: a value kept under another token
    (its data changed since), older than ``ttl_s`` (None: no age limit) or lost when more than
    ``most`` were kept is loaded again. A caller reads the token once (:meth:`token`) and passes it
    to each :meth:`get` it makes for the same request."""

    def __init__(self, name: str, *, most: int, ttl_s: float | None = None):
        self.name, self.most, self.ttl_s = name, most, ttl_s
        self._kept: dict = {}
        self._lock = threading.Lock()

    def token(self) -> str:
        return generation(self.name)

    def get(self, key, load, *, token: str):
        """The value kept for ``key`` under ``token``, else ``load()``'s, kept."""
        entry = self._kept.get(key)
        now = time.monotonic()
        if entry is not None and entry[0] == token and (entry[1] is None or entry[1] >= now):
            return entry[2]
        value = load()
        expires = None if self.ttl_s is None else now + self.ttl_s
        with self._lock:
            if len(self._kept) >= self.most:
                self._kept.clear()
            self._kept[key] = (token, expires, value)
        return value
