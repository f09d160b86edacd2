"""A full pass over Twenty: what an incremental run cannot see.

The incremental pull reads what changed since its watermark. It cannot see a record destroyed in
Twenty (gone, not in the trash), nor an edit its watermark skipped (a clock far off, a watermark
reset by hand). `truth-forge sync --full` reads every record of each object, live and soft-deleted
(about N/200 requests), and:

- merges every record whose editable values differ from the last ones seen (drift), as a pull would;
- carries deletions found in the trash;
- brings back records restored from Twenty's trash whose last update was ours: a restore does not
  stamp `updatedBy`, so the incremental pull's own-writes filter (own_writes.py) leaves them out;
- takes in records the warehouse does not know (orphans: created in Twenty and missed, or carrying
  a key typed by hand), as a pull would;
- finds records the sync state links to Twenty that Twenty no longer has at all (destroyed), and
  deletes them in the warehouse too (soft delete: warehouse data is never destroyed), unless the
  warehouse edited them since and the `deleted_at` policy says the warehouse wins: then the push
  creates them again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from truth_forge.sync.context import SyncContext
from truth_forge.sync.objects import SyncedObject, now_utc
from truth_forge.sync.pull import PAGE_SIZE, PullStats, apply_deletions, apply_records


@dataclass
class ReconcileStats:
    checked: int = 0  # Twenty records read
    drifted: int = 0  # merged because they differed from the last ones seen
    taken_in: int = 0  # records the warehouse did not have
    deleted: int = 0  # deletions found in Twenty's trash
    destroyed: int = 0  # linked records Twenty no longer has at all
    conflicts: int = 0
    failed: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def reconcile_object(ctx: SyncContext, obj: SyncedObject) -> ReconcileStats:
    stats, merged = ReconcileStats(), PullStats()
    seen: set[str] = set()
    everything = "or(deletedAt[is]:NULL,deletedAt[is]:NOT_NULL)"  # naming deletedAt includes the trash
    known = _KnownInIdOrder(ctx, obj)
    try:
        for page in ctx.client.records.iter_pages(obj.plural, filter=everything, order_by="id", page_size=PAGE_SIZE):
            seen.update(r["id"] for r in page.records)
            stats.checked += len(page.records)
            live = [r for r in page.records if not r.get("deletedAt")]
            # Only records that differ from what the state says reach the merge (and its state reads).
            apply_records(ctx, obj, [r for r in live if not known.unchanged(r)], merged)
            gone = [r for r in page.records if r.get("deletedAt")]
            if gone:
                apply_deletions(ctx, obj, gone, merged)
            ctx.reporter.flush(ctx.warehouse)
            ctx.emit("page_read", phase="reconcile", object_type=obj.object_type, count=len(page.records),
                     total=page.total_count)
    finally:
        known.close()  # the state read must not stay open (DuckDB cannot checkpoint under it)
    stats.drifted, stats.taken_in, stats.deleted = merged.updated, merged.created, merged.deleted
    stats.conflicts, stats.failed = merged.conflicts, merged.failed
    # Only here, after every page was read: a walk that stopped early proves nothing about the rest.
    for batch in ctx.warehouse.linked_records(obj.object_type):
        destroyed = [(key, crm_id) for key, crm_id in batch if crm_id not in seen]
        if destroyed:
            stats.destroyed += settle_destroyed(ctx, obj, destroyed)
    return stats


class _KnownInIdOrder:
    """The state's view of each Twenty record, read beside the walk: both go in id order, so the
    state is read once, four narrow columns (on BigQuery, a state read per page billed its blocks)."""

    def __init__(self, ctx: SyncContext, obj: SyncedObject) -> None:
        self.ctx, self.obj = ctx, obj
        self.batches = ctx.warehouse.states_in_crm_id_order(obj.object_type)
        self.rows = (row for batch in self.batches for row in batch)
        self.ahead: dict[str, Any] | None = None

    def close(self) -> None:
        self.rows.close()
        close = getattr(self.batches, "close", None)
        if close is not None:
            close()

    def unchanged(self, record: Mapping[str, Any]) -> bool:
        """Synced, same editable values, and still carrying our key: nothing to merge."""
        state = self._find(str(record["id"]))
        return (state is not None and state["status"] == "synced"
                and state["crm_hash"] == self.obj.crm_hash(record, self.ctx.schema)
                and str(record.get(self.obj.key_field) or "").strip() == str(state["record_key"]))

    def _find(self, crm_id: str) -> dict[str, Any] | None:
        while self.ahead is None or self.ahead["crm_id"] < crm_id:
            self.ahead = next(self.rows, None)
            if self.ahead is None:
                self.ahead = {"crm_id": "\uffff"}  # past every id: nothing more is known
        return self.ahead if self.ahead["crm_id"] == crm_id else None


def settle_destroyed(ctx: SyncContext, obj: SyncedObject, destroyed: list[tuple[str, str]]) -> int:
    """Deleted here too, unless the warehouse edited the row since and its policy wins.

    Callers pass only records known to be gone: a 404 to a GET by id (the push's read-back), a
    `destroyed` webhook event (realtime/applier.py), or absence from a full walk that completed (above).
    Absence from a filtered list is no such evidence (a proxy, a cache or a partial answer can lose
    records): check those by id first, or leave them to the next full walk.
    """
    warehouse = ctx.warehouse
    states = warehouse.read_sync_state(obj.object_type, [key for key, _ in destroyed])
    hashes = warehouse.row_hashes(obj.object_type, [int(key) for key, _ in destroyed])
    policy = ctx.policy_for("deleted_at")
    delete, recreate = [], []
    for key, crm_id in destroyed:
        edited = hashes.get(int(key)) not in (None, states.get(key, {}).get("warehouse_hash"))
        if edited:
            ctx.reporter.record(object_type=obj.object_type, operation="conflict", record_key=key, crm_id=crm_id,
                                settled=True, error=f"destroyed in Twenty and edited in the warehouse since the last "
                                                    f"sync; resolved by {policy}")
        if edited and policy == "warehouse_wins":
            recreate.append(key)
        else:
            delete.append(int(key))
    if recreate:
        # No Twenty id and no base: the push creates the record again, whole.
        warehouse.upsert_sync_state([{"object_type": obj.object_type, "record_key": k, "crm_id": None,
                                      "base": None, "status": "pending", "warehouse_hash": None} for k in recreate])
    if delete:
        warehouse.soft_delete(obj.object_type, delete, pulled=True)
        after = warehouse.row_hashes(obj.object_type, delete)
        warehouse.upsert_sync_state([{"object_type": obj.object_type, "record_key": str(k), "status": "deleted",
                                      "warehouse_hash": after.get(k), "last_synced_at": now_utc()} for k in delete])
    return len(destroyed)
