"""What every warehouse statement cost, as the engine reports it: one record per statement sent.

Why it exists: on BigQuery every statement is billed by the bytes it reads, so cost is a returned
value, not a guess (dbt's `adapter_response` pattern). Both engines report each statement they
send to `Warehouse.statements` (an `Accounting`): the SQL as sent, its binds, and the engine's own
figures where it has them (BigQuery's job statistics; DuckDB has none and reports None). The run
sums them into its row in `crm_sync_runs`; the cost model (`cost_model.py`) and the benchmarks
subscribe to the same records to price what an emulator reports as 0.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

MIB = 1024 * 1024
# On-demand pricing bills at least 10 MB per query that reads anything, rounded up to whole MB
# (cloud.google.com/bigquery/pricing, "On-demand compute pricing").
MIN_BILLED_BYTES = 10 * MIB


def format_bytes(n: int | None) -> str:
    """Bytes as BigQuery's console shows them (powers of 1024), '' when the engine reported none."""
    if n is None:
        return ""
    size, unit = float(n), "B"
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if size < 1024 or unit == "PB":
            break
        size /= 1024
    return f"{int(size)} B" if unit == "B" else f"{size:.1f} {unit}"


@dataclass(frozen=True)
class Statement:
    """One statement as the engine ran it."""

    sql: str  # as sent to the engine (table references filled in)
    binds: Sequence[Any]  # the Scalar / KeySet / RowSet binds it carried
    bytes_processed: int | None = None  # the engine's own figure; None where the engine has none
    bytes_billed: int | None = None
    job_id: str | None = None


def billed_from_processed(processed: int | None) -> int | None:
    """BigQuery's on-demand rounding of bytes processed: up to a whole MB, at least 10 MB when
    anything was read, nothing when nothing was (cached results, DDL, INSERT ... VALUES)."""
    if processed is None:
        return None
    if processed <= 0:
        return 0
    return max(MIN_BILLED_BYTES, -(-processed // MIB) * MIB)


@dataclass
class Accounting:
    """Running totals of the statements a warehouse handle sent, and who else wants to see them."""

    statements: int = 0
    bytes_processed: int = 0
    bytes_billed: int = 0
    reported: bool = False  # True once the engine gave a figure (BigQuery), False for DuckDB
    listeners: list[Callable[[Statement], None]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, statement: Statement) -> None:
        with self._lock:
            self.statements += 1
            if statement.bytes_processed is not None:
                self.reported = True
                self.bytes_processed += statement.bytes_processed
                self.bytes_billed += statement.bytes_billed or 0
        for listen in list(self.listeners):
            listen(statement)

    def snapshot(self) -> dict[str, int | None]:
        """The totals so far; bytes are None where the engine reports none."""
        with self._lock:
            return {"statements": self.statements,
                    "bytes_processed": self.bytes_processed if self.reported else None,
                    "bytes_billed": self.bytes_billed if self.reported else None}

    def since(self, before: dict[str, int | None]) -> dict[str, int | None]:
        """What was spent since an earlier `snapshot()`."""
        now = self.snapshot()
        return {k: (None if now[k] is None else now[k] - (before.get(k) or 0))  # type: ignore[operator]
                for k in now}
