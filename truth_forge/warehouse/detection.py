"""Change detection whose cost follows the change: candidates by `updated_at`, confirmed by hash.

Why it exists: comparing every row's hash with the sync state reads every column of every table,
JSON included. On DuckDB that is a scan; on BigQuery it is the bill (hundreds of GB a run at ten
million contacts). So a run reads only candidates:

* the wide rows (contacts, businesses) whose `updated_at` is at or after the last detection's start
  minus an overlap: a constant filter on the tables' first clustering column, so BigQuery reads the
  recent blocks only (docs/clustered-tables; schema.py sets the clustering);
* people whose emails, phones or company links changed (the narrow tables' key and `updated_at`
  columns), and the records whose last push failed or waits (the retry list the journal keeps);
  their wide rows are found by key and by the stamp read for them, again a constant filter;

and each candidate is confirmed by today's row hash against its sync state, so a candidate that
did not really change is not sent. The contract, stated in docs/how-a-sync-works.md: every writer of the
warehouse stamps `updated_at` (truth-forge's own writes always do). What a writer leaves unstamped,
and rows removed outright, are caught by the audit: the full comparison, at a set cadence (daily by
default, and on `sync --full`), which reports what the incremental runs missed.

The detection watermark moves only when the caller says every row it was handed is settled
(`ChangeScan.commit`), so a run killed mid-push detects the same candidates again.

A mixin of `Warehouse`: it runs the same BigQuery-dialect SQL on both engines.
"""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import json
import logging
from collections.abc import Generator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from truth_forge.warehouse import base_keys
from truth_forge.warehouse import queries as q
from truth_forge.warehouse.binds import Bind, KeySet, Scalar, json_value, plain_row
from truth_forge.warehouse.schema import INT64, STRING, TIMESTAMP

if TYPE_CHECKING:
    from truth_forge.core.config import Settings

log = logging.getLogger(__name__)

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# Rows per change-detection range of an audit unless the engine or the caller says otherwise. A
# range's hashing and aggregation must fit DuckDB's memory limit: ranges of 50,000 ran out of 160 MB
# on a first sync of 60,000 contacts (ranges of 20,000 passed at 200,000; DuckDB's own are 10,000).
DEFAULT_CHANGE_RANGE_ROWS = 20_000
ONE_RANGE = 2**62  # a range size no table reaches: the audit reads everything in one query
# How far before the last detection's start the next one looks: writers' statements commit after
# the time they stamp (BigQuery's CURRENT_TIMESTAMP() is the statement's start), so an edit stamped
# just before a detection can commit just after it.
DEFAULT_OVERLAP = dt.timedelta(minutes=10)
DEFAULT_AUDIT_EVERY = dt.timedelta(hours=24)
# Candidates confirmed per query: a constant key list, in key order.
CANDIDATE_CHUNK = 10_000
# Candidates whose stamps one query reads (it reads two columns of the wide table whatever the list).
STAMP_CHUNK = 100_000


@dataclass(frozen=True)
class DetectionPolicy:
    """How a run finds changed rows: incrementally, with a full audit every `audit_every` (None:
    only when asked) or at once (`audit`, as `sync --full` asks)."""

    overlap: dt.timedelta = DEFAULT_OVERLAP
    audit_every: dt.timedelta | None = DEFAULT_AUDIT_EVERY
    audit: bool = False

    @classmethod
    def from_settings(cls, settings: Settings) -> DetectionPolicy:
        return cls(overlap=dt.timedelta(minutes=settings.detection_overlap_minutes),
                   audit_every=dt.timedelta(hours=settings.detection_audit_hours))


@dataclass
class ChangeScan:
    """One object's change detection: iterate its batches, then `commit()` once every row handed
    out is settled (pushed, or recorded as failed): only then does the next run look later."""

    object_type: str
    mode: Literal["incremental", "audit"]
    started_at: dt.datetime  # the engine's clock when detection began
    batches: Iterator[list[dict[str, Any]]]
    commit_to: Any  # the warehouse that records the watermark
    report: dict[str, Any] = field(default_factory=dict)

    def __iter__(self) -> Iterator[list[dict[str, Any]]]:
        return self.batches

    def close(self) -> None:
        close = getattr(self.batches, "close", None)
        if close is not None:
            close()

    def commit(self) -> None:
        self.commit_to._commit_detection(self)


