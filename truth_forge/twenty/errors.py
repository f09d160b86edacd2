"""Typed errors from the Twenty API, sorted by what the caller should do next.

Every error keeps the evidence a person needs to act (HTTP status, Twenty's own messages, a body
excerpt, the request id when the server sent one) and never the API key: messages are built from
the response, and the transport redacts the key from anything it quotes.
"""

from __future__ import annotations

from enum import Enum
from typing import Any


class NextStep(str, Enum):
    """What a caller can usefully do about an error."""

    RETRY = "retry"  # the same request may succeed later (rate limit, outage)
    FIX_CONFIG = "fix_config"  # key, permissions, URL or workspace setup is wrong; retrying will not help
    SKIP_RECORD = "skip_record"  # this record was rejected; others can go on


class TwentyError(Exception):
    """Base of every error raised for a Twenty request."""

    next_step: NextStep = NextStep.RETRY

    def __init__(
        self,
        summary: str,
        *,
        status: int | None = None,
        method: str | None = None,
        path: str | None = None,
        messages: list[str] | None = None,
        error_code: str | None = None,
        body_excerpt: str | None = None,
        request_id: str | None = None,
    ) -> None:
        self.summary = summary
        self.status = status
        self.method = method
        self.path = path
        self.messages = messages or []
        self.error_code = error_code
        self.body_excerpt = body_excerpt
        self.request_id = request_id
        super().__init__(self._describe())

    def _describe(self) -> str:
        parts = [self.summary]
        if self.method and self.path:
            parts.append(f"({self.method} {self.path}" + (f" -> {self.status})" if self.status else ")"))
        if self.messages:
            parts.append("Twenty says: " + "; ".join(self.messages))
        if self.request_id:
            parts.append(f"request id {self.request_id}")
        return " ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view for error rows and reports."""
        return {
            "error_class": type(self).__name__,
            "next_step": self.next_step.value,
            "message": str(self),
            "status": self.status,
            "error_code": self.error_code,
            "messages": list(self.messages),
            "request_id": self.request_id,
        }


class TwentyConfigError(TwentyError):
    """Wrong key, missing permission, wrong URL, exhausted plan: a person must fix the setup."""

    next_step = NextStep.FIX_CONFIG


class TwentyAuthError(TwentyConfigError):
    """401/403: the key is missing, invalid, expired or lacks the permission."""


class TwentyQuotaExhausted(TwentyConfigError):
    """402: the workspace's usage quota or credit allowance is spent (newer servers' usage limits).
    Sending again changes nothing until the period ends or the plan changes, so it is never retried."""

    def __init__(self, summary: str, *, retry_after_s: int | None = None, **kwargs: Any) -> None:
        self.retry_after_s = retry_after_s  # when Twenty says the period ends, if it said
        super().__init__(summary, **kwargs)


class TwentyFieldsCapped(TwentyConfigError):
    """A read answered with `X-Twenty-Fields-Capped`: Twenty left fields out of every record."""


class TwentySchemaMismatch(TwentyConfigError):
    """400 naming a field the workspace does not have: every record would be refused alike."""


class TwentyRequestTooLong(TwentyConfigError):
    """414/431: a proxy or Twenty's server refused the request line (or headers) as too long, as it
    will every time; `TRUTH_FORGE_TWENTY_MAX_REQUEST_LINE` sets how long the client makes them."""


class TwentyRecordRejected(TwentyError):
    """400: Twenty refused this input (bad value, duplicate unique value...)."""

    next_step = NextStep.SKIP_RECORD

    @property
    def is_duplicate(self) -> bool:
        """A unique value (email, domain, external id, id) is already taken, live or soft-deleted."""
        text = " ".join(self.messages) or self.summary
        return any(marker in text for marker in DUPLICATE_MARKERS)


# How Twenty words a unique violation: the ORM's message, and the older "id already exists" one.
DUPLICATE_MARKERS = ("duplicate entry", "Duplicate", "already exists", "duplicate key value")


class TwentyConflict(TwentyRecordRejected):
    """409: the request conflicts with the workspace's current state (Nest's ConflictException;
    Twenty uses it where something the request would create already exists or changed meanwhile).
    Not retried as it is: the next run reads the state again and decides anew."""


class TwentyNotFound(TwentyError):
    """404: the record (or route) does not exist."""

    next_step = NextStep.SKIP_RECORD


class TwentyRateLimited(TwentyError):
    """429 that outlasted every retry."""

    next_step = NextStep.RETRY


class TwentyTransientError(TwentyError):
    """5xx, timeouts and broken connections that outlasted every retry, or that could not be retried safely."""

    next_step = NextStep.RETRY

    def __init__(self, summary: str, *, maybe_applied: bool = False, **kwargs: Any) -> None:
        # True when the request reached the server and its outcome is unknown (e.g. a create whose
        # answer was lost): the caller must check before sending it again.
        self.maybe_applied = maybe_applied
        super().__init__(summary, **kwargs)


class TwentyProtocolError(TwentyError):
    """The server answered 2xx with something that is not Twenty's envelope (wrong URL? proxy page?)."""

    next_step = NextStep.FIX_CONFIG
