"""A node's error policy (DSL ``error_policy``, its shape in ``dsl_v1.json``): timeout, retries, and what
happens once they are spent."""

import random
from dataclasses import dataclass, field
from typing import Any

from config.conf import weft_settings


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long apart a failing node is tried.

    ``max_attempts`` counts every attempt (1: no retry). The delay before attempt n+1 is
    ``initial_s`` (fixed) or ``initial_s * multiplier**(n-1)`` (exponential), at most ``max_s``;
    with ``jitter`` it is drawn uniformly from [delay/2, delay] so that failing runs do not retry
    in step. A ``Retry-After`` from the other side is honoured when it is longer (up to the
    engine's RETRY_MAX_DELAY_S).
    """

    max_attempts: int = 1
    backoff: str = "exponential"
    initial_s: float = 1.0
    max_s: float = 60.0
    multiplier: float = 2.0
    jitter: bool = True

    def delay(self, failed_attempt: int, retry_after: float | None = None) -> float:
        growth = 1.0 if self.backoff == "fixed" else self.multiplier ** (failed_attempt - 1)
        delay = min(self.initial_s * growth, self.max_s)
        if self.jitter:
            delay = random.uniform(delay / 2, delay)
        if retry_after is not None:
            delay = max(delay, retry_after)
        return min(delay, weft_settings.RETRY_MAX_DELAY_S)


@dataclass(frozen=True)
class ErrorPolicy:
    timeout_s: float | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    on_failure: str = "fail"
    default_output: dict = field(default_factory=dict)

    @classmethod
    def from_dsl(cls, data: dict[str, Any] | None) -> "ErrorPolicy":
        """Build from a validated ``error_policy``; absent keys take the defaults."""
        data = data or {}
        timeout = data.get("timeout_s", weft_settings.NODE_TIMEOUT_S)
        retry = data.get("retry") or {}
        return cls(
            timeout_s=timeout,
            retry=RetryPolicy(
                max_attempts=min(retry.get("max_attempts", 1), weft_settings.RETRY_MAX_ATTEMPTS),
                backoff=retry.get("backoff", "exponential"),
                initial_s=retry.get("initial_s", 1.0),
                max_s=retry.get("max_s", 60.0),
                multiplier=retry.get("multiplier", 2.0),
                jitter=retry.get("jitter", True),
            ),
            on_failure=data.get("on_failure", "fail"),
            default_output=data.get("default_output", {}),
        )