class ChangeDetection:
    """The `changed_rows` / `detect_changes` part of `Warehouse`."""

    change_range_rows: int = DEFAULT_CHANGE_RANGE_ROWS

    if TYPE_CHECKING:  # provided by Warehouse and its other parts
        def _run(self, template: str, binds: Sequence[Bind], *, fetch: bool = False) -> tuple[list[dict[str, Any]], int | None]:
            raise NotImplementedError

        def _stream(self, template: str, binds: Sequence[Bind], batch_size: int) -> Generator[list[dict[str, Any]], None, None]:
            raise NotImplementedError

        def fold_journal(self, *, forget: bool = False, force: bool = False) -> int:
            raise NotImplementedError

        def fold_pending(self, *, force: bool = False) -> int:
            raise NotImplementedError

        def pending_keys(self, object_type: str, keys: Iterable[int]) -> list[int]:
            raise NotImplementedError

        def get_rows(self, object_type: Literal["person", "company"], keys: Iterable[int]) -> list[dict[str, Any]]:
            raise NotImplementedError

        def folded_mark(self) -> Scalar:
            raise NotImplementedError

        def _read_unsettled(self, object_type: str, keys: list[str]) -> None:
            raise NotImplementedError

        def get_watermark(self, name: str) -> str | None:
            raise NotImplementedError

        def set_watermark(self, name: str, value: str) -> None:
            raise NotImplementedError

        def retry_keys(self, object_type: str) -> list[str] | None:
            raise NotImplementedError

        def _settle_detected(self, object_type: str, key: str, carried: dict[str, Any] | None, *,
                             keep: bool) -> dict[str, Any] | None:
            raise NotImplementedError

    # --- the full comparison (the audit) -------------------------------------------------------

    def changed_rows(self, object_type: str, *, batch_size: int = 500) -> Iterator[list[dict[str, Any]]]:
        """Stream, in batches, the view rows whose hash differs from the sync state's, that have no
        state yet, or whose last push failed or is pending: the full comparison, every row read.

        Rows come in key order, `batch_size` to a list (the last may be shorter). The engine works
        through the keys one range at a time (`change_range_rows` rows each, bounds fixed from the
        keys when the stream starts), so no query holds more than one range, whatever the table's
        size. Each range is read when the stream reaches it: what the caller writes meanwhile
        (sync state for the rows it was given) never brings a row back, since ranges only move
        forward, and state saved for a row not read yet is seen when it is. Close the stream
        (`.close()`) to stop early; the open range's read ends with it.
        """
        _check(object_type, batch_size)
        # Every row is read from the tables: pulled values still staged land first, or they would
        # all read as changed (and be counted as unstamped writes by the audit).
        self.fold_pending(force=True)
        self.fold_journal(force=True)  # the whole state table is read: everything saved so far folded in
        return self._judged(object_type, self._range_reads(object_type, batch_size), batch_size)

    def _range_reads(self, object_type: str, batch_size: int) -> Iterator[Sequence[Mapping[str, Any]]]:
        sql = q.changed_select(object_type)
        for lo, hi in self._key_ranges(object_type):
            binds = (Scalar("object_type", STRING, object_type), Scalar("range_lo", INT64, lo),
                     Scalar("range_hi", INT64, hi))
            with contextlib.closing(self._stream(sql, binds, batch_size)) as stream:
                yield from stream
            self._between_ranges()

    def _between_ranges(self) -> None:
        """Called with no range read open, after the caller has had a range's rows: where an
        engine that buffers the caller's writes in memory (DuckDB) can flush them."""

    def _key_ranges(self, object_type: str) -> list[tuple[int, int]]:
        """Inclusive (low, high) key ranges of about `change_range_rows` rows each, covering every
        INT64 key: the first starts at the smallest INT64, the last ends at the largest, so rows
        added after the bounds were read still fall in a range."""
        if self.change_range_rows >= ONE_RANGE:
            return [(INT64_MIN, INT64_MAX)]  # one range: no need to read the keys for bounds
        rows, _ = self._run(q.range_bounds_select(object_type),
                            (Scalar("range_rows", INT64, self.change_range_rows),), fetch=True)
        bounds = [int(r["k"]) for r in rows]
        ranges = list(zip([INT64_MIN] + [b + 1 for b in bounds], bounds + [INT64_MAX]))
        return [(lo, hi) for lo, hi in ranges if lo <= hi]  # a bound at INT64_MAX leaves nothing above it

    # --- incremental detection -----------------------------------------------------------------

    def detect_changes(self, object_type: str, *, batch_size: int = 500,
                       policy: DetectionPolicy = DetectionPolicy()) -> ChangeScan:
        """The changed rows of one object, found the cheapest way the policy allows: incrementally
        (candidates since the last committed detection, minus the overlap) unless no detection was
        ever committed, an audit is due, or the policy asks for one. Same rows as `changed_rows`
        for every writer that stamps `updated_at`."""
        _check(object_type, batch_size)
        self.fold_journal()
        # The engine's clock, read before any candidate: an edit committed after it is stamped
        # later than it minus the overlap, so the next detection sees it.
        rows, _ = self._run("SELECT CURRENT_TIMESTAMP() AS now", (), fetch=True)
        started_at = plain_row(rows[0])["now"]
        mark = _parse_mark(self.get_watermark(_mark_name(object_type)))
        since, audited = mark.get("since"), mark.get("audited_at")
        if (since is None or policy.audit or audited is None
                or (policy.audit_every is not None and started_at - audited >= policy.audit_every)):
            report: dict[str, Any] = {"mode": "audit"}
            # What an incremental detection would have found now: the audit reports the rest.
            announced = None if since is None else set(self._candidates(object_type, since - policy.overlap, {}))
            return ChangeScan(object_type, "audit", started_at,
                              self._audit(object_type, batch_size, announced, report), self, report)
        scan = ChangeScan(object_type, "incremental", started_at, iter(()), self, {"mode": "incremental"})
        stamps = self._candidates(object_type, since - policy.overlap, scan.report)
        scan.batches = self._candidate_stream(object_type, stamps, since - policy.overlap, batch_size, scan.report)
        return scan

    def _candidates(self, object_type: str, since: dt.datetime, report: dict[str, Any]) -> dict[int, set[Any]]:
        """key -> its wide rows' updated_at (one per row: a key the warehouse holds twice has two),
        for every candidate of this detection."""
        at = Scalar("since", TIMESTAMP, since)
        rows, _ = self._run(q.stamps_select(object_type, "since"), (at,), fetch=True)
        keys = {int(r["k"]) for r in rows}
        if object_type == "person":
            narrow, _ = self._run(q.candidate_keys_select(object_type), (at,), fetch=True)
            keys.update(int(r["k"]) for r in narrow)
        retry = self.retry_keys(object_type)
        if retry is None:  # too many to keep a list of: read them from the state
            retry = self._failed_or_pending(object_type)
        keys.update(int(k) for k in retry if _is_int(k))
        # Every wide row of every candidate key, with its stamp: rows changed long ago are found by
        # their stamp later, and a key the warehouse holds twice shows both rows (two key columns
        # read, in few queries: the key lists are long, but one query reads the columns once).
        stamps: dict[int, set[Any]] = {}
        ordered = sorted(keys)
        for start in range(0, len(ordered), STAMP_CHUNK):
            chunk = ordered[start:start + STAMP_CHUNK]
            found, _ = self._run(q.stamps_select(object_type, "keys"), (KeySet("keys", INT64, chunk),), fetch=True)
            _add_stamps(stamps, found)
        report.update(candidates=len(stamps), retried=len(retry))
        return stamps

    def _failed_or_pending(self, object_type: str) -> list[str]:
        self.fold_journal(force=True)  # read from the state table alone
        rows, _ = self._run("SELECT s.record_key AS k FROM {crm_sync_state} AS s WHERE s.object_type = @object_type "
                            "AND s.status IN ('failed', 'pending')",
                            (Scalar("object_type", STRING, object_type),), fetch=True)
        return [r["k"] for r in rows]

    def _candidate_stream(self, object_type: str, stamps: Mapping[int, set[Any]], since: dt.datetime,
                          batch_size: int, report: dict[str, Any]) -> Iterator[list[dict[str, Any]]]:
        """The changed candidates in batches; `report["unchanged"]` counts, as they are read, the
        candidates found not to have changed (the push's progress counts them as looked at)."""
        report["unchanged"] = 0
        return self._judged(object_type, self._candidate_reads(object_type, stamps, since, report), batch_size, report)

    def _candidate_reads(self, object_type: str, stamps: Mapping[int, set[Any]],
                         since: dt.datetime, report: dict[str, Any]) -> Iterator[Sequence[Mapping[str, Any]]]:
        sql = q.changed_select(object_type, "candidates")
        keys = sorted(stamps)
        for start in range(0, len(keys), CANDIDATE_CHUNK):
            chunk = keys[start:start + CANDIDATE_CHUNK]
            # Recent rows are found by the range; a row without a stamp by none (the audit compares it).
            times = sorted({t for k in chunk for t in stamps[k] if t is not None and t < since})
            binds = (Scalar("object_type", STRING, object_type), Scalar("since", TIMESTAMP, since),
                     self.folded_mark(), KeySet("keys", INT64, chunk),
                     KeySet("skeys", STRING, [str(k) for k in chunk]), KeySet("stamps", TIMESTAMP, times))
            rows, _ = self._run(sql, binds, fetch=True)
            key_column = "contact_id" if object_type == "person" else "business_id"
            report["unchanged"] += max(0, len(chunk) - len({r[key_column] for r in rows}))  # the query's hash test
            yield rows

    def _judged(self, object_type: str, reads: Iterator[Sequence[Mapping[str, Any]]],
                batch_size: int, report: dict[str, Any] | None = None) -> Iterator[list[dict[str, Any]]]:
        """Batches of `batch_size` rows, each row judged by its state just before its batch is
        formed (not when its query ran), so state saved meanwhile counts."""
        ready: list[dict[str, Any]] = []
        for rows in reads:
            waiting = collections.deque(rows)
            while waiting:
                take = [waiting.popleft() for _ in range(min(len(waiting), batch_size - len(ready)))]
                detected = self._detected(object_type, take)
                if report is not None:  # settled by state saved since the query ran
                    report["unchanged"] += len(take) - len(detected)
                ready.extend(detected)
                if len(ready) >= batch_size:
                    yield ready
                    ready = []
        if ready:
            yield ready

    def _audit(self, object_type: str, batch_size: int, announced: set[int] | None,
               report: dict[str, Any]) -> Iterator[list[dict[str, Any]]]:
        """The full comparison, counting the changed rows that are not among the incremental
        detection's candidates (`announced`): changed by a writer that does not stamp `updated_at`,
        or whose state was lost."""
        key = "contact_id" if object_type == "person" else "business_id"
        unstamped = 0
        for batch in self.changed_rows(object_type, batch_size=batch_size):
            if announced is not None:
                unstamped += sum(1 for r in batch if r[key] not in announced)
            yield batch
        if unstamped:
            log.warning("The audit of %s found %d changed rows that no updated_at announced: a writer of the "
                        "warehouse does not stamp it (see docs/how-a-sync-works.md, the contract), or sync state was lost",
                        object_type, unstamped)
        report["unstamped"] = unstamped

    def _commit_detection(self, scan: ChangeScan) -> None:
        mark = _parse_mark(self.get_watermark(_mark_name(scan.object_type)))
        mark["since"] = scan.started_at
        if scan.mode == "audit":
            mark["audited_at"] = scan.started_at
        self.set_watermark(_mark_name(scan.object_type), json.dumps(
            {k: v.astimezone(dt.UTC).isoformat() for k, v in mark.items() if v is not None}, sort_keys=True))

    # --- rows as detection hands them out ------------------------------------------------------

    def _detected(self, object_type: str, rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """View rows with the state they carried: that state is kept for the push's reads, and a
        row whose state this process saved since the query ran is judged by that newer state."""
        key_column = "contact_id" if object_type == "person" else "business_id"
        self._read_unsettled(object_type, [str(r[key_column]) for r in rows])  # one read, not one a row
        # A candidate whose pulled values still wait to land is judged as it will be (pending_rows.py).
        staged = self.pending_keys(object_type, [int(r[key_column]) for r in rows])
        landing = {r[key_column]: r for r in self.get_rows(object_type, staged)} if staged else {}  # type: ignore[arg-type]
        out = []
        for raw in rows:
            row = _view_row(raw)
            row.update(landing.get(row[key_column], {}))
            carried = {c: row.pop(name) for c, name in _STATE_COLUMNS if name in row}
            whole = "base" in carried  # the audit's rows carry their state without the merge base
            exists = row.pop("state_record_key") is not None
            if "company_state_key" in row:
                # The company's state as the query read it (with the journal laid over it, or folded: the
                # companies of this run were pushed before the people): None when it has none.
                known = row.pop("company_state_key") is not None
                company = {"crm_id": row.pop("company_crm_id"), "status": row.pop("company_status")}
                row["company_state"] = company if known else None
                if row.get("business_id") is None:
                    row.pop("company_state")
            key = str(row[key_column])
            if exists:
                if whole:
                    carried["base"] = base_keys.decode(json_value(carried["base"]))
                carried = {"object_type": object_type, "record_key": key, **carried}
            state = self._settle_detected(object_type, key, carried if exists else None, keep=whole)
            if not _still_changed(row, state):
                continue
            row["crm_id"] = state and state.get("crm_id")
            row["sync_status"] = state and state.get("status")
            row["synced_hash"] = state and state.get("warehouse_hash")
            out.append(row)
        return out


def _still_changed(row: Mapping[str, Any], state: Mapping[str, Any] | None) -> bool:
    # The WHERE of changed_select, for a state newer than the query's.
    if state is None:
        return row.get("deleted_at") is None
    return (state.get("warehouse_hash") is None or state.get("warehouse_hash") != row["row_hash"]
            or state.get("status") in ("failed", "pending"))


def _view_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """A view row as the push reads it: `plain_row`'s timestamps, JSON columns parsed, list columns
    as lists; in one pass over its values (detection hands out every changed row)."""
    out = dict(row)
    for name, value in out.items():
        if name in _VIEW_JSON:
            out[name] = json_value(value)
        elif name in _VIEW_LISTS:
            out[name] = list(value or [])
        elif isinstance(value, dt.datetime):
            out[name] = value.astimezone(dt.UTC)
    return out


_VIEW_JSON, _VIEW_LISTS = q.VIEW_JSON_COLUMNS, q.VIEW_LIST_COLUMNS
# (state column, the name a detection row carries it under), built once: every row handed out is read through it.
_STATE_COLUMNS = tuple((c, f"state_{c}") for c in q.STATE_CARRIED)


def _add_stamps(stamps: dict[int, set[Any]], rows: Sequence[Mapping[str, Any]]) -> None:
    for r in rows:
        stamps.setdefault(int(r["k"]), set()).add(plain_row(r)["stamp"])


def _mark_name(object_type: str) -> str:
    return f"detection:{object_type}"


def _parse_mark(text: str | None) -> dict[str, dt.datetime | None]:
    try:
        raw = json.loads(text) if text else {}
    except ValueError:
        raw = {}
    out: dict[str, dt.datetime | None] = {}
    for name in ("since", "audited_at"):
        value = raw.get(name) if isinstance(raw, dict) else None
        out[name] = dt.datetime.fromisoformat(value) if isinstance(value, str) else None
    return out


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


def _check(object_type: str, batch_size: int) -> None:
    if object_type not in ("person", "company"):
        raise ValueError(f"object_type must be one of ('person', 'company'), got {object_type!r}")
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
