"""Batch writes with several requests on the wire: chunks cut from a stream of records, sent by the
request pool, their answers handed back on the caller's thread in the order the chunks were cut.

Why the order matters: the sync keeps its bookkeeping in `on_write`, on a warehouse connection that is
not thread-safe, so every callback runs on the caller's thread, one request's records at a time, in
chunk order (the same sequence a one-request-at-a-time writer would give). It saves what it kept in
`on_pause`, which runs once answers were handed over, before the stream waits for the next one or
returns to the caller: answers back at the same moment are saved together, none through a wait.
Why the keys matter: two writes to one record on the wire at once could land in either order, so a
chunk that names a key still on the wire waits for that chunk's answer first, and one request never
names a key twice.

Failure semantics are those of `RecordsApi.create_many`: a chunk Twenty refuses because of one record
is split (by the worker that sent it) until the bad records stand alone; a refusal for a taken unique
value on a plain create fails the whole chunk, unsplit; a chunk whose request failed as a whole
(outage, auth) is reported through `on_abort`, which says whether the stream goes on. A stream that
stops cancels what has not left and still hands over what the requests already on the wire stored.
A process told to stop (SIGTERM, `truth_forge/core/shutdown.py`) stops the stream the same way: a chunk
being split when it happens still hands over the parts that landed, then `RunStopped` is raised.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Protocol

from truth_forge.core.shutdown import RunStopped
from truth_forge.twenty.envelope import data_of
from truth_forge.twenty.errors import TwentyError, TwentyProtocolError, TwentyRecordRejected
from truth_forge.twenty.pool import RequestPool, settle
from truth_forge.twenty.transport import Transport

log = logging.getLogger(__name__)


class ChunkApi(Protocol):
    """What a stream needs of the records API (`RecordsApi` is one): its transport, its batch size, and
    the smaller size a refusal teaches. Named here so this module need not import the API that builds streams."""

    transport: Transport

    @property
    def batch_size(self) -> int: ...

    def learn_max_batch(self, exc: TwentyError) -> int | None: ...

Landed = list[tuple[int, dict[str, Any]]]
OnWrite = Callable[[Landed], None]
# Called when the stream is about to wait for an answer or go back to its caller, after answers were
# handed over: where a caller that keeps several answers' bookkeeping together saves it.
OnPause = Callable[[], None]


@dataclass
class RecordFailure:
    """One input record Twenty would not take, with its position in the caller's list."""

    index: int
    record: dict[str, Any]
    error: TwentyError


OnFailures = Callable[[list[RecordFailure]], None]
# (the error, the chunk's first index, the indexes of the chunk that were not stored) -> go on?
OnAbort = Callable[[TwentyError, int, list[int]], bool]


@dataclass
class _ChunkResult:
    """What one chunk's requests did, in the order they were sent."""

    first: int
    landed: list[Landed] = field(default_factory=list)  # one entry per request that stored records
    failures: list[RecordFailure] = field(default_factory=list)
    aborted: TwentyError | None = None
    not_stored: list[int] = field(default_factory=list)
    requests: int = 0
    stopped: RunStopped | None = None  # the process was told to stop before the chunk was all sent


