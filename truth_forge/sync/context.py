"""What one sync run works with, in one place, and the one event hook it reports progress through.

The run's collaborators (the warehouse, the Twenty client, the CRM schema, the error reporter, the
conflict policy) used to be passed from hand to hand through every helper; a `SyncContext` is made
once by the runner and handed down instead, so a reader sees the data path, not parameter lists.

Progress is reported as `SyncEvent`s to one callback. Progress bars, JSON log lines and metrics are
subscribers; the sync knows none of them. A subscriber that raises is logged and dropped for the
rest of the run: watching a sync must never break it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from truth_forge.core.crm_schema import CrmSchema
from truth_forge.core.reporting import ErrorReporter
from truth_forge.sync.store import SyncStore
from truth_forge.twenty.client import TwentyClient
from truth_forge.warehouse.detection import DetectionPolicy

log = logging.getLogger(__name__)

EventKind = Literal[
    "run_started",  # detail: run_id, direction
    "phase_started",  # phase, object_type; total when known (records the phase will look at)
    "page_read",  # phase "pull": count = records on the page, total = Twenty's totalCount of the query
    "changes_found",  # phase "push": total = the candidates incremental change detection found
    "batch_written",  # phase "push": count = records Twenty stored by one request
    "records_unchanged",  # phase "push": count = candidates found unchanged (nothing to send)
    "records_failed",  # count = records that failed together (one refusal, one outage)
    "records_pulled",  # count = records merged into the warehouse; detail: keys (warehouse keys)
    "phase_finished",  # detail: the phase's counts
    "run_finished",  # detail: status, counts
]


@dataclass(frozen=True)
class SyncEvent:
    kind: EventKind
    phase: str | None = None  # "pull" | "push"
    object_type: str | None = None  # "person" | "company"
    count: int = 0
    total: int | None = None
    requests: int = 0  # API requests the run has spent so far
    detail: Mapping[str, Any] = field(default_factory=dict)


EventHook = Callable[[SyncEvent], None]

ConflictPolicy = Literal["crm_wins", "warehouse_wins"]


@dataclass
class SyncContext:
    """One run's collaborators; `emit` reports progress to the run's subscriber, if any."""

    warehouse: SyncStore
    client: TwentyClient
    schema: CrmSchema
    reporter: ErrorReporter
    conflict_policy: ConflictPolicy | Mapping[str, ConflictPolicy] = "crm_wins"
    on_event: EventHook | None = None
    default_region: str | None = None
    # How the push finds changed rows: incrementally, with a periodic full audit (detection.py).
    detection: DetectionPolicy = field(default_factory=DetectionPolicy)
    # What this run had to give up or could not check, said once each, for the run's counts.
    warnings: list[str] = field(default_factory=list)
    # How this run's changes reach the record history (sync/changelog.py): 'sync', 'webhook' or
    # 'resolve'; `actor` names the person behind every change it applies (a conflict resolved by hand).
    via: Literal["sync", "webhook", "resolve"] = "sync"
    actor: str | None = None
    # History rows not yet appended (changelog.append / changelog.flush).
    history: list[dict[str, Any]] = field(default_factory=list)

    def emit(self, kind: EventKind, **values: Any) -> None:
        if self.on_event is None:
            return
        event = SyncEvent(kind, requests=self.client.transport.stats.requests, **values)
        try:
            self.on_event(event)
        except Exception:  # a broken progress display must not break the sync
            log.exception("The sync's event subscriber failed on %s; it gets no more events this run", kind)
            self.on_event = None

    def warn(self, message: str, *, logged: bool = False) -> None:
        """Something the person running the sync should know (a safeguard off, a check not possible):
        logged as a warning (unless `logged` says it was already) and kept in the run's counts."""
        if message not in self.warnings:
            if not logged:
                log.warning("%s", message)
            self.warnings.append(message)

    def policy_for(self, column: str) -> ConflictPolicy:
        """Who wins a field edited on both sides: per field where configured, else the run's default."""
        if isinstance(self.conflict_policy, str):
            return self.conflict_policy
        return self.conflict_policy.get(column, self.conflict_policy.get("*", "crm_wins"))
