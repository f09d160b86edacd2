"""Worker threads that carry requests to Twenty, so several can wait for their answers at once.

Workers only talk HTTP (through the one transport, whose gate and token bucket govern them all);
everything the caller does with an answer (matching, bookkeeping, the warehouse) stays on the
caller's thread, which reads the futures back in the order it submitted them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


class RequestPool:
    """A small thread pool, started on first use, one per client."""

    def __init__(self, size: int) -> None:
        self.size = max(1, size)
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def submit(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Future[T]:
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=self.size, thread_name_prefix="twenty-request")
            return self._executor.submit(fn, *args, **kwargs)

    def close(self) -> None:
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)


def settle(futures: Iterable[Future[Any]]) -> None:
    """Stop what has not started and wait for what has: a request on the wire cannot be called back,
    and its answer must still be read (it may have stored records)."""
    pending = list(futures)
    for future in pending:
        future.cancel()
    for future in pending:
        if not future.cancelled():
            future.exception()  # waits; the caller reads the outcome itself
