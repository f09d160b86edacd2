"""Twenty -> warehouse: bring back what people edited in the CRM since the last pull.

Pages through records whose `updatedAt` is at or after the watermark (minus an overlap, because
clocks and commit order are not perfectly aligned), oldest first, checkpointing the watermark after
every page so a killed run resumes where it stopped. Only human-editable fields (and the company
link) come back; a record whose editable values hash the same as the last ones seen is an echo of
our own push and is skipped. Records that fail are kept on a retry list and fetched again by id on
the next run, since the watermark has moved past them. A second pass over soft-deleted records
carries deletions. People created in Twenty get a new contact_id, written back as their `contactId`.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
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
RETRY_CHUNK = 50  # ids per `id[in]:[...]` lookup, to keep the URL short


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


@dataclass
class _Page:
    """What one page needs to know, read from the warehouse in a few set-based calls."""

    states: dict[str, dict[str, Any]]  # by crm_id
    company_keys: dict[str, int]  # company crm_id -> business_id


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
    retry = _RetryList(warehouse, f"pull-retry:{obj.object_type}")
    for chunk in retry.chunks():
        quoted = ",".join(f'"{crm_id}"' for crm_id in chunk)
        seen: set[str] = set()
        for page in client.records.iter_pages(obj.plural, filter=f"id[in]:[{quoted}]", page_size=PAGE_SIZE):
            seen |= {r["id"] for r in page.records}
            retry.update(page.records, _apply_page(warehouse, client, schema, obj, page.records, reporter, stats,
                                                   conflict_policy))
        retry.forget(set(chunk) - seen)  # gone from Twenty (or deleted: the deleted pass has them)

    live_mark = f"pull:{obj.object_type}"
    query = _since_filter("updatedAt", warehouse.get_watermark(live_mark), overlap)
    for page in client.records.iter_pages(obj.plural, filter=query, order_by="updatedAt", page_size=PAGE_SIZE):
        if page.records:
            failed = _apply_page(warehouse, client, schema, obj, page.records, reporter, stats, conflict_policy)
            retry.update(page.records, failed)  # saved before the watermark moves past them
            warehouse.set_watermark(live_mark, _latest(page.records, "updatedAt"))
        reporter.flush(warehouse)

    deleted_mark = f"pull-deleted:{obj.object_type}"
    query = _since_filter("deletedAt", warehouse.get_watermark(deleted_mark), overlap) or "deletedAt[is]:NOT_NULL"
    for page in client.records.iter_pages(obj.plural, filter=query, order_by="deletedAt", page_size=PAGE_SIZE):
        if page.records:
            _apply_deletions(warehouse, obj, page.records, reporter, stats, conflict_policy)
            warehouse.set_watermark(deleted_mark, _latest(page.records, "deletedAt"))
        reporter.flush(warehouse)
    return stats


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
        _apply_deletions(warehouse, obj, gone, reporter, stats, conflict_policy)
    reporter.flush(warehouse)
    return stats


class _RetryList:
    """Twenty ids whose pull failed, kept in the warehouse until they go through."""

    def __init__(self, warehouse: Any, name: str) -> None:
        self.warehouse, self.name = warehouse, name
        self.ids: set[str] = set(json.loads(warehouse.get_watermark(name) or "[]"))

    def chunks(self) -> list[list[str]]:
        ordered = sorted(self.ids)
        return [ordered[i : i + RETRY_CHUNK] for i in range(0, len(ordered), RETRY_CHUNK)]

    def update(self, records: Iterable[Mapping[str, Any]], failed: set[str]) -> None:
        before = set(self.ids)
        self.ids = (self.ids - {r["id"] for r in records}) | failed
        if self.ids != before:
            self.warehouse.set_watermark(self.name, json.dumps(sorted(self.ids)))

    def forget(self, ids: set[str]) -> None:
        if ids & self.ids:
            self.ids -= ids
            self.warehouse.set_watermark(self.name, json.dumps(sorted(self.ids)))


def _latest(records: Sequence[Mapping[str, Any]], field: str) -> str:
    return format_timestamp(max(parse_timestamp(r[field]) for r in records if r.get(field)))  # type: ignore[type-var]


def _typed_key(obj: SyncedObject, record: Mapping[str, Any]) -> int | None:
    """The warehouse key someone typed into Twenty's external-id field, if any."""
    raw = record.get(obj.key_field)
    if raw in (None, ""):
        return None
    try:
        key = int(str(raw).strip())
    except ValueError:
        key = 0
    if key <= 0:
        raise ValueError(f"{obj.key_field} {raw!r} in Twenty is not a warehouse key (a whole number above 0)")
    return key


