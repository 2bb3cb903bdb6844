"""Errors a caller can act on.

Services raise these; the API's exception handler turns each into its 4xx with a ``code`` and,
where one input is at fault, the ``field``. Views never catch them one by one.
"""

from datetime import datetime


class WeftError(Exception):
    status_code = 400
    default_code = "invalid"

    def __init__(self, message: str, *, field: str | None = None, code: str | None = None, **extra):
        super().__init__(message)
        self.message = message
        self.field = field
        self.code = code or self.default_code
        self.extra = extra

    def as_dict(self) -> dict:
        body = {"detail": self.message, "code": self.code}
        if self.field:
            body["field"] = self.field
        body.update(self.extra)
        return body


class InvalidInput(WeftError):
    status_code = 400
    default_code = "invalid"


class Forbidden(WeftError):
    status_code = 403
    default_code = "forbidden"


class NotFound(WeftError):
    status_code = 404
    default_code = "not_found"


class Conflict(WeftError):
    status_code = 409
    default_code = "conflict"


class RateLimited(WeftError):
    status_code = 429
    default_code = "rate_limited"

    def __init__(self, message: str, *, retry_after: int, **kwargs):
        super().__init__(message, retry_after=retry_after, **kwargs)
        self.retry_after = retry_after


class QuotaExceeded(RateLimited):
    """A quota that frees up with time is used up (runs a day, runs at once): 429 naming it, its
    limit and when it resets (``resets_at``, null when it frees up as runs end)."""

    default_code = "quota_exceeded"

    def __init__(self, message: str, *, quota: str, limit: int, retry_after: int, resets_at: datetime | None = None):
        resets = resets_at.isoformat() if resets_at is not None else None
        super().__init__(message, retry_after=retry_after, quota=quota, limit=limit, resets_at=resets)


class QuotaLimitReached(Forbidden):
    """A count quota is reached (workflows owned): 403 naming it and its limit; it frees up only
    when something is deleted, so ``resets_at`` is null."""

    default_code = "quota_exceeded"

    def __init__(self, message: str, *, quota: str, limit: int):
        super().__init__(message, quota=quota, limit=limit, resets_at=None)
