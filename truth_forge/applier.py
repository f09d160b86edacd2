"""Apply a micro-batch of webhook events to the warehouse, through the sync's own pull path.

Why it exists: webhook events must land exactly as a scheduled pull would land the same records
(same merge, same echo detection, same bookkeeping), only sooner and a batch at a time. So live,
soft-deleted and restored records go through `pull_records` (one set-based write per object and
batch, never a statement per event; our own writes coming back hash the same and are skipped).
What this module adds is what only webhooks need:

* order: per record only the newest event of the batch counts, and an event whose `updatedAt` is
  older than what the warehouse last took from Twenty is dropped, so a late delivery never
  overwrites a newer state;
* `destroyed`: Twenty no longer has the record (an incremental pull never sees it again), so it is
  settled as `sync --full` settles a record it finds missing: marked deleted in the warehouse
  (unless edited there since and the warehouse's policy wins); warehouse data is never removed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from truth_forge.sync.context import SyncContext
from truth_forge.sync.objects import COMPANY, PERSON, SyncedObject, parse_timestamp
from truth_forge.sync.pull import PullStats, pull_records
from truth_forge.sync.reconcile import settle_destroyed
from truth_forge.webhooks import WebhookEvent

log = logging.getLogger(__name__)

# Companies first: a person's company link resolves through the company's sync state.
_OBJECTS: tuple[SyncedObject, ...] = (COMPANY, PERSON)


@dataclass
class ApplyStats:
    events: int = 0
    superseded: int = 0  # a newer event for the same record came in the same batch
    stale: int = 0  # older than what the warehouse already has
    applied: int = 0  # records handed to the pull path
    echoes: int = 0  # of those, unchanged since the warehouse last synced them (our own writes coming back)
    destroyed: int = 0  # marked deleted after Twenty destroyed them

    def add(self, other: ApplyStats) -> None:
        for name, value in other.__dict__.items():
            setattr(self, name, getattr(self, name) + value)

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def apply_events(ctx: SyncContext, events: Sequence[WebhookEvent]) -> ApplyStats:
    """Apply events in arrival order; see the module docstring for what is kept and dropped."""
    stats = ApplyStats(events=len(events))
    for obj in _OBJECTS:
        latest = newest_per_record(e for e in events if e.object_name == obj.object_type)
        stats.superseded += sum(1 for e in events if e.object_name == obj.object_type) - len(latest)
        destroyed = [e for e in latest if e.action == "destroyed"]
        if destroyed:
            stats.destroyed += mark_destroyed(ctx, obj, [e.record_id for e in destroyed])
        records = not_older_than_warehouse(ctx.warehouse, obj, [e.record for e in latest if e.action != "destroyed"])
        stats.stale += len(latest) - len(destroyed) - len(records)
        if records:
            stats.echoes += apply_crm_records(ctx, obj, records).unchanged
            stats.applied += len(records)
    return stats


def apply_crm_records(ctx: SyncContext, obj: SyncedObject, records: Sequence[Mapping[str, Any]]) -> PullStats:
    """The one door from webhooks into the sync's merge: whatever the pull path does, webhooks do."""
    return pull_records(ctx, obj, records)


def newest_per_record(events: Iterable[WebhookEvent]) -> list[WebhookEvent]:
    """One event per record: a destroy beats everything, then the later `updatedAt`, then arrival."""
    chosen: dict[str, tuple[tuple[bool, Any], WebhookEvent]] = {}
    for event in events:  # in arrival order: on a tie the later arrival wins
        rank = (event.action == "destroyed", parse_timestamp(event.updated_at) or _EPOCH)
        held = chosen.get(event.record_id)
        if held is None or rank >= held[0]:
            chosen[event.record_id] = (rank, event)
    return [event for _, event in chosen.values()]


def not_older_than_warehouse(warehouse: Any, obj: SyncedObject,
                             records: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Drop records whose `updatedAt` is before the one the warehouse last took from Twenty."""
    if not records:
        return []
    states = warehouse.read_sync_state_by_crm_id(obj.object_type, [r["id"] for r in records])
    kept = []
    for record in records:
        seen = (states.get(record["id"]) or {}).get("crm_updated_at")
        if seen is not None and (parse_timestamp(record.get("updatedAt")) or _EPOCH) < seen:
            log.info("%s %s: event older than the warehouse's state, dropped", obj.object_type, record["id"])
            continue
        kept.append(record)
    return kept


def mark_destroyed(ctx: SyncContext, obj: SyncedObject, crm_ids: Sequence[str]) -> int:
    """Records Twenty destroyed: settled as `sync --full` settles the ones it finds missing (deleted
    here too, unless the warehouse edited them since and its policy wins); returns how many."""
    states = ctx.warehouse.read_sync_state_by_crm_id(obj.object_type, crm_ids)
    linked = [(str(s["record_key"]), crm_id) for crm_id, s in states.items()
              if s.get("record_key") is not None and s.get("status") != "deleted"]
    return settle_destroyed(ctx, obj, linked) if linked else 0


_EPOCH = parse_timestamp("1970-01-01T00:00:00Z")
