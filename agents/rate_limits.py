"""Provider rate limits: requests a provider may receive, counted across every worker.

An operator sets them in the provider's ``metadata``::

    {"rate_limit": {"requests_per_minute": 60, "requests_per_second": 5, "max_wait_s": 2}}

Each limit is a window of :func:`config.rate_limits.rate_limit_hit` (Weft's one fixed-window
counter, shared by every worker through Redis). This module adds what is a provider's: reading the
limits from its metadata, taking a request from all of its windows at once, and waiting. Before
each model call the caller takes one request with :func:`provider_rate_limit_acquire`: when a
window is full it waits for the window to end if that is at most ``max_wait_s`` away (default 0),
otherwise it raises :class:`ProviderRateLimited`, a retryable engine error carrying
``retry_after``, so that the node's retry policy waits (without holding a worker thread) and tries
again.

The llm node and the agent node call it; so does a chat with an agent.
"""

import asyncio
from dataclasses import dataclass

from config.rate_limits import rate_limit_hit
from workflows.engine import RetryableError

#: The windows a limit may be given for: metadata key -> window length in seconds.
WINDOWS = {"requests_per_second": 1, "requests_per_minute": 60}


class ProviderRateLimited(RetryableError):
    """The provider's request limit is reached; try again after ``retry_after`` seconds."""


@dataclass(frozen=True)
class RateLimit:
    #: ``(limit, window_s)`` pairs, all of which a request must fit in.
    windows: tuple[tuple[int, int], ...]
    max_wait_s: float = 0.0


def provider_rate_limit(metadata) -> RateLimit | None:
    """The limit a provider's ``metadata`` sets, or None. Values that are not positive numbers are ignored."""
    config = metadata.get("rate_limit") if isinstance(metadata, dict) else None
    if not isinstance(config, dict):
        return None
    windows = []
    for name, window_s in WINDOWS.items():
        value = config.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool) and value >= 1:
            windows.append((int(value), window_s))
    if not windows:
        return None
    wait = config.get("max_wait_s", 0)
    max_wait_s = float(wait) if isinstance(wait, int | float) and not isinstance(wait, bool) and wait > 0 else 0.0
    return RateLimit(windows=tuple(windows), max_wait_s=max_wait_s)


def provider_rate_limit_hit(*, provider) -> float | None:
    """Take one request from every window of ``provider``'s limit: None if allowed, else seconds to wait.

    Blocking (it talks to the cache): call it from a thread in async code.
    """
    limit = provider_rate_limit(provider.metadata)
    if limit is None:
        return None
    decisions = [
        rate_limit_hit(key=f"provider:{provider.pk}", limit=count, window_s=window_s)
        for count, window_s in limit.windows
    ]
    waits = [decision.resets_in for decision in decisions if not decision.allowed]
    return max(waits) if waits else None


async def provider_rate_limit_acquire(*, provider, max_wait_s: float | None = None) -> None:
    """Wait for the provider's rate limit to allow one more request, or raise :class:`ProviderRateLimited`.

    It waits as long as the provider's ``max_wait_s`` (or the ``max_wait_s`` given) allows in all,
    then gives up with the time left until a request would fit as ``retry_after``.
    """
    limit = provider_rate_limit(provider.metadata)
    if limit is None:
        return
    budget = limit.max_wait_s if max_wait_s is None else max_wait_s
    waited = 0.0
    while True:
        retry_after = await asyncio.to_thread(provider_rate_limit_hit, provider=provider)
        if retry_after is None:
            return
        if waited + retry_after > budget:
            raise ProviderRateLimited(
                f"The rate limit of provider {provider.name!r} is reached; retry in {retry_after:.1f} s.",
                retry_after=retry_after,
            )
        await asyncio.sleep(retry_after)
        waited += retry_after
