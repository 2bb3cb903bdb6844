"""One round trip for the checks a call makes before it is served (the app API's, on every call)."""

from dataclasses import dataclass

from config.generations import generation, generation_key
from config.rate_limits import (
    KEY_GRACE_S,
    RateDecision,
    RateWindow,
    flag_key,
    flag_raised,
    rate_limit_hit,
    redis_cache_or_none,
)
from config.redis_connection import redis_client


@dataclass(frozen=True)
class CallChecks:
    """What :func:`call_checks_read` read: whether the flag is up, the generations' tokens by name, and
    the decision of the rate-limit hit it counted (None if it was asked for none)."""

    flag_up: bool
    tokens: dict[str, str]
    hit: RateDecision | None


def call_checks_read(*, flag: str, generations: list[str], hit: tuple[str, int, int] | None) -> CallChecks:
    """What a call checks before it is served, in one round trip with Redis: whether the flag ``flag``
    is up (``flag_raised``), the tokens of ``generations`` (``config.generations``), and one hit
    (key, limit, window in seconds) counted as ``rate_limit_hit`` counts it. Without Redis each
    is read as it is alone."""
    redis_cache = redis_cache_or_none()
    if redis_cache is None:
        decision = None if hit is None else rate_limit_hit(key=hit[0], limit=hit[1], window_s=hit[2])
        return CallChecks(flag_raised(key=flag), {name: generation(name) for name in generations}, decision)
    pipeline = redis_client().pipeline(transaction=False)
    pipeline.exists(redis_cache.make_key(flag_key(flag)))
    for name in generations:
        pipeline.get(redis_cache.make_key(generation_key(name)))
    window = None
    if hit is not None:
        key, _, window_s = hit
        window = RateWindow(key=key, window_s=window_s)
        counted = redis_cache.make_key(window.cache_key)
        pipeline.incr(counted)
        pipeline.expire(counted, window_s + KEY_GRACE_S, nx=True)
    replies = pipeline.execute()
    tokens = {}
    for name, token in zip(generations, replies[1 : 1 + len(generations)], strict=True):
        # None: the token vanished (evicted, flushed): made again as generation() makes it
        tokens[name] = generation(name) if token is None else token.decode()
    decision = None if window is None else window.decision(count=int(replies[1 + len(generations)]), limit=hit[1])
    return CallChecks(bool(replies[0]), tokens, decision)
