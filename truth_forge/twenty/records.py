"""Records of any Twenty object (people, companies, ...) over the REST core API.

Reads page with cursors until `pageInfo.hasNextPage` says stop. Writes go in batches no larger than
the server takes: 200 first (Twenty's server code), or what the server names when it refuses that
("Maximum number of records to upsert is 60"), or the size the user set; a batch that Twenty rejects
because of one bad record is split until the bad record stands alone, so one poison row never
stalls the others. Batch writes keep several requests on the wire (`batch_stream.py`).

Lists of ids or keys travel in the query string (`id[in]:[...]`), and proxies refuse long request
lines (nginx: 414 past 8 KB). Every such list is cut here, by measuring the encoded request line,
into as many requests as keep it within the transport's limit (`split_to_fit`); a read refused as
too long anyway is cut again to the limit the transport learned from the refusal (`find_in`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from truth_forge.twenty.batch_stream import BatchStream, OnAbort, OnFailures, OnPause, OnWrite, RecordFailure
from truth_forge.twenty.envelope import data_of
from truth_forge.twenty.errors import (
    TwentyError,
    TwentyNotFound,
    TwentyProtocolError,
    TwentyRecordRejected,
    TwentyRequestTooLong,
)
from truth_forge.twenty.pool import RequestPool, settle
from truth_forge.twenty.transport import MAX_REQUEST_LINE_SETTING, Transport

log = logging.getLogger(__name__)

MAX_PAGE_SIZE = 200  # Twenty lowers any larger limit to this
# Twenty's docs say 60 records a batch, its server code takes 200 (QUERY_MAX_RECORDS): a client that
# is not told a size starts at 200 and learns the server's limit from its refusal.
LEARN_FROM = MAX_PAGE_SIZE
__all__ = ["BatchOutcome", "OnWrite", "Page", "RecordFailure", "RecordsApi", "in_filter"]
_MAX_RECORDS_RE = re.compile(r"Maximum number of records to \w+ is (\d+)")
# Naming deletedAt makes Twenty search soft-deleted records too (graphql-query.parser.ts).
ANY_DELETED = "or(deletedAt[is]:NULL,deletedAt[is]:NOT_NULL)"
# Room kept for a page cursor (`starting_after`) when a list is measured: the answer to one list is
# normally one page, but a second page must still fit. Twenty's cursors are base64 of a small JSON.
_CURSOR_ROOM = "c" * 160


def in_filter(field: str, values: Sequence[str], *, with_deleted: bool = False) -> str:
    """`field[in]:["a","b"]`, soft-deleted records included when asked."""
    listed = f"{field}[in]:[" + ",".join(f'"{v}"' for v in values) + "]"
    return f"and({listed},{ANY_DELETED})" if with_deleted else listed


@dataclass
class Page:
    records: list[dict[str, Any]]
    has_next_page: bool
    end_cursor: str | None
    total_count: int | None


@dataclass
class BatchOutcome:
    """Result of a batch write: the records Twenty returned, aligned with the input, and what failed.

    `results[i]` is the stored record for input `i`, or None when it failed or was never sent.
    `aborted` is set when a failure that is not about one record (auth, outage) stopped the run; the
    inputs from `aborted_at` on were not sent.
    """

    results: list[dict[str, Any] | None]
    failures: list[RecordFailure] = field(default_factory=list)
    aborted: TwentyError | None = None
    aborted_at: int | None = None
    requests: int = 0

    @property
    def succeeded(self) -> list[dict[str, Any]]:
        return [r for r in self.results if r is not None]


_data = data_of


class RecordsApi:
    """CRUD, batch writes and paging for the records of any object, named by its plural."""

    def __init__(self, transport: Transport, *, batch_size: int | None = None, pool: RequestPool | None = None) -> None:
        if batch_size is not None and not 1 <= batch_size <= MAX_PAGE_SIZE:
            raise ValueError(f"batch_size must be between 1 and {MAX_PAGE_SIZE}, got {batch_size}")
        self.transport = transport
        # A size the user chose is kept (learn_max_batch still lowers it if the server refuses it);
        # without one the client starts high and learns.
        self.batch_size_explicit = batch_size is not None
        self._batch_size = batch_size if batch_size is not None else LEARN_FROM
        self.pool = pool or RequestPool(transport.max_in_flight)
        self._restore_path_style: str | None = None  # "new" or "old", learnt on first use

    @property
    def batch_size(self) -> int:
        return self._batch_size

    @batch_size.setter
    def batch_size(self, size: int) -> None:
        """A size set by code is the user's choice, as one passed in: nothing learned replaces it."""
        self._batch_size, self.batch_size_explicit = size, True

    def adopt_batch_size(self, size: int) -> None:
        """Start from a size learned earlier (unless the user chose one)."""
        if not self.batch_size_explicit:
            self._batch_size = max(1, min(size, MAX_PAGE_SIZE))

    # -- reads -----------------------------------------------------------------------------------

    def get(self, plural: str, record_id: str, *, depth: int = 0) -> dict[str, Any]:
        path = f"/rest/{plural}/{record_id}"
        return _data(self.transport.request("GET", path, params={"depth": depth}), "GET", path)

    @staticmethod
    def _find_params(filter: str | None, order_by: str | None, limit: int, starting_after: str | None,
                     fields: Sequence[str] | None, depth: int) -> dict[str, Any]:
        return {
            "filter": filter,
            "order_by": order_by,
            "limit": max(1, min(limit, MAX_PAGE_SIZE)),
            "starting_after": starting_after,
            "fields": ",".join(fields) if fields else None,
            "depth": depth,
        }

    def find_page(
        self,
        plural: str,
        *,
        filter: str | None = None,
        order_by: str | None = None,
        limit: int = 60,
        starting_after: str | None = None,
        fields: Sequence[str] | None = None,
        depth: int = 0,
    ) -> Page:
        path = f"/rest/{plural}"
        params = self._find_params(filter, order_by, limit, starting_after, fields, depth)
        body = self.transport.request("GET", path, params=params)
        records = _data(body, "GET", path)
        if not isinstance(records, list):
            raise TwentyProtocolError("Expected a list of records", method="GET", path=path)
        info = body.get("pageInfo") or {}
        return Page(
            records=records,
            has_next_page=bool(info.get("hasNextPage")),
            end_cursor=info.get("endCursor"),
            total_count=body.get("totalCount"),
        )

    def iter_pages(
        self,
        plural: str,
        *,
        filter: str | None = None,
        order_by: str | None = None,
        page_size: int = MAX_PAGE_SIZE,
        fields: Sequence[str] | None = None,
        starting_after: str | None = None,
    ) -> Iterator[Page]:
        """Every page of a query, in order; stops on `hasNextPage: false`, never on a null cursor alone."""
        cursor = starting_after
        while True:
            page = self.find_page(
                plural, filter=filter, order_by=order_by, limit=page_size, starting_after=cursor, fields=fields
            )
            yield page
            if not page.has_next_page or not page.records:
                return
            if not page.end_cursor or page.end_cursor == cursor:
                # A server that says "more" but gives no new cursor would loop us forever.
                raise TwentyProtocolError(
                    "Twenty said there are more pages but gave no new cursor", method="GET", path=f"/rest/{plural}"
                )
            cursor = page.end_cursor

    def iter_records(self, plural: str, *, max_records: int | None = None, **query: Any) -> Iterator[dict[str, Any]]:
        seen = 0
        for page in self.iter_pages(plural, **query):
            for record in page.records:
                if max_records is not None and seen >= max_records:
                    return
                seen += 1
                yield record

    # -- lists in the query string ---------------------------------------------------------------

    def split_to_fit(self, method: str, path: str, values: Sequence[str],
                     params_for: Callable[[Sequence[str]], dict[str, Any]], *, most: int) -> list[list[str]]:
        """`values` cut, in order, into runs of at most `most` whose request (`params_for(run)`) keeps
        its request line within the transport's limit; each run is as long as that allows.

        A value too long to fit even alone fails here (TwentyRequestTooLong), not at the proxy.
        """
        limit = self.transport.max_request_line

        def fits(run: Sequence[str]) -> bool:
            return self.transport.request_line_length(method, path, params_for(run)) <= limit

        runs: list[list[str]] = []
        start = 0
        while start < len(values):
            # The longest run from `start` that fits: a binary search over its length (a line
            # only grows as values are added), so a run costs a few measurements, not one per value;
            # values of one kind (ids) make runs of one length, so the last run's length is tried first.
            low, high = 0, min(most, len(values) - start)
            guess = len(runs[-1]) if runs else high
            if guess >= high and fits(values[start : start + high]):
                low = high
            elif guess < high and fits(values[start : start + guess]):
                low = guess
                if not fits(values[start : start + guess + 1]):
                    high = guess
            while low < high:
                middle = (low + high + 1) // 2
                if fits(values[start : start + middle]):
                    low = middle
                else:
                    high = middle - 1
            if low == 0:
                line = self.transport.request_line_length(method, path, params_for(values[start : start + 1]))
                raise TwentyRequestTooLong(
                    f"A request naming {values[start][:60]!r} alone has a request line of {line} bytes, over the "
                    f"{limit} of {MAX_REQUEST_LINE_SETTING}", method=method, path=path)
            runs.append(list(values[start : start + low]))
            start += low
        return runs

    def in_runs(self, plural: str, field: str, values: Sequence[str], *, with_deleted: bool = False) -> list[list[str]]:
        """`values` cut into runs, each a `field[in]` find whose request line fits (pages included)."""
        def params(run: Sequence[str]) -> dict[str, Any]:
            return self._find_params(in_filter(field, run, with_deleted=with_deleted), None, MAX_PAGE_SIZE,
                                     _CURSOR_ROOM, None, 0)

        return self.split_to_fit("GET", f"/rest/{plural}", values, params, most=MAX_PAGE_SIZE)

    def find_in(self, plural: str, field: str, values: Sequence[str], *, with_deleted: bool = False,
                ) -> list[dict[str, Any]]:
        """Records whose `field` is one of `values` (live ones; soft-deleted too with `with_deleted`),
        in as many requests as keep each request line within the limit.

        A front end that refuses a request as too long (414/431) has lowered the transport's limit
        (`Transport.learn_request_line`): the values not yet read are cut again to the new limit and
        read (a read is safe to send again); a run's records count only once all its pages are in."""
        found: list[dict[str, Any]] = []
        left = list(values)
        while left:
            cut_at = self.transport.max_request_line
            try:
                for run in self.in_runs(plural, field, left, with_deleted=with_deleted):
                    found += list(self.iter_records(plural, filter=in_filter(field, run, with_deleted=with_deleted)))
                    left = left[len(run):]
            except TwentyRequestTooLong:
                if self.transport.max_request_line >= cut_at:
                    raise  # no lower limit learned (a single value too long, or the floor reached)
        return found

    # -- writes ----------------------------------------------------------------------------------

    def create(self, plural: str, record: dict[str, Any], *, upsert: bool = False) -> dict[str, Any]:
        path = f"/rest/{plural}"
        params = {"upsert": "true"} if upsert else None
        body = self.transport.request("POST", path, params=params, json_body=record, idempotent=upsert)
        return _data(body, "POST", path)

    def create_many(
        self,
        plural: str,
        records: Sequence[dict[str, Any]],
        *,
        upsert: bool = False,
        match_key: str | None = None,
        on_write: OnWrite | None = None,
    ) -> BatchOutcome:
        """Create (or upsert) records in batches; isolate records Twenty rejects; stop on outages.

        Several requests are on the wire at once (never two naming one record); `on_write` is called
        on the caller's thread for every request that stored records, with `(input index, stored
        record)` pairs, one request at a time and in input order, so a caller can save its bookkeeping
        there. An outage stops the call (`aborted`, `aborted_at`: the first input of the chunk that
        failed); what requests already on the wire stored is still in `results` and `on_write`.
        A plain create refused for a taken unique value fails its whole chunk (each input gets a
        failure whose error `is_duplicate`): finding the holders is the caller's one read.

        Twenty does not promise to return a batch in input order (it writes updates before inserts
        and re-reads by id), so results are matched to inputs by `match_key`, a unique field every
        input carries (`contactId`), or by `id` when every input has one. Without either, results
        are taken in order. Inputs sharing a key in one call: only the last is sent.
        """
        outcome = BatchOutcome(results=[None] * len(records))
        key = match_key or ("id" if records and all(r.get("id") for r in records) else None)
        to_send = self._drop_duplicate_keys(records, key, outcome)

        # The stream numbers what it was given (0..len(to_send)); these map that back to the caller's list.
        def landed(pairs: list[tuple[int, dict[str, Any]]]) -> None:
            pairs = [(to_send[n], record) for n, record in pairs]
            for i, record in pairs:
                outcome.results[i] = record
            if on_write is not None:
                on_write(pairs)

        def failed(failures: list[RecordFailure]) -> None:
            outcome.failures.extend(RecordFailure(to_send[f.index], f.record, f.error) for f in failures)

        def stop(error: TwentyError, first: int, not_stored: list[int]) -> bool:
            if outcome.aborted is None:
                outcome.aborted, outcome.aborted_at = error, to_send[first]
                log.warning("Batch write to %s stopped at record %d: %s", plural, to_send[first], error)
            return False

        with self.stream(plural, upsert=upsert, match_key=key, on_write=landed, on_failures=failed,
                         on_abort=stop) as stream:
            stream.add([records[i] for i in to_send])
            stream.finish()
        outcome.requests = stream.requests
        return outcome

    def stream(self, plural: str, *, upsert: bool, match_key: str | None, on_write: OnWrite | None = None,
               on_failures: OnFailures | None = None, on_abort: OnAbort | None = None,
               on_pause: OnPause | None = None) -> BatchStream:
        """Batch writes fed a few records at a time, several requests on the wire (`batch_stream.py`)."""
        return BatchStream(self, self.pool, plural, upsert=upsert, key=match_key, on_write=on_write,
                           on_failures=on_failures, on_abort=on_abort, on_pause=on_pause)

    @staticmethod
    def _drop_duplicate_keys(records: Sequence[dict[str, Any]], key: str | None, outcome: BatchOutcome) -> list[int]:
        if key is None:
            return list(range(len(records)))
        last_for_key = {str(r.get(key)): i for i, r in enumerate(records)}
        kept = []
        for i, record in enumerate(records):
            if last_for_key[str(record.get(key))] == i:
                kept.append(i)
            else:
                outcome.failures.append(RecordFailure(i, record, TwentyRecordRejected(
                    f"Another record later in the same write has {key}={record.get(key)!r}; only the last is sent"
                )))
        return kept

    def learn_max_batch(self, exc: TwentyError) -> int | None:
        """Twenty named its batch limit in the error: remember it, and say it."""
        for message in exc.messages:
            match = _MAX_RECORDS_RE.search(message)
            if match:
                limit = int(match.group(1))
                if limit < self._batch_size:
                    log.info("Twenty takes at most %d records a batch; lowering the batch size", limit)
                    self._batch_size = max(1, limit)
                return max(1, limit)
        return None

    def update(self, plural: str, record_id: str, patch: dict[str, Any]) -> dict[str, Any]:
        path = f"/rest/{plural}/{record_id}"
        return _data(self.transport.request("PATCH", path, json_body=patch), "PATCH", path)

    def delete(self, plural: str, record_id: str, *, soft: bool = True) -> dict[str, Any]:
        """Soft delete by default (restorable); `soft=False` destroys the record for good."""
        path = f"/rest/{plural}/{record_id}"
        params = {"soft_delete": "true"} if soft else None
        return _data(self.transport.request("DELETE", path, params=params), "DELETE", path)

    def delete_many(self, plural: str, record_ids: Sequence[str], *, soft: bool = True) -> list[dict[str, Any]]:
        """Delete records by id, a batch per request (fewer when a batch's ids would make the request
        line too long); ids already gone are simply not in the answer.

        A filtered delete only sees live records, so a record already soft-deleted or destroyed is
        left as it is, which is what a caller repeating a delete wants.
        """
        chunks = self.split_to_fit("DELETE", f"/rest/{plural}", record_ids,
                                   lambda run: self._delete_params(run, soft), most=self.batch_size)
        if len(chunks) <= 1:
            return [r for chunk in chunks for r in self._delete_chunk(plural, chunk, soft)]
        futures = [self.pool.submit(self._delete_chunk, plural, chunk, soft) for chunk in chunks]
        deleted: list[dict[str, Any]] = []
        for n, future in enumerate(futures):
            try:
                deleted += future.result()
            except BaseException:
                settle(futures[n + 1 :])  # deleting again is harmless; leaving requests behind is not
                raise
        return deleted

    @staticmethod
    def _delete_params(record_ids: Sequence[str], soft: bool) -> dict[str, Any]:
        return {"filter": in_filter("id", record_ids), "soft_delete": "true" if soft else None}

    def _delete_chunk(self, plural: str, record_ids: Sequence[str], soft: bool) -> list[dict[str, Any]]:
        path = f"/rest/{plural}"
        result = _data(self.transport.request("DELETE", path, params=self._delete_params(record_ids, soft)),
                       "DELETE", path)
        return result if isinstance(result, list) else []

    def restore(self, plural: str, record_id: str) -> dict[str, Any]:
        """Restore a soft-deleted record: the current path first, the pre-2026 one if the server is older."""
        new_path, old_path = f"/rest/{plural}/{record_id}/restore", f"/rest/restore/{plural}/{record_id}"
        if self._restore_path_style == "old":
            return _data(self.transport.request("PATCH", old_path), "PATCH", old_path)
        try:
            result = _data(self.transport.request("PATCH", new_path), "PATCH", new_path)
        except (TwentyRecordRejected, TwentyNotFound) as first_error:
            if self._restore_path_style == "new":
                raise
            log.info("Restore path %s refused (%s); trying the older form", new_path, first_error.status)
            try:
                result = _data(self.transport.request("PATCH", old_path), "PATCH", old_path)
            except (TwentyRecordRejected, TwentyNotFound):
                raise first_error from None  # both refused: the current form's answer is the one to show
            self._restore_path_style = "old"
            return result
        self._restore_path_style = "new"
        return result
