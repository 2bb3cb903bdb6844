"""The engine's errors: one root, one subclass per way a node or a run can end badly.

A node raises :class:`RetryableError` for a failure that may pass (a 503, a reset connection,
a rate limit: give ``retry_after`` in seconds when the other side said how long to wait) and
:class:`NonRetryableError` for one that will not (a 4xx, bad input, a template that does not
render). Any other exception escaping ``execute`` is treated as retryable: the node's retry
policy decides how often.
"""


class EngineError(Exception):
    """Root of every error the engine raises or understands."""


class RetryableError(EngineError):
    """A failure that may pass if the node is tried again, after ``retry_after`` seconds if given."""

    def __init__(self, message: str, *, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class NonRetryableError(EngineError):
    """A failure that trying again will not fix: the node's on_failure applies at once."""


class NodeTimeout(RetryableError):
    """The node ran longer than its ``error_policy.timeout_s``."""


class RunCancelled(EngineError):
    """The run was cancelled while this node was running or waiting to retry."""


class InvalidGraph(EngineError):
    """A graph that does not validate was given to the executor."""

    def __init__(self, issues):
        super().__init__("; ".join(f"{issue.node or '-'} {issue.field}: {issue.message}" for issue in issues))
        self.issues = list(issues)
