"""What the console and `/metrics` read: runs, open errors, conflicts, one record's state, without
ever holding a DuckDB writer.

Why it exists: the console (`truth-forge console`, and `/` of `serve`) only looks, and looking must
change nothing nor stand in a writer's way. A DuckDB file is opened read-only for the time of one
page and closed again; while another process writes it (DuckDB then lets nobody else in), the
figures come from the snapshot that process keeps beside the file (snapshot.py). Inside `serve`
the writer process holds the file for the server's whole life, so there the snapshot is the only
source: opening the file, even read-only, could make that writer fail to open it. BigQuery has no
lock: it is read directly, and `serve` keeps what it read for CACHE_SECONDS, so a Prometheus
scraper every 15 s does not bill a query each time.
"""

from __future__ import annotations

import datetime as dt
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from truth_forge.operations.history import record_history
from truth_forge.operations.snapshot import read_snapshot, snapshot_note, snapshot_path
from truth_forge.warehouse.errors import HistoryNotKept, WarehouseLockedError

RUNS_SHOWN = 50
ERRORS_SHOWN = 100
ERRORS_SEARCHED = 5_000  # error groups searched for one record's errors and for conflicts
DAY = dt.timedelta(days=1)
CACHE_SECONDS = 60.0
OBJECT_TYPES = ("person", "company")
_TWENTY_ID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


@dataclass
class Overview:
    """What the console's front page and /metrics show."""

    runs: list[dict[str, Any]]  # newest first, counts parsed
    open_errors: list[dict[str, Any]]
    open_error_count: int
    conflicts: list[dict[str, Any]]  # conflict rows (settled by policy at once, kept for review)
    source: str  # where the figures come from: "warehouse" or the snapshot note
    read_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))

    def runs_since(self, since: dt.datetime) -> list[dict[str, Any]]:
        return [r for r in self.runs if (moment(r.get("started_at")) or since - DAY) >= since]


@dataclass
class RecordLookup:
    object_type: str
    asked: str  # the key or Twenty id as typed
    state: dict[str, Any] | None  # crm_sync_state row (None: the sync does not know it)
    errors: list[dict[str, Any]]  # its errors and conflicts, open and closed, newest first
    history: list[dict[str, Any]] | None  # its change history; None: not recorded by this version
    unavailable: str = ""  # why nothing could be read (the file held by serve's writer, say)


def record_history_rows(warehouse: Any, object_type: str, key: str | None, crm_id: str | None) -> list[dict[str, Any]] | None:
    """The record's change history (issue 21's `crm_sync_history`, `operations/history.py`), newest
    first, or None where the warehouse keeps none yet (made by an older version, opened read-only)."""
    if key is None and crm_id is None:
        return []
    try:
        return record_history(warehouse, object_type, key, crm_id)
    except HistoryNotKept:
        return None


def looks_like_twenty_id(value: str) -> bool:
    return bool(_TWENTY_ID.match(value.strip()))


