"""Records of any Twenty object (people, companies, ...) over the REST core API.

Reads page with cursors until `pageInfo.hasNextPage` says stop. Writes go in batches no larger than
the server takes (60 by Twenty's docs; more where the server says it accepts more), and a batch that
Twenty rejects because of one bad record is split until the bad record stands alone, so one poison
row never stalls the others.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from truth_forge.twenty.errors import (
    TwentyError,
    TwentyNotFound,
    TwentyProtocolError,
    TwentyRecordRejected,
)
from truth_forge.twenty.transport import Transport

log = logging.getLogger(__name__)

MAX_PAGE_SIZE = 200  # Twenty lowers any larger limit to this
OnWrite = Callable[[list[tuple[int, dict[str, Any]]]], None]
_MAX_RECORDS_RE = re.compile(r"Maximum number of records to \w+ is (\d+)")


@dataclass
class Page:
    records: list[dict[str, Any]]
    has_next_page: bool
    end_cursor: str | None
    total_count: int | None


@dataclass
class RecordFailure:
    """One input record Twenty would not take, with its position in the caller's list."""

    index: int
    record: dict[str, Any]
    error: TwentyError


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


def _data(body: Any, method: str, path: str) -> Any:
    """The payload inside Twenty's `{"data": {"<operation>": ...}}` envelope."""
    if not isinstance(body, dict) or not isinstance(body.get("data"), dict) or len(body["data"]) != 1:
        raise TwentyProtocolError(
            "Twenty's answer does not have the expected {data: {...}} envelope",
            method=method,
            path=path,
            body_excerpt=str(body)[:300],
        )
    return next(iter(body["data"].values()))


class RecordsApi:
    """CRUD, batch writes and paging for the records of any object, named by its plural."""

    def __init__(self, transport: Transport, *, batch_size: int = 60) -> None:
        if not 1 <= batch_size <= MAX_PAGE_SIZE:
            raise ValueError(f"batch_size must be between 1 and {MAX_PAGE_SIZE}, got {batch_size}")
        self.transport = transport
        self.batch_size = batch_size
        self._restore_path_style: str | None = None  # "new" or "old", learnt on first use

    # -- reads -----------------------------------------------------------------------------------

    def get(self, plural: str, record_id: str, *, depth: int = 0) -> dict[str, Any]:
        path = f"/rest/{plural}/{record_id}"
        return _data(self.transport.request("GET", path, params={"depth": depth}), "GET", path)

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
        params = {
            "filter": filter,
            "order_by": order_by,
            "limit": max(1, min(limit, MAX_PAGE_SIZE)),
            "starting_after": starting_after,
            "fields": ",".join(fields) if fields else None,
            "depth": depth,
        }
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

        `on_write` is called after every request that stored records, with `(input index, stored
        record)` pairs, so a caller can save its bookkeeping before the next request goes out.
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
        writer = _ChunkWriter(self, plural, records, upsert, key, outcome, on_write)
        start = 0
        while start < len(to_send):
            chunk = to_send[start : start + self.batch_size]
            try:
                writer.write(chunk)
            except TwentyError as exc:
                outcome.aborted, outcome.aborted_at = exc, chunk[0]
                log.warning("Batch write to %s stopped at record %d: %s", plural, chunk[0], exc)
                return outcome
            start += len(chunk)
        return outcome

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
                if limit < self.batch_size:
                    log.info("Twenty takes at most %d records a batch; lowering the batch size", limit)
                    self.batch_size = max(1, limit)
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
        """Delete records by id, one request per batch; ids already gone are simply not in the answer.

        A filtered delete only sees live records, so a record already soft-deleted or destroyed is
        left as it is, which is what a caller repeating a delete wants.
        """
        deleted: list[dict[str, Any]] = []
        path = f"/rest/{plural}"
        for start in range(0, len(record_ids), self.batch_size):
            chunk = record_ids[start : start + self.batch_size]
            params = {"filter": "id[in]:[" + ",".join(f'"{i}"' for i in chunk) + "]",
                      "soft_delete": "true" if soft else None}
            result = _data(self.transport.request("DELETE", path, params=params), "DELETE", path)
            deleted += result if isinstance(result, list) else []
        return deleted

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


class _ChunkWriter:
    """Sends the chunks of one `create_many` call, splitting rejected ones down to the bad records."""

    def __init__(self, api: RecordsApi, plural: str, records: Sequence[dict[str, Any]], upsert: bool,
                 key: str | None, outcome: BatchOutcome, on_write: OnWrite | None) -> None:
        self.api, self.records, self.upsert, self.key, self.outcome = api, records, upsert, key, outcome
        self.on_write = on_write
        self.path = f"/rest/batch/{plural}"

    def write(self, indexes: list[int]) -> None:
        params = {"upsert": "true"} if self.upsert else None
        try:
            self.outcome.requests += 1
            body = self.api.transport.request("POST", self.path, params=params,
                                              json_body=[self.records[i] for i in indexes], idempotent=self.upsert)
        except TwentyRecordRejected as exc:
            self._split(indexes, exc)
            return
        created = _data(body, "POST", self.path)
        if not isinstance(created, list):
            raise TwentyProtocolError("Twenty's batch answer holds no list of records", method="POST", path=self.path)
        self._match(indexes, created)

    def _split(self, indexes: list[int], exc: TwentyRecordRejected) -> None:
        smaller = self.api.learn_max_batch(exc)
        if smaller is not None and smaller < len(indexes):
            for part in range(0, len(indexes), smaller):
                self.write(indexes[part : part + smaller])
            return
        if not self.upsert and exc.is_duplicate:
            # A create refused for a taken unique value: the caller finds the holders in one read,
            # which costs less than splitting the batch down to them.
            self.outcome.failures.extend(RecordFailure(i, self.records[i], exc) for i in indexes)
            return
        if len(indexes) > 1:
            # One bad record fails the whole batch: split it to find the bad ones and save the rest.
            middle = len(indexes) // 2
            self.write(indexes[:middle])
            self.write(indexes[middle:])
            return
        self.outcome.failures.append(RecordFailure(indexes[0], self.records[indexes[0]], exc))

    def _match(self, indexes: list[int], created: list[Any]) -> None:
        if self.key is None:
            if len(created) != len(indexes):
                raise TwentyProtocolError(f"Twenty returned {len(created)} records for a batch of {len(indexes)}",
                                          method="POST", path=self.path)
            pairs = list(zip(indexes, created))
        else:
            key = self.key
            by_key = {str(r.get(key)): r for r in created if isinstance(r, dict)}
            pairs = [(i, by_key.get(str(self.records[i].get(key)))) for i in indexes]
        landed = []
        for i, record in pairs:
            if record is None:
                self.outcome.failures.append(RecordFailure(i, self.records[i], TwentyProtocolError(
                    f"Twenty's answer holds no record with {self.key}={self.records[i].get(self.key or 'id')!r}",
                    method="POST", path=self.path)))
            else:
                self.outcome.results[i] = record
                landed.append((i, record))
        if self.on_write is not None and landed:
            self.on_write(landed)
