"""What the sync needs from a warehouse, as a typed protocol both engines satisfy.

The sync depends on this, not on an engine: DuckDB and BigQuery (`truth_forge.warehouse`) both
implement it, and the type checker in `make lint` holds every call in `sync/` to these signatures,
which is where a second engine's mistakes would otherwise hide behind `Any`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Protocol

from truth_forge.warehouse.accounting import Accounting
from truth_forge.warehouse.base import ObjectType
from truth_forge.warehouse.detection import ChangeScan, DetectionPolicy


class SyncStore(Protocol):
    statements: Accounting  # what every statement sent cost (warehouse/accounting.py)
    before_write: Callable[[], None] | None  # the writer lease's fence (truth_forge/core/lease.py)

    def for_another_thread(self) -> SyncStore: ...  # a handle another thread may use meanwhile

    def close(self) -> None: ...

    def ensure_tables(self) -> None: ...

    def table_bytes(self, table: str) -> int | None: ...

    def count_rows(self, table: str) -> int: ...

    def checkpoint(self) -> None: ...

    # change detection and canonical rows
    def changed_rows(self, object_type: ObjectType, *, batch_size: int = 500) -> Iterator[list[dict[str, Any]]]: ...

    def detect_changes(self, object_type: ObjectType, *, batch_size: int = 500,
                       policy: DetectionPolicy = ...) -> ChangeScan: ...

    def get_rows(self, object_type: ObjectType, keys: Iterable[int]) -> list[dict[str, Any]]: ...

    def row_hashes(self, object_type: ObjectType, keys: Iterable[int]) -> dict[int, str]: ...

    def upsert_contacts(self, rows: Iterable[Mapping[str, Any]]) -> int: ...

    def upsert_businesses(self, rows: Iterable[Mapping[str, Any]]) -> int: ...

    def land_pulled(self, object_type: ObjectType, rows: Sequence[Mapping[str, Any]],
                    current: Mapping[int, Mapping[str, Any]]) -> set[int]: ...

    def fold_pending(self, *, force: bool = False) -> int: ...

    def soft_delete(self, object_type: ObjectType, keys: Iterable[int],
                    deleted_at: dt.datetime | None = None, *, pulled: bool = False) -> int: ...

    def allocate_ids(self, object_type: ObjectType, count: int) -> list[int]: ...

    # sync bookkeeping
    def upsert_sync_state(self, rows: Iterable[Mapping[str, Any]]) -> int: ...

    def fold_journal(self, *, forget: bool = False) -> int: ...

    def read_sync_state(self, object_type: ObjectType, record_keys: Iterable[str | int]) -> dict[str, dict[str, Any]]: ...

    def read_sync_state_by_crm_id(self, object_type: ObjectType, crm_ids: Iterable[str]) -> dict[str, dict[str, Any]]: ...

    def states_in_crm_id_order(self, object_type: ObjectType, *, batch_size: int = 5_000
                               ) -> Iterator[list[dict[str, Any]]]: ...

    def linked_records(self, object_type: ObjectType, *, batch_size: int = 1000) -> Iterator[list[tuple[str, str]]]: ...

    def get_watermark(self, name: str) -> str | None: ...

    def set_watermark(self, name: str, value: str) -> None: ...

    # runs and errors
    def start_run(self, run_id: str | None = None, started_at: dt.datetime | None = None) -> str: ...

    def finish_run(self, run_id: str, status: str, counts: Mapping[str, Any] | None = None,
                   finished_at: dt.datetime | None = None) -> None: ...

    def close_stale_runs(self, *, before: dt.datetime, closed_by: str) -> int: ...

    def record_errors(self, rows: Iterable[Mapping[str, Any]]) -> int: ...

    def close_settled_errors(self, *, run_id: str, run_succeeded: bool) -> int: ...


def per_server(name: str, base_url: str) -> str:
    """The bookkeeping name of a value kept per Twenty server (`batch-size:<digest>`...): the URL
    itself stays out of the warehouse's keys, a digest of it is enough to tell servers apart."""
    return f"{name}:{hashlib.sha256(base_url.encode()).hexdigest()[:16]}"