class _ChunkWriter:
    """Runs on a worker: sends one chunk, splitting a refused one down to its bad records."""

    def __init__(self, api: ChunkApi, plural: str, upsert: bool, key: str | None) -> None:
        self.api, self.upsert, self.key = api, upsert, key
        self.path = f"/rest/batch/{plural}"

    def run(self, chunk: list[tuple[int, dict[str, Any]]]) -> _ChunkResult:
        result = _ChunkResult(first=chunk[0][0])
        try:
            self._write(chunk, result)
        except TwentyError as exc:
            result.aborted = exc
            done = {i for landed in result.landed for i, _ in landed} | {f.index for f in result.failures}
            result.not_stored = [i for i, _ in chunk if i not in done]
        except RunStopped as stop:
            result.stopped = stop  # what landed before is still handed over
        return result

    def _write(self, chunk: list[tuple[int, dict[str, Any]]], result: _ChunkResult) -> None:
        params = {"upsert": "true"} if self.upsert else None
        result.requests += 1
        try:
            body = self.api.transport.request("POST", self.path, params=params,
                                              json_body=[record for _, record in chunk], idempotent=self.upsert)
        except TwentyRecordRejected as exc:
            self._split(chunk, exc, result)
            return
        created = data_of(body, "POST", self.path)
        if not isinstance(created, list):
            raise TwentyProtocolError("Twenty's batch answer holds no list of records", method="POST", path=self.path)
        self._match(chunk, created, result)

    def _split(self, chunk: list[tuple[int, dict[str, Any]]], exc: TwentyRecordRejected, result: _ChunkResult) -> None:
        smaller = self.api.learn_max_batch(exc)
        if smaller is not None and smaller < len(chunk):
            # Refused for its size: nothing of it was stored, so each part is sent exactly once.
            for part in range(0, len(chunk), smaller):
                self._write(chunk[part : part + smaller], result)
            return
        if not self.upsert and exc.is_duplicate:
            # A create refused for a taken unique value: the caller finds the holders in one read,
            # which costs less than splitting the batch down to them.
            result.failures.extend(RecordFailure(i, record, exc) for i, record in chunk)
            return
        if len(chunk) > 1:
            # One bad record fails the whole batch: split it to find the bad ones and save the rest.
            middle = len(chunk) // 2
            self._write(chunk[:middle], result)
            self._write(chunk[middle:], result)
            return
        result.failures.append(RecordFailure(chunk[0][0], chunk[0][1], exc))

    def _match(self, chunk: list[tuple[int, dict[str, Any]]], created: list[Any], result: _ChunkResult) -> None:
        if self.key is None:
            if len(created) != len(chunk):
                raise TwentyProtocolError(f"Twenty returned {len(created)} records for a batch of {len(chunk)}",
                                          method="POST", path=self.path)
            pairs = [(i, record, answer) for (i, record), answer in zip(chunk, created)]
        else:
            key = self.key
            by_key = {str(r.get(key)): r for r in created if isinstance(r, dict)}
            pairs = [(i, record, by_key.get(str(record.get(key)))) for i, record in chunk]
        landed: Landed = []
        for i, record, answer in pairs:
            if answer is None:
                result.failures.append(RecordFailure(i, record, TwentyProtocolError(
                    f"Twenty's answer holds no record with {self.key}={record.get(self.key or 'id')!r}",
                    method="POST", path=self.path)))
            else:
                landed.append((i, answer))
        if landed:
            result.landed.append(landed)