def _keys_for(
    warehouse: Any, obj: SyncedObject, records: Sequence[Mapping[str, Any]], page: _Page, reporter: ErrorReporter,
    stats: PullStats, failed: set[str],
) -> dict[str, int | None]:
    """Each changed record's warehouse key: from the sync state, or typed in Twenty, or None (new).

    A key typed in Twenty is taken only when nothing else claims it; a key that already names a
    warehouse row is left for the push, which links the two with the warehouse's values.
    """
    keys: dict[str, int | None] = {}
    typed: dict[int, Mapping[str, Any]] = {}
    for record in records:
        state = page.states.get(record["id"])
        if state is not None:
            keys[record["id"]] = int(state["record_key"])
            continue
        try:
            key = _typed_key(obj, record)
        except ValueError as exc:
            _pull_failed(reporter, obj, record, exc, stats, failed)
            continue
        if key is None:
            keys[record["id"]] = None
        else:
            typed[key] = record
    if typed:
        claimed = warehouse.read_sync_state(obj.object_type, typed)
        existing = warehouse.row_hashes(obj.object_type, typed)
        for key, record in typed.items():
            owner = claimed.get(str(key))
            if owner is not None and owner.get("crm_id") not in (None, record["id"]):
                _pull_failed(reporter, obj, record, f"{obj.key_field} {key} already belongs to Twenty record "
                             f"{owner['crm_id']}; two Twenty records cannot share it", stats, failed)
            elif key in existing:
                # Our key on a record we do not know: typed there by someone, or created by a push
                # that died before its bookkeeping. Either way the push claims it by this key.
                log.info("%s %s %s in Twenty names an existing warehouse row; the push links them",
                         obj.object_type, obj.key_field, key)
            else:
                keys[record["id"]] = key
    return keys


def _pull_failed(reporter: ErrorReporter, obj: SyncedObject, record: Mapping[str, Any], error: BaseException | str,
                 stats: PullStats, failed: set[str]) -> None:
    reporter.record(object_type=obj.object_type, operation="pull", error=error, crm_id=record["id"])
    stats.failed += 1
    failed.add(record["id"])


def _apply_page(
    warehouse: Any, client: TwentyClient, schema: CrmSchema, obj: SyncedObject, records: Sequence[Mapping[str, Any]],
    reporter: ErrorReporter, stats: PullStats, policy: ConflictPolicy,
) -> set[str]:
    """Merge one page of Twenty records into the warehouse; returns the Twenty ids that failed."""
    failed: set[str] = set()
    page = _Page(
        states=warehouse.read_sync_state_by_crm_id(obj.object_type, [r["id"] for r in records]),
        company_keys=_company_keys(warehouse, records) if obj is PERSON else {},
    )
    changed = []
    for record in records:
        state = page.states.get(record["id"])
        if state is not None and state.get("crm_hash") == obj.crm_hash(record, schema) \
                and state.get("status") != "deleted":
            stats.unchanged += 1  # our own push coming back, or a change to fields we do not pull
            continue
        changed.append(record)
    if not changed:
        return failed
    keys = _keys_for(warehouse, obj, changed, page, reporter, stats, failed)
    changed = [r for r in changed if r["id"] in keys]
    new = [r for r in changed if keys[r["id"]] is None]
    for record, key in zip(new, warehouse.allocate_ids(obj.object_type, len(new)), strict=True):
        keys[record["id"]] = key
    fresh = [r for r in changed if r["id"] not in page.states]
    if fresh:
        # Claim the key before the row exists, so a run killed in between reuses it instead of
        # allocating a second contact for the same Twenty record.
        warehouse.upsert_sync_state([{"object_type": obj.object_type, "record_key": str(keys[r["id"]]),
                                      "crm_id": r["id"], "status": "pending"} for r in fresh])

    rows, merged_keys = _rows_to_write(warehouse, schema, obj, changed, keys, page, reporter, stats, policy)
    write_by_field_set(warehouse.upsert_contacts if obj is PERSON else warehouse.upsert_businesses, rows)
    hashes_after = warehouse.row_hashes(obj.object_type, [r[obj.key_column] for r in rows])

    now, state_rows, to_key = now_utc(), [], []
    for record in changed:
        key = keys[record["id"]]
        state_row = {"object_type": obj.object_type, "record_key": str(key), "crm_id": record["id"],
                     "crm_hash": obj.crm_hash(record, schema), "crm_updated_at": parse_timestamp(record.get("updatedAt")),
                     "last_synced_at": now, "status": "synced", "last_error": None}
        # Nothing else changed in the warehouse: its new row is exactly what Twenty has, so the push
        # must not send it back. After a conflict the merged row still has to go out (no hash).
        state_row["warehouse_hash"] = None if key in merged_keys else hashes_after.get(key)
        if str(record.get(obj.key_field) or "") != str(key):
            # Two steps: the row is written, the key is not yet in Twenty. Pending, with no hash,
            # until the write-back is confirmed; if it never is, the push sends the row with its key.
            state_row.update(status="pending", warehouse_hash=None)
            to_key.append((record, key, hashes_after.get(key) if key not in merged_keys else None))
        state_rows.append(state_row)
        if record["id"] in page.states:
            stats.updated += 1
        else:
            stats.created += 1
    write_by_field_set(warehouse.upsert_sync_state, state_rows)
    if to_key:
        _write_back_keys(warehouse, client, schema, obj, to_key, reporter)
    return failed


