"""The next batch of a warehouse read, fetched on a thread of its own while the push writes this one.

Why it exists: reading a batch of changed rows (the engine's query, then change detection judging
each row) and handing the previous batch's answers over both happen on the push's thread. Without
this, a slow read (a new key range's query, a BigQuery round trip) runs while the push could have
been sending, and the request budget idles. With it, the engine works on the next batch while the
push maps, sends and records this one (DuckDB and BigQuery's client wait outside Python's lock).

Bounded: at most one batch is read ahead of the one the push works on. Safe: the reading thread
uses a warehouse handle of its own (`for_another_thread`), only one thread advances the iterator at
a time, and reading only reads (the push still records each request as its answer lands). An error
the read raises is raised on the push's thread where it asks for that batch, as it would have been
without the thread.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
_END = object()  # the read is over


class ReadAhead(Generic[T]):
    """Iterate `batches` one batch ahead, on a thread; `close()` when done (or stopping early).
    `prepare`, when given, is applied to each batch on that thread too (what the push can do with a
    batch before its own thread gets to it), and the iteration yields what it returns."""

    def __init__(self, batches: Iterable[Any], prepare: Callable[[Any], T] | None = None) -> None:
        self._batches = iter(batches)
        self._prepare = prepare
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="warehouse-read-ahead")
        self._next: Future[object] | None = self._thread.submit(self._read)

    def _read(self) -> object:
        batch = next(self._batches, _END)
        return batch if batch is _END or self._prepare is None else self._prepare(batch)

    def __iter__(self) -> Iterator[T]:
        return self

    def __next__(self) -> T:
        future, self._next = self._next, None
        if future is None:
            raise StopIteration
        batch = future.result()  # the read's own error, raised here on the push's thread
        if batch is _END:
            raise StopIteration
        self._next = self._thread.submit(self._read)  # the next one, while the caller works on this one
        return batch  # type: ignore[return-value]

    def close(self) -> None:
        """Wait for a read in progress (a query cannot be called back), then stop the thread. That
        read's error, if any, is logged: the push is stopping for a reason of its own, raised already."""
        pending, self._next = self._next, None
        if pending is not None and not pending.cancel():
            error = pending.exception()
            if error is not None:
                log.warning("Reading the next warehouse batch failed as the push stopped: %s", error)
        self._thread.shutdown(wait=True)
