"""Twenty -> warehouse: bring back what people edited in the CRM since the last pull.

Pages through records whose `updatedAt` is at or after the watermark (minus an overlap, because
clocks and commit order are not perfectly aligned), oldest first, checkpointing the watermark after
every page so a killed run resumes where it stopped. Only human-editable fields come back; a record
whose editable values hash the same as the last ones seen is an echo of our own push and is skipped.
A second pass over soft-deleted records carries deletions. People created in Twenty get a new
contact_id, written back to Twenty as their `contactId`.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from truth_forge.crm_schema import CrmSchema
from truth_forge.reporting import ErrorReporter
from truth_forge.sync.objects import (
    PERSON,
    SyncedObject,
    format_timestamp,
    now_utc,
    parse_timestamp,
    write_by_field_set,
)
from truth_forge.twenty.client import TwentyClient

log = logging.getLogger(__name__)

ConflictPolicy = Literal["crm_wins", "warehouse_wins"]
DEFAULT_OVERLAP = dt.timedelta(minutes=2)
PAGE_SIZE = 200


@dataclass
class PullStats:
    updated: int = 0
    created: int = 0
    deleted: int = 0
    unchanged: int = 0
    conflicts: int = 0
    failed: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def _since_filter(field: str, watermark: str | None, overlap: dt.timedelta) -> str | None:
    if watermark is None:
        return None
    since = parse_timestamp(watermark) - overlap  # type: ignore[operator]
    return f'{field}[gte]:"{format_timestamp(since)}"'


def pull_object(
    warehouse: Any,
    client: TwentyClient,
    schema: CrmSchema,
    obj: SyncedObject,
    reporter: ErrorReporter,
    *,
    conflict_policy: ConflictPolicy = "crm_wins",
    overlap: dt.timedelta = DEFAULT_OVERLAP,
) -> PullStats:
    stats = PullStats()
    live_mark = f"pull:{obj.object_type}"
    query = _since_filter("updatedAt", warehouse.get_watermark(live_mark), overlap)
    for page in client.records.iter_pages(obj.plural, filter=query, order_by="updatedAt", page_size=PAGE_SIZE):
        if page.records:
            _apply_page(warehouse, client, schema, obj, page.records, reporter, stats, conflict_policy)
            warehouse.set_watermark(live_mark, _latest(page.records, "updatedAt"))
        reporter.flush(warehouse)

    deleted_mark = f"pull-deleted:{obj.object_type}"
    since = warehouse.get_watermark(deleted_mark)
    query = _since_filter("deletedAt", since, overlap) or "deletedAt[is]:NOT_NULL"
    for page in client.records.iter_pages(obj.plural, filter=query, order_by="deletedAt", page_size=PAGE_SIZE):
        if page.records:
            _apply_deletions(warehouse, obj, page.records, stats)
            warehouse.set_watermark(deleted_mark, _latest(page.records, "deletedAt"))
    return stats


def _latest(records: Sequence[Mapping[str, Any]], field: str) -> str:
    return format_timestamp(max(parse_timestamp(r[field]) for r in records if r.get(field)))  # type: ignore[type-var]


def _warehouse_key(obj: SyncedObject, record: Mapping[str, Any], state: Mapping[str, Any] | None) -> int | None:
    if state is not None:
        return int(state["record_key"])
    raw = record.get(obj.key_field)
    if raw in (None, ""):
        return None
    try:
        return int(str(raw))
    except ValueError:
        raise ValueError(f"{obj.key_field} {raw!r} is not a warehouse key (a whole number)") from None


def pull_records(
    warehouse: Any, client: TwentyClient, schema: CrmSchema, obj: SyncedObject, records: Sequence[Mapping[str, Any]],
    reporter: ErrorReporter, *, conflict_policy: ConflictPolicy = "crm_wins",
) -> PullStats:
    """Apply given Twenty records to the warehouse (one record fetched by id, a webhook's record...)."""
    stats = PullStats()
    live = [r for r in records if not r.get("deletedAt")]
    if live:
        _apply_page(warehouse, client, schema, obj, live, reporter, stats, conflict_policy)
    gone = [r for r in records if r.get("deletedAt")]
    if gone:
        _apply_deletions(warehouse, obj, gone, stats)
    reporter.flush(warehouse)
    return stats


def _apply_page(
    warehouse: Any, client: TwentyClient, schema: CrmSchema, obj: SyncedObject, records: Sequence[Mapping[str, Any]],
    reporter: ErrorReporter, stats: PullStats, policy: ConflictPolicy,
) -> None:
    states = warehouse.read_sync_state_by_crm_id(obj.object_type, [r["id"] for r in records])
    company_keys = _company_keys(warehouse, records) if obj is PERSON else {}
    changed: list[tuple[Mapping[str, Any], int | None, str]] = []
    for record in records:
        state = states.get(record["id"])
        digest = obj.crm_hash(record, schema)
        if state is not None and state.get("crm_hash") == digest and state.get("status") != "deleted":
            stats.unchanged += 1  # our own push coming back, or a change to fields we do not pull
            continue
        try:
            changed.append((record, _warehouse_key(obj, record, state), digest))
        except ValueError as exc:
            reporter.record(object_type=obj.object_type, operation="pull", error=exc, crm_id=record["id"])
            stats.failed += 1
    if not changed:
        return

    new_records = [record for record, key, _ in changed if key is None]
    new_keys = iter(warehouse.allocate_ids(obj.object_type, len(new_records)))
    keyed = [(record, key if key is not None else next(new_keys), digest) for record, key, digest in changed]
    known_keys = [key for record, key, _ in keyed if record["id"] in states]
    hashes_before = warehouse.row_hashes(obj.object_type, known_keys)

    rows, warehouse_also_changed = [], set()
    for record, key, _ in keyed:
        state = states.get(record["id"])
        edited_here = state is not None and hashes_before.get(key) not in (None, state.get("warehouse_hash"))
        if edited_here:
            warehouse_also_changed.add(key)
            stats.conflicts += 1
            reporter.record(
                object_type=obj.object_type, operation="conflict", record_key=key, crm_id=record["id"],
                error=f"edited in both the warehouse and Twenty since the last sync; {policy} "
                      f"(Twenty updatedAt {record.get('updatedAt')})",
            )
            if policy == "warehouse_wins":
                continue  # the push will send the warehouse's values over Twenty's
        row = {obj.key_column: key, **obj.editable_from_crm(record, schema)}
        if state is not None and state.get("status") == "deleted":
            row["deleted_at"] = None  # restored in Twenty
        if obj is PERSON and record.get("companyId") in company_keys:
            row["business_id"] = company_keys[record["companyId"]]
        rows.append(row)
    writer = warehouse.upsert_contacts if obj is PERSON else warehouse.upsert_businesses
    write_by_field_set(writer, rows)
    hashes_after = warehouse.row_hashes(obj.object_type, [r[obj.key_column] for r in rows])

    now, state_rows = now_utc(), []
    for record, key, digest in keyed:
        state_row = {"object_type": obj.object_type, "record_key": str(key), "crm_id": record["id"],
                     "crm_hash": digest, "crm_updated_at": parse_timestamp(record.get("updatedAt")),
                     "last_synced_at": now, "status": "synced", "last_error": None}
        if key not in warehouse_also_changed:
            # Nothing else changed in the warehouse: its new row is exactly what Twenty has, so the
            # push must not send it back. After a conflict the merged row still has to go out.
            state_row["warehouse_hash"] = hashes_after.get(key)
        state_rows.append(state_row)
        if record["id"] in states:
            stats.updated += 1
        else:
            stats.created += 1
    write_by_field_set(warehouse.upsert_sync_state, state_rows)
    if new_records:
        _write_back_keys(client, obj, [(r, k) for r, k, _ in keyed if r["id"] not in states], reporter)


def _company_keys(warehouse: Any, records: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    crm_ids = {r["companyId"] for r in records if r.get("companyId")}
    found = warehouse.read_sync_state_by_crm_id("company", crm_ids)
    return {crm_id: int(s["record_key"]) for crm_id, s in found.items()}


def _write_back_keys(
    client: TwentyClient, obj: SyncedObject, pairs: Sequence[tuple[Mapping[str, Any], int]], reporter: ErrorReporter
) -> None:
    """Give records created in Twenty their warehouse key, so every later write matches them."""
    missing = [(r, k) for r, k in pairs if str(r.get(obj.key_field) or "") != str(k)]
    if not missing:
        return
    bodies = [{"id": r["id"], obj.key_field: str(k)} for r, k in missing]
    outcome = client.records.create_many(obj.plural, bodies, upsert=True, match_key="id")
    for failure in outcome.failures:
        record, key = missing[failure.index]
        reporter.record(object_type=obj.object_type, operation="write_key", error=failure.error, record_key=key,
                        crm_id=record["id"])
    if outcome.aborted is not None:
        reporter.record(object_type=obj.object_type, operation="write_key", error=outcome.aborted)


def _apply_deletions(warehouse: Any, obj: SyncedObject, records: Sequence[Mapping[str, Any]],
                     stats: PullStats) -> None:
    states = warehouse.read_sync_state_by_crm_id(obj.object_type, [r["id"] for r in records])
    keys = [int(s["record_key"]) for s in states.values() if s.get("status") != "deleted"]
    if not keys:
        return
    stats.deleted += warehouse.soft_delete(obj.object_type, keys)
    hashes = warehouse.row_hashes(obj.object_type, keys)
    warehouse.upsert_sync_state([
        {"object_type": obj.object_type, "record_key": str(k), "status": "deleted", "warehouse_hash": hashes.get(k),
         "last_synced_at": now_utc()}
        for k in keys
    ])