def _rows_to_write(
    warehouse: Any, schema: CrmSchema, obj: SyncedObject, records: Sequence[Mapping[str, Any]],
    keys: Mapping[str, int | None], page: _Page, reporter: ErrorReporter, stats: PullStats, policy: ConflictPolicy,
) -> tuple[list[dict[str, Any]], set[int]]:
    """Warehouse rows for the changed records, and the keys whose warehouse side changed too (conflicts)."""
    synced = {keys[r["id"]]: page.states[r["id"]] for r in records if r["id"] in page.states}
    hashes_before = warehouse.row_hashes(obj.object_type, synced)
    both_changed = {k for k, s in synced.items() if hashes_before.get(k) not in (None, s.get("warehouse_hash"))}
    deleted_here = {r[obj.key_column] for r in warehouse.get_rows(obj.object_type, both_changed)
                    if r.get("deleted_at") is not None}
    rows = []
    for record in records:
        key = keys[record["id"]]
        state = page.states.get(record["id"])
        if key in both_changed:
            stats.conflicts += 1
            what = "deleted in the warehouse" if key in deleted_here else "edited in the warehouse"
            reporter.record(
                object_type=obj.object_type, operation="conflict", record_key=key, crm_id=record["id"],
                error=f"edited in Twenty (updatedAt {record.get('updatedAt')}) and {what} since the last sync; "
                      f"resolved by {policy}", settled=True,
            )
            if policy == "warehouse_wins":
                continue  # the push sends the warehouse's values (or its deletion) over Twenty's
        row = {obj.key_column: key, **obj.editable_from_crm(record, schema)}
        if (state is not None and state.get("status") == "deleted") or key in deleted_here:
            row["deleted_at"] = None  # alive in Twenty: restored there, or the edit there wins
        if obj is PERSON and "companyId" in record:
            company = record["companyId"]
            if company is None:
                row["business_id"] = None
            elif company in page.company_keys:
                row["business_id"] = page.company_keys[company]
        rows.append(row)
    return rows, both_changed


def _company_keys(warehouse: Any, records: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    crm_ids = {r["companyId"] for r in records if r.get("companyId")}
    found = warehouse.read_sync_state_by_crm_id("company", crm_ids)
    return {crm_id: int(s["record_key"]) for crm_id, s in found.items()}


def _write_back_keys(
    warehouse: Any, client: TwentyClient, schema: CrmSchema, obj: SyncedObject,
    pending: Sequence[tuple[Mapping[str, Any], int, str | None]], reporter: ErrorReporter,
) -> None:
    """Give records created in Twenty their warehouse key, so every later write matches them; each
    confirmed write-back turns its pending state into synced before the next request goes out."""
    bodies = [{"id": r["id"], obj.key_field: str(k)} for r, k, _ in pending]

    def confirmed(landed: list[tuple[int, dict[str, Any]]]) -> None:
        now = now_utc()
        warehouse.upsert_sync_state([
            {"object_type": obj.object_type, "record_key": str(pending[i][1]), "crm_id": record["id"],
             "crm_hash": obj.crm_hash(record, schema), "crm_updated_at": parse_timestamp(record.get("updatedAt")),
             "warehouse_hash": pending[i][2], "last_synced_at": now, "status": "synced", "last_error": None}
            for i, record in landed
        ])

    outcome = client.records.create_many(obj.plural, bodies, upsert=True, match_key="id", on_write=confirmed)
    for failure in outcome.failures:
        record, key, _ = pending[failure.index]
        reporter.record(object_type=obj.object_type, operation="write_key", error=failure.error, record_key=key,
                        crm_id=record["id"])
    if outcome.aborted is not None:
        reporter.record(object_type=obj.object_type, operation="write_key", error=outcome.aborted)


def _apply_deletions(warehouse: Any, obj: SyncedObject, records: Sequence[Mapping[str, Any]],
                     reporter: ErrorReporter, stats: PullStats, policy: ConflictPolicy) -> None:
    states = warehouse.read_sync_state_by_crm_id(obj.object_type, [r["id"] for r in records])
    live = {int(s["record_key"]): s for s in states.values() if s.get("status") != "deleted"}
    hashes = warehouse.row_hashes(obj.object_type, live)
    keys = []
    for key, state in live.items():
        if hashes.get(key) not in (None, state.get("warehouse_hash")):
            stats.conflicts += 1
            reporter.record(object_type=obj.object_type, operation="conflict", record_key=key, crm_id=state["crm_id"],
                            error=f"deleted in Twenty and edited in the warehouse since the last sync; "
                                  f"resolved by {policy}", settled=True)
            if policy == "warehouse_wins":
                continue  # the push upserts it by id, which brings it back in Twenty
        keys.append(key)
    if not keys:
        return
    stats.deleted += warehouse.soft_delete(obj.object_type, keys)
    after = warehouse.row_hashes(obj.object_type, keys)
    warehouse.upsert_sync_state([
        {"object_type": obj.object_type, "record_key": str(k), "status": "deleted", "warehouse_hash": after.get(k),
         "last_synced_at": now_utc()}
        for k in keys
    ])
