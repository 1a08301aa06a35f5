"""Typed call errors: the retry loop retries only what can succeed on a second try."""
from __future__ import annotations


class CallError(Exception):
    """A failed backend call. `retryable` decides whether the retry loop tries again."""

    retryable = True
    kind = "error"

    def __init__(self, message: str, *, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class RateLimited(CallError):
    kind = "rate_limit"


class CallTimeout(CallError):
    kind = "timeout"


class ConnectionFailed(CallError):
    """Refused, reset or dropped before a reply: a wrong --api-base, or a server that is down."""

    kind = "connection"


class ServerError(CallError):
    kind = "server"


class BadOutput(CallError):
    """The provider answered, but not with something we can read (malformed JSON, missing choices)."""

    kind = "bad_output"


class BadRequest(CallError):
    """The request itself is wrong (4xx other than 429, auth, unknown model): retrying cannot help."""

    retryable = False
    kind = "bad_request"


# What an error row's `error_cause` can be, beyond the call errors' kinds above.
INPUT_CAUSE = "input"        # a malformed line, a missing or unreadable image: rerunning cannot help
INTERNAL_CAUSE = "internal"  # an unexpected exception in stagewise or a graph
RETRYABLE_CAUSES = frozenset({"rate_limit", "timeout", "connection", "server", "bad_output", "bad_request",
                              "error"})  # the provider's or the network's: a rerun retries these


class UsageError(Exception):
    """Bad command-line usage or configuration; the CLI prints it on one line and exits 2."""