class BatchStream:
    """Feed records with `add`, end with `finish`; use as a context manager so a stream left by an
    exception stops cleanly. Indexes count every record ever added, from 0."""

    def __init__(self, api: ChunkApi, pool: RequestPool, plural: str, *, upsert: bool, key: str | None,
                 on_write: OnWrite | None = None, on_failures: OnFailures | None = None,
                 on_abort: OnAbort | None = None, on_pause: OnPause | None = None,
                 window: int | None = None) -> None:
        self.api, self.pool, self.key = api, pool, key
        self.on_write, self.on_failures, self.on_abort = on_write, on_failures, on_abort
        self.on_pause = on_pause
        self._handed_over = False  # answers handed over since on_pause last ran
        self.writer = _ChunkWriter(api, plural, upsert, key)
        # Chunks cut but not yet handed over; beyond the workers so a slow head does not idle them.
        self.window = window or 2 * pool.size
        self.next_index = 0
        self.requests = 0
        self.stopped = False
        self._pending: list[tuple[int, dict[str, Any]]] = []
        self._pending_keys: set[str] = set()
        self._flight: deque[tuple[Future[_ChunkResult], set[str]]] = deque()
        self._busy: set[str] = set()  # keys of every chunk cut and not yet handed over

    def add(self, records: Sequence[dict[str, Any]]) -> None:
        for record in records:
            if self.stopped:
                return
            key = None if self.key is None else str(record.get(self.key))
            if key is not None and key in self._pending_keys:
                self._cut()  # one request never names a record twice
            self._pending.append((self.next_index, record))
            self.next_index += 1
            if key is not None:
                self._pending_keys.add(key)
            if len(self._pending) >= self.api.batch_size:
                self._cut()
        self._hand_over_answered()
        self._pause()

    def finish(self) -> None:
        """Send what is left and hand every answer over. Each time the next answer is not back yet,
        the transport's `while_waiting` runs first (the caller's bookkeeping of the answers handed
        over so far, done while the rest are on the wire instead of after the last one)."""
        if self._pending and not self.stopped:
            self._cut()
        while self._flight:
            idle = self.api.transport.while_waiting
            if not self._flight[0][0].done():
                self._pause()
                if idle is not None and not self.stopped:
                    idle()
            self._hand_over_head()
        self._pause()

    def __enter__(self) -> BatchStream:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc is not None:
            self._stop(deliver=isinstance(exc, Exception))

    # -- inside -----------------------------------------------------------------------------------

    def _cut(self) -> None:
        chunk, keys = self._pending, self._pending_keys
        self._pending, self._pending_keys = [], set()
        if not chunk:
            return
        while self._flight and (keys & self._busy or len(self._flight) >= self.window):
            self._hand_over_head()
            if self.stopped:
                return
        self._busy |= keys
        self._flight.append((self.pool.submit(self.writer.run, chunk), keys))

    def _hand_over_answered(self) -> None:
        """Hand over the answers already back, in order, without waiting for one."""
        while self._flight and self._flight[0][0].done():
            self._hand_over_head()

    def _pause(self) -> None:
        if self._handed_over:
            self._handed_over = False
            if self.on_pause is not None:
                self.on_pause()

    def _hand_over_head(self) -> None:
        if not self._flight[0][0].done():
            self._pause()  # never wait for an answer with the ones handed over before it unsaved
        future, keys = self._flight.popleft()
        try:
            result = future.result()
        finally:
            self._busy -= keys
        self.requests += result.requests
        self._handed_over = True
        for landed in result.landed:
            if self.on_write is not None:
                self.on_write(landed)
        if result.failures and self.on_failures is not None:
            self.on_failures(result.failures)
        if result.stopped is not None:
            self._stop(deliver=True)
            raise result.stopped
        if result.aborted is not None:
            go_on = self.on_abort(result.aborted, result.first, result.not_stored) if self.on_abort else False
            if not go_on:
                self._stop(deliver=True)

    def _stop(self, *, deliver: bool) -> None:
        """Send nothing more; hand over what the requests already on the wire stored."""
        self.stopped = True
        self._pending, self._pending_keys = [], set()
        flight, self._flight = list(self._flight), deque()
        self._busy.clear()
        settle(future for future, _ in flight)
        if not deliver:
            return  # interrupted (Ctrl-C): the next run claims by key whatever landed unrecorded
        for future, _ in flight:
            if future.cancelled() or future.exception() is not None:
                continue
            result = future.result()
            self.requests += result.requests
            self._handed_over = True
            try:
                for landed in result.landed:
                    if self.on_write is not None:
                        self.on_write(landed)
                if result.failures and self.on_failures is not None:
                    self.on_failures(result.failures)
            except Exception as exc:
                # Bookkeeping itself is failing: stop handing over. What landed unrecorded is claimed
                # by key on the next run, as after a kill.
                log.warning("Stopped recording batch answers after a failure: %s", exc)
                return
        try:
            self._pause()
        except Exception as exc:
            log.warning("Could not save the batch answers handed over: %s", exc)
