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

A signed event is Twenty's word, not the truth, so it is read within reason:

* an `updatedAt` beyond now plus `CLOCK_SKEW` is not believed: such an event ranks below every
  other event of its record in the batch and its contents are not applied (the next pull reads the
  record whole, `read_again`); a stored `updatedAt` that far ahead never makes a later event stale;
* a field absent from the payload is unknown, never empty: a record whose payload lacks a field
  the sync reads is completed from the merge base (the value both sides last agreed on), so the
  merge sees that field unchanged in Twenty; a record with no base is fetched whole by the next
  pull instead (`read_again`);
* a `deleted` event for a record the warehouse never had is ignored (counted), not turned into an
  empty contact; an event whose id is not a Twenty id (a UUID) is dropped with a closed error row.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from truth_forge.realtime.webhooks import WebhookEvent, is_twenty_id
from truth_forge.sync import mapping
from truth_forge.sync.context import SyncContext
from truth_forge.sync.objects import COMPANY, PERSON, SyncedObject, format_timestamp, now_utc, parse_timestamp
from truth_forge.sync.pull import PullStats, pull_records, read_again
from truth_forge.sync.reconcile import settle_destroyed

log = logging.getLogger(__name__)

# Companies first: a person's company link resolves through the company's sync state.
_OBJECTS: tuple[SyncedObject, ...] = (COMPANY, PERSON)
# How far ahead of this machine's clock an event's `updatedAt` may be and still be believed.
CLOCK_SKEW = dt.timedelta(minutes=5)
# The standard fields the sync reads from a payload (custom fields and the company link are taken
# only when present already): a payload without one of them is partial.
_PAYLOAD_KEYS = {"person": ("name", "emails", "phones"), "company": ("name", "domainName")}


@dataclass
class ApplyStats:
    events: int = 0
    superseded: int = 0  # a newer event for the same record came in the same batch
    stale: int = 0  # older than what the warehouse already has
    applied: int = 0  # records handed to the pull path
    echoes: int = 0  # of those, unchanged since the warehouse last synced them (our own writes coming back)
    destroyed: int = 0  # marked deleted after Twenty destroyed them
    completed: int = 0  # partial payloads completed from the merge base
    deferred: int = 0  # partial payloads with nothing to complete them from: fetched whole by the next pull
    unknown_deleted: int = 0  # `deleted` events for records the warehouse never had: ignored
    malformed: int = 0  # ids that are not Twenty ids: dropped
    untrusted_time: int = 0  # dated beyond now plus CLOCK_SKEW: fetched whole by the next pull instead

    def add(self, other: ApplyStats) -> None:
        for name, value in other.__dict__.items():
            setattr(self, name, getattr(self, name) + value)

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def apply_events(ctx: SyncContext, events: Sequence[WebhookEvent]) -> ApplyStats:
    """Apply events in arrival order; see the module docstring for what is kept and dropped."""
    stats = ApplyStats(events=len(events))
    now = now_utc()
    for obj in _OBJECTS:
        mine = [e for e in events if e.object_name == obj.object_type and _well_formed(ctx, e, stats)]
        latest = newest_per_record(mine, now=now)
        stats.superseded += len(mine) - len(latest)
        destroyed = [e for e in latest if e.action == "destroyed"]
        if destroyed:
            stats.destroyed += mark_destroyed(ctx, obj, [e.record_id for e in destroyed])
        others = [e for e in latest if e.action != "destroyed"]
        states = ctx.warehouse.read_sync_state_by_crm_id(obj.object_type, [e.record_id for e in others]) \
            if others else {}
        records = _readable(ctx, obj, others, states, stats)
        fresh = not_older_than_warehouse(ctx.warehouse, obj, records, states=states, now=now)
        stats.stale += len(records) - len(fresh)
        if fresh:
            stats.echoes += apply_crm_records(ctx, obj, fresh).unchanged
            stats.applied += len(fresh)
    return stats


def _well_formed(ctx: SyncContext, event: WebhookEvent, stats: ApplyStats) -> bool:
    """An id Twenty could have made; anything else is dropped with an error row that is closed at once."""
    if is_twenty_id(event.record_id):
        return True
    stats.malformed += 1
    ctx.reporter.record(object_type=event.object_name, operation="webhook", settled=True,
                        error=f"{event.object_name}.{event.action} event dropped: its record id "
                              f"{event.record_id[:60]!r} is not a Twenty id (a UUID)")
    return False


