"""Every sync error is recorded and reported: nothing is only logged, nothing is dropped.

An `ErrorReporter` lives for one sync run. Each failure becomes a `sync_errors` entry (returned to
the caller) and a `crm_sync_errors` row (written in bulk, so a run with many failures still costs
one statement per flush). Messages come from typed errors that never carry the API key; any text
that might is passed through `redact` with the secrets the reporter was told about.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from truth_forge.core.secrets import redact
from truth_forge.twenty.errors import TwentyError

log = logging.getLogger(__name__)


@dataclass
class ErrorReporter:
    """Collects one run's errors; `flush(warehouse)` writes what is new."""

    run_id: str
    secrets: Sequence[str] = ()
    sync_errors: list[dict[str, Any]] = field(default_factory=list)
    _unflushed: list[dict[str, Any]] = field(default_factory=list)

    def record(
        self,
        *,
        object_type: str | None,
        operation: str,
        error: BaseException | str,
        record_key: str | int | None = None,
        crm_id: str | None = None,
        attempt: int | None = None,
        settled: bool = False,
    ) -> dict[str, Any]:
        """Record one error. `settled`: already decided (a conflict the policy resolved); it is kept
        as evidence, closed from the start, and does not make the run a partial one."""
        if isinstance(error, TwentyError):
            error_class, status = type(error).__name__, error.status
        elif isinstance(error, BaseException):
            error_class, status = type(error).__name__, None
        else:
            error_class, status = "SyncConflict" if operation == "conflict" else "SyncError", None
        entry = {
            "run_id": self.run_id,
            "object_type": object_type,
            "record_key": None if record_key is None else str(record_key),
            "crm_id": crm_id,
            "operation": operation,
            "error_class": error_class,
            "error_message": redact(str(error), *self.secrets),
            "http_status": status,
            "attempt": attempt,
            "occurred_at": dt.datetime.now(dt.UTC),
        }
        entry["resolved_at"] = entry["occurred_at"] if settled else None
        self.sync_errors.append(entry)
        self._unflushed.append(entry)
        log.warning("%s %s %s failed: %s", operation, object_type or "", record_key or "", entry["error_message"])
        return entry

    def flush(self, warehouse: Any) -> int:
        """Write the errors recorded since the last flush; returns how many."""
        pending, self._unflushed = self._unflushed, []
        if not pending:
            return 0
        try:
            return warehouse.record_errors(pending)
        except Exception:
            self._unflushed = pending + self._unflushed  # keep them for the next flush, then tell the caller
            raise

    @property
    def count(self) -> int:
        """Errors that still need someone (settled conflicts are not among them)."""
        return sum(1 for e in self.sync_errors if e["resolved_at"] is None)
