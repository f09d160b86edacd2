"""A log of every API request the sandbox answered, for measuring what a sync costs.

Benchmarks and tests read it to count requests ("this push took 3 batch calls") instead of
guessing; entries carry the batch size so records-per-request can be computed too.
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class RequestLogEntry:
    seq: int
    at: float  # epoch seconds when the response finished
    method: str
    path: str
    query: str  # raw query string
    status: int | None  # None when the connection was dropped
    batch_size: int | None  # records in a create body (1 for a single create)
    duration_ms: float
    fault: str | None  # "drop" | "error" | "db_error" | "rate_limit" | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class RequestLog:
    def __init__(self, limit: int) -> None:
        self._lock = threading.Lock()
        self._entries: list[RequestLogEntry] = []
        self._seq = 0
        self._limit = limit

    def add(self, method: str, path: str, query: str, status: int | None,
            batch_size: int | None, duration_ms: float, fault: str | None) -> None:
        with self._lock:
            self._seq += 1
            self._entries.append(RequestLogEntry(self._seq, time.time(), method, path, query,
                                                 status, batch_size, duration_ms, fault))
            if len(self._entries) > self._limit:
                # Keep the newest entries; `seq` still tells how many were seen in total.
                del self._entries[: len(self._entries) - self._limit]

    def entries(self) -> list[RequestLogEntry]:
        with self._lock:
            return list(self._entries)

    def count(self, method: str | None = None, path_prefix: str | None = None) -> int:
        with self._lock:
            return sum(1 for e in self._entries
                       if (method is None or e.method == method.upper())
                       and (path_prefix is None or e.path.startswith(path_prefix)))

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._seq = 0
