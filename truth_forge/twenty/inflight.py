"""How many requests may be on the wire at once, and what the server's rate-limit headers say.

The token bucket (`transport.RequestBudget`) decides *when* a request may leave; this gate decides
*how many* may be waiting for their answers at the same time, so latency above the request slot is
not lost. The gate adapts like TCP's window: a 429 halves it for every worker at once, and each run of
answered requests as long as the window grows it by one again, up to the configured maximum. Like
TCP, it halves once per round: the 429s of requests that were already on the wire when it was
halved do not halve it again (a burst refused together is one signal, not eight).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType

DEFAULT_MAX_IN_FLIGHT = 8


class InFlightGate:
    """A counting gate whose width can shrink (on 429) and grow back (on answers) while in use."""

    def __init__(self, maximum: int = DEFAULT_MAX_IN_FLIGHT) -> None:
        if maximum < 1:
            raise ValueError("max_in_flight must be at least 1")
        self.maximum = maximum
        self.limit = maximum
        self.active = 0
        self.peak = 0  # the most requests ever on the wire at once (read by tests and benchmarks)
        self._answered = 0
        self.narrowed = 0  # how many times it was halved (read on entry, passed back to narrow)
        self._cond = threading.Condition()

    def __enter__(self) -> InFlightGate:
        with self._cond:
            while self.active >= self.limit:
                self._cond.wait()
            self.active += 1
            self.peak = max(self.peak, self.active)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        with self._cond:
            self.active -= 1
            self._cond.notify_all()

    def others(self) -> int:
        """Requests on the wire besides the caller's own (called from inside the gate)."""
        with self._cond:
            return max(0, self.active - 1)

    def narrow(self, since: int | None = None) -> None:
        """The server refused for rate: halve the window (never below one). `since`: the value of
        `narrowed` when the refused request entered; if it was halved after that, not again."""
        with self._cond:
            if since is not None and since != self.narrowed:
                return
            self.limit = max(1, self.limit // 2)
            self._answered = 0
            self.narrowed += 1

    def widen(self) -> None:
        """An answered request: one window's worth of them earns one more slot."""
        with self._cond:
            if self.limit >= self.maximum:
                return
            self._answered += 1
            if self._answered >= self.limit:
                self.limit += 1
                self._answered = 0
                self._cond.notify_all()


@dataclass(frozen=True)
class RateLimitHeaders:
    """`X-RateLimit-Limit` / `-Remaining`: Twenty's v2 limiter sends them with its 429, a gateway in
    front of Twenty may send them on every answer; legacy Twenty sends neither."""

    limit: int | None
    remaining: int | None

    @classmethod
    def read(cls, headers: Mapping[str, str]) -> RateLimitHeaders | None:
        limit, remaining = _int(headers.get("x-ratelimit-limit")), _int(headers.get("x-ratelimit-remaining"))
        if limit is None and remaining is None:
            return None
        return cls(limit, remaining)


def _int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(float(value.strip()))
    except ValueError:
        return None  # a header we cannot read tells us nothing; the bucket still paces us