class ConsoleReads:
    """Opens the warehouse for one read and closes it, or reads the writer's snapshot; see the module
    docstring. `inside_serve`: the caller is `serve`, whose writer holds a DuckDB file for good."""

    def __init__(self, warehouse_url: str, *, open_for_reading: Callable[[], Any], inside_serve: bool = False,
                 cache_seconds: float = 0.0) -> None:
        self.warehouse_url = warehouse_url
        self._open = open_for_reading
        self._held_by_serve = inside_serve and snapshot_path(warehouse_url) is not None
        self._cache_seconds = cache_seconds
        self._cached: tuple[float, Overview] | None = None
        self._lock = threading.Lock()

    @contextmanager
    def _reading(self) -> Iterator[tuple[Any, dict[str, Any] | None, str]]:
        """(warehouse, None, "") or (None, snapshot, note) or (None, None, why nothing can be read)."""
        if not self._held_by_serve:
            try:
                warehouse = self._open()
            except WarehouseLockedError:
                pass  # another process writes the file: its snapshot below
            else:
                with warehouse:
                    yield warehouse, None, ""
                return
        snapshot = read_snapshot(self.warehouse_url)
        if snapshot is None:
            yield None, None, ("The warehouse file is held by its writer and has written no snapshot yet "
                               "(it writes one after each run).")
            return
        yield None, snapshot, snapshot_note(snapshot)

    def overview(self) -> Overview:
        if self._held_by_serve:
            return self._read_overview()  # a snapshot costs nothing to read: always the latest
        with self._lock:
            if self._cached is not None and time.monotonic() - self._cached[0] < self._cache_seconds:
                return self._cached[1]
        overview = self._read_overview()
        with self._lock:
            self._cached = (time.monotonic(), overview)
        return overview

    def _read_overview(self) -> Overview:
        with self._reading() as (warehouse, snapshot, note):
            if warehouse is not None:
                runs = warehouse.recent_runs(RUNS_SHOWN)
                errors = warehouse.error_lifecycles(limit=ERRORS_SEARCHED)
                open_count = sum(k["open_errors"] for k in warehouse.open_error_kinds())
            elif snapshot is not None:
                runs = [_with_times(r, ("started_at", "finished_at")) for r in snapshot.get("runs") or []]
                errors = [_with_times(e, ("first_seen", "last_seen", "resolved_at")) for e in snapshot.get("errors") or []]
                open_count = int((snapshot.get("status") or {}).get("open_errors") or 0)
            else:
                runs, errors, open_count = [], [], 0
        open_errors = [e for e in errors if e["is_open"] and e["operation"] != "conflict"][:ERRORS_SHOWN]
        conflicts = [e for e in errors if e["operation"] == "conflict"][:ERRORS_SHOWN]
        return Overview(runs=runs, open_errors=open_errors, open_error_count=open_count, conflicts=conflicts,
                        source=note or f"the warehouse, {self.warehouse_url}")

    def record(self, object_type: str, asked: str) -> RecordLookup:
        """One record by its warehouse key or its Twenty id (a UUID)."""
        if object_type not in OBJECT_TYPES:
            raise ValueError(f"type must be one of {', '.join(OBJECT_TYPES)}")
        asked = asked.strip()
        by_id = looks_like_twenty_id(asked)
        with self._reading() as (warehouse, snapshot, note):
            if warehouse is None:
                errors = [_with_times(e, ("first_seen", "last_seen", "resolved_at"))
                          for e in (snapshot or {}).get("errors") or []]
                return RecordLookup(object_type, asked, None, _of_record(errors, object_type, asked, by_id), None,
                                    unavailable=(note + " The record's sync state is read from the warehouse itself, "
                                                 "which its writer holds: only the errors in that snapshot are shown.")
                                    if snapshot is not None else note)
            if by_id:
                state = warehouse.read_sync_state_by_crm_id(object_type, [asked.lower()]).get(asked.lower())
            else:
                state = warehouse.read_sync_state(object_type, [asked]).get(asked)
            key = str(state["record_key"]) if state else (None if by_id else asked)
            crm_id = (state or {}).get("crm_id") or (asked.lower() if by_id else None)
            errors = _of_record(warehouse.error_lifecycles(limit=ERRORS_SEARCHED), object_type,
                                key or crm_id or asked, by_id=key is None, crm_id=crm_id)
            history = record_history_rows(warehouse, object_type, key, crm_id)
        return RecordLookup(object_type, asked, state, errors, history)


def _of_record(errors: list[dict[str, Any]], object_type: str, asked: str, by_id: bool,
               crm_id: str | None = None) -> list[dict[str, Any]]:
    def mine(e: Mapping[str, Any]) -> bool:
        if e.get("object_type") != object_type:
            return False
        if crm_id and e.get("crm_id") == crm_id:
            return True
        return (e.get("crm_id") == asked.lower()) if by_id else (str(e.get("record_key") or "") == asked)
    return [e for e in errors if mine(e)]


def moment(value: Any) -> dt.datetime | None:
    """A run's or an error's time as an aware datetime (warehouse rows and snapshots alike)."""
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    if isinstance(value, str) and value:
        try:
            parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
    return None


def _with_times(row: Mapping[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    """A snapshot row (times written as text) with its times as datetimes again."""
    return {**row, **{n: moment(row.get(n)) for n in names if n in row}}

