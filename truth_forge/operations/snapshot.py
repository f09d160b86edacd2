"""What `status`, `runs` and `errors` show, kept beside a DuckDB warehouse by the process writing it.

Why it exists: DuckDB lets one process open a file for writing and then nobody else open it at
all, so while `serve` or a sync runs, `status` (the health check), `runs` and `errors` could not
read the warehouse (exit 2, exactly when someone looks). The writer keeps what they show next to
the file (`<file>.status.json`, replaced whole and atomically) after every run, and `serve` at most
every SNAPSHOT_EVERY seconds as it applies webhooks; the commands read it when the file is locked
and say how old it is. BigQuery has no such lock: nothing is written for it.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from truth_forge.warehouse.errors import WarehouseError
from truth_forge.warehouse.factory import parse_warehouse_url

log = logging.getLogger(__name__)

SNAPSHOT_EVERY = 10.0  # seconds between two snapshots of a long-running writer
RUNS_KEPT = 50
ERRORS_KEPT = 500
WRITTEN_BY_WRITER = "not checked by the writer"


def snapshot_path(warehouse_url: str) -> Path | None:
    """`<file>.status.json` beside a DuckDB file; None for BigQuery or an in-memory DuckDB."""
    try:
        parsed = parse_warehouse_url(warehouse_url)
    except WarehouseError:
        return None
    if parsed.engine != "duckdb" or parsed.path == ":memory:":
        return None
    return Path(parsed.path).expanduser().with_name(Path(parsed.path).name + ".status.json")


def write_snapshot(warehouse: Any, warehouse_url: str) -> None:
    """Write what `status`, `runs` and `errors` would read now. Never fails the caller: a snapshot
    that cannot be written is logged, and the commands then say the file is in use, as before."""
    from truth_forge.operations.status import gather_status

    path = snapshot_path(warehouse_url)
    if path is None:
        return
    try:
        report = gather_status(warehouse, warehouse_url=warehouse_url, setup=WRITTEN_BY_WRITER)
        snapshot = {"written_at": dt.datetime.now(dt.UTC).isoformat(), "pid": os.getpid(),
                    "status": report.as_dict(), "runs": warehouse.recent_runs(RUNS_KEPT),
                    "errors": warehouse.error_lifecycles(limit=ERRORS_KEPT)}
        partial = path.with_name(path.name + f".{os.getpid()}.tmp")
        partial.write_text(json.dumps(snapshot, default=str, sort_keys=True))
        os.replace(partial, path)
    except Exception as exc:  # what only describes a run never fails it (a full disk, a read that failed)
        log.warning("Could not write the status snapshot %s (status, runs and errors cannot read the warehouse "
                    "while this process holds it): %s: %s", path, type(exc).__name__, exc)


def read_snapshot(warehouse_url: str) -> dict[str, Any] | None:
    """The last snapshot of this warehouse, or None when there is none (or it cannot be read)."""
    path = snapshot_path(warehouse_url)
    if path is None or not path.is_file():
        return None
    try:
        snapshot = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        log.warning("Could not read the status snapshot %s: %s", path, exc)
        return None
    return snapshot if isinstance(snapshot, dict) else None


def snapshot_note(snapshot: dict[str, Any]) -> str:
    """One line saying where the figures come from."""
    return (f"The warehouse file is in use by another process (pid {snapshot.get('pid')}); showing what it "
            f"wrote at {snapshot.get('written_at')}.")


class Throttle:
    """Lets a call through at most once every `seconds` (a writer's snapshots)."""

    def __init__(self, seconds: float = SNAPSHOT_EVERY) -> None:
        self.seconds = seconds
        self._last = float("-inf")

    def due(self) -> bool:
        now = time.monotonic()
        if now - self._last < self.seconds:
            return False
        self._last = now
        return True
