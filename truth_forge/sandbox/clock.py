"""Timestamps the way Twenty serialises them, strictly increasing, and the HTTP Date header.

Incremental pulls filter on `updatedAt[gte]:<watermark>`; if two writes share a millisecond a
client cannot tell them apart, so the sandbox never hands out the same timestamp twice. The Date
header is read from the same clock (offset included), so a client can trust it as the server's
time in the same frame as `updatedAt`.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from email.utils import formatdate

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def format_ms(epoch_ms: int) -> str:
    """ISO-8601 with milliseconds and `Z`, as JavaScript's Date.toISOString() writes it."""
    dt = datetime.fromtimestamp(epoch_ms / 1000, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{epoch_ms % 1000:03d}Z"


def http_date(epoch_ms: int) -> str:
    """RFC 7231 IMF-fixdate (`Tue, 15 Nov 1994 08:12:31 GMT`), as Node's http module sends it."""
    return formatdate(epoch_ms // 1000, usegmt=True)


class MonotonicClock:
    """Wall-clock milliseconds (plus `offset_ms`), bumped by 1 ms whenever the wall clock has not
    moved on."""

    def __init__(self, offset_ms: int = 0) -> None:
        self._lock = threading.Lock()
        self._last_ms = 0
        self.offset_ms = offset_ms
        self._frozen = False

    def freeze(self, frozen: bool = True) -> None:
        """While frozen every write gets the same timestamp: what one large import committed in
        one transaction looks like in Twenty (more rows than one request may carry, one
        `updatedAt`). Thawed, the clock goes on after that timestamp."""
        with self._lock:
            if frozen and not self._frozen:
                self._last_ms = max(self._wall_ms(), self._last_ms + 1)
            self._frozen = frozen

    def _wall_ms(self) -> int:
        return time.time_ns() // 1_000_000 + self.offset_ms

    def now_ms(self) -> int:
        with self._lock:
            if not self._frozen:
                self._last_ms = max(self._wall_ms(), self._last_ms + 1)
            return self._last_ms

    def peek_ms(self) -> int:
        """The current time without taking a timestamp: never before one already handed out."""
        with self._lock:
            return self._last_ms if self._frozen else max(self._wall_ms(), self._last_ms)

    def http_date(self) -> str:
        return http_date(self.peek_ms())

    def now_iso(self) -> str:
        return format_ms(self.now_ms())

    def observe(self, iso: str | None) -> None:
        """After loading persisted rows, never hand out a timestamp older than they carry."""
        if not iso:
            return
        ms = parse_iso_ms(iso)
        if ms is not None:
            with self._lock:
                self._last_ms = max(self._last_ms, ms)


def parse_iso_ms(value: str) -> int | None:
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    # Integer arithmetic: float timestamps can land one millisecond short.
    return (dt - _EPOCH) // timedelta(milliseconds=1)