def _readable(ctx: SyncContext, obj: SyncedObject, events: Sequence[WebhookEvent],
              states: Mapping[str, Mapping[str, Any]], stats: ApplyStats) -> list[Mapping[str, Any]]:
    """The records the events carry, ready for the pull path: deletions of unknown records left out,
    partial payloads completed from the merge base (or left to the next pull)."""
    out: list[Mapping[str, Any]] = []
    later: list[str] = []
    for event in events:
        state = states.get(event.record_id)
        known = state is not None and state.get("record_key") is not None
        record = dict(event.record)
        stamp = parse_timestamp(event.updated_at)
        if stamp is not None and stamp > now_utc() + CLOCK_SKEW:
            stats.untrusted_time += 1
            log.warning("%s %s: event dated %s, beyond this machine's clock; the record is read from Twenty "
                        "instead", obj.object_type, event.record_id, event.updated_at)
            later.append(event.record_id)
            continue
        if event.action == "deleted":
            if not known:
                stats.unknown_deleted += 1
                log.info("%s %s: deleted in Twenty, never in the warehouse; ignored", obj.object_type, event.record_id)
                continue
            # A deletion is a deletion whatever the payload says (a payload without `deletedAt` is partial).
            record["deletedAt"] = record.get("deletedAt") or event.updated_at or format_timestamp(now_utc())
        missing = [k for k in _PAYLOAD_KEYS[obj.object_type] if k not in record]
        if missing and not record.get("deletedAt"):
            base = (state or {}).get("base") if known and (state or {}).get("status") != "deleted" else None
            filled = _from_base(ctx, obj, base, missing)
            if filled is None:
                stats.deferred += 1
                later.append(event.record_id)
                continue
            record.update(filled)
            stats.completed += 1
        out.append(record)
    if later:
        read_again(ctx.warehouse, obj, later)
    return out


def _from_base(ctx: SyncContext, obj: SyncedObject, base: Mapping[str, Any] | None,
               keys: Sequence[str]) -> dict[str, Any] | None:
    """The payload keys as Twenty held them when both sides last agreed; None when that is not known."""
    if not base:
        return None
    try:
        body = (mapping.contact_to_person(base, ctx.schema, left_out=[]) if obj is PERSON
                else mapping.business_to_company(base, ctx.schema, left_out=[]))
    except ValueError:
        return None
    return {k: body[k] for k in keys if k in body}


def apply_crm_records(ctx: SyncContext, obj: SyncedObject, records: Sequence[Mapping[str, Any]]) -> PullStats:
    """The one door from webhooks into the sync's merge: whatever the pull path does, webhooks do."""
    return pull_records(ctx, obj, records)


def believable(value: str | dt.datetime | None, now: dt.datetime) -> dt.datetime:
    """A Twenty `updatedAt` as far as it can be believed: one beyond now plus `CLOCK_SKEW` (or none)
    places the event nowhere in time, so it counts as the oldest."""
    moment = value if isinstance(value, dt.datetime) else parse_timestamp(value)
    return _EPOCH if moment is None or moment > now + CLOCK_SKEW else moment


def newest_per_record(events: Iterable[WebhookEvent], *, now: dt.datetime | None = None) -> list[WebhookEvent]:
    """One event per record: a destroy beats everything, then the later (believable) `updatedAt`, then arrival."""
    now = now or now_utc()
    chosen: dict[str, tuple[tuple[bool, Any], WebhookEvent]] = {}
    for event in events:  # in arrival order: on a tie the later arrival wins
        rank = (event.action == "destroyed", believable(event.updated_at, now))
        held = chosen.get(event.record_id)
        if held is None or rank >= held[0]:
            chosen[event.record_id] = (rank, event)
    return [event for _, event in chosen.values()]


def not_older_than_warehouse(warehouse: Any, obj: SyncedObject, records: Sequence[Mapping[str, Any]], *,
                             states: Mapping[str, Mapping[str, Any]] | None = None,
                             now: dt.datetime | None = None) -> list[Mapping[str, Any]]:
    """Drop records whose `updatedAt` is before the one the warehouse last took from Twenty (unless
    that one is beyond belief: a time far ahead of now never makes later events stale)."""
    if not records:
        return []
    if states is None:
        states = warehouse.read_sync_state_by_crm_id(obj.object_type, [r["id"] for r in records])
    now = now or now_utc()
    kept = []
    for record in records:
        seen = (states.get(record["id"]) or {}).get("crm_updated_at")
        if seen is not None and seen <= now + CLOCK_SKEW and believable(record.get("updatedAt"), now) < seen:
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


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
