"""What the sync applied, as rows of the record history and the conflicts log.

Why it exists: the pull and the push know, at the moment they decide or land a change, the field,
its old and new value, who made it and when; this module turns that into `crm_sync_history` and
`crm_sync_conflicts` rows (warehouse/record_history.py), built in memory and appended with one
INSERT per batch, so the hot path pays a list of dicts and one statement per batch, no read.

Rows wait in the run's context and go out together, `FLUSH_ROWS` at a time and at the end of every
pull and push: on DuckDB each INSERT has a fixed cost of a few milliseconds, and on BigQuery each is
a job (a second or so of latency) on the push's thread. A run killed in between loses the history
of at most that many changes (the changes themselves are applied and kept by the sync state).

A record's whole-record events are rows with a marker for a field: `(created)`, `(restored)`,
`(deleted)`, and `(sent whole)` (a record the push sent with every field, having no merge base).
Values are JSON text in the merge's view form (sync/views.py): what Twenty stores, and for the
push-only JSON fields the digest the merge compares (kilobytes of context are not copied here).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from truth_forge.sync.context import SyncContext
from truth_forge.sync.merge import FieldConflict
from truth_forge.sync.objects import SyncedObject, now_utc, parse_timestamp

CREATED, RESTORED, DELETED, SENT_WHOLE = "(created)", "(restored)", "(deleted)", "(sent whole)"
MARKERS = (CREATED, RESTORED, DELETED, SENT_WHOLE)
FLUSH_ROWS = 2_000

# (field, old value, new value) of one record
Change = tuple[str, Any, Any]


def as_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str, separators=(",", ":"))


def twenty_actor(record: Mapping[str, Any]) -> str | None:
    """Who Twenty says last wrote a record (its `updatedBy`: a member's name, an API key's name, or
    the source alone); None where the server keeps no actor (before 1.15, or a deletion)."""
    actor = record.get("updatedBy")
    if not isinstance(actor, Mapping):
        return None
    name, source = actor.get("name"), actor.get("source")
    return str(name) if name else (str(source) if source else None)


def history_row(ctx: SyncContext, obj: SyncedObject, key: Any, crm_id: str | None, change: Change, *, side: str,
         actor: str | None, changed_at: dt.datetime | None, applied_at: dt.datetime) -> dict[str, Any]:
    name, old, new = change
    marker = name in MARKERS
    return {"object_type": obj.object_type, "record_key": None if key is None else str(key), "crm_id": crm_id,
            "field": name, "old_value": None if marker else as_json(old), "new_value": None if marker else as_json(new),
            "side": side, "actor": ctx.actor or actor, "changed_at": changed_at, "applied_at": applied_at,
            "run_id": ctx.reporter.run_id, "via": ctx.via}


def pulled(ctx: SyncContext, obj: SyncedObject, applied: Iterable[tuple[Mapping[str, Any], Any, Sequence[Change]]]
           ) -> list[dict[str, Any]]:
    """History rows of Twenty's changes the pull merged into the warehouse: (record, key, changes)."""
    now = now_utc()
    return [history_row(ctx, obj, key, record["id"], change, side="twenty", actor=twenty_actor(record),
                 changed_at=parse_timestamp(record.get("updatedAt")), applied_at=now)
            for record, key, changes in applied for change in changes]


def pulled_deletions(ctx: SyncContext, obj: SyncedObject, deleted: Iterable[tuple[Mapping[str, Any], Any]]
                     ) -> list[dict[str, Any]]:
    """Records deleted in Twenty and now in the warehouse: (record, key). Twenty stamps no actor on
    a deletion, so none is named."""
    now = now_utc()
    return [history_row(ctx, obj, key, record["id"], (DELETED, None, None), side="twenty", actor=None,
                 changed_at=parse_timestamp(record.get("deletedAt")), applied_at=now)
            for record, key in deleted]


def pushed(ctx: SyncContext, obj: SyncedObject, landed: Iterable[tuple[Mapping[str, Any], Mapping[str, Any],
                                                                        Sequence[Change] | None]]
           ) -> list[dict[str, Any]]:
    """History rows of warehouse changes that landed in Twenty: (warehouse row, Twenty's answer,
    changes; None: the row went whole, a create or a record with no merge base)."""
    now = now_utc()
    rows = []
    for row, record, changes in landed:
        if changes is None:
            changes = [(CREATED if not row.get("crm_id") else SENT_WHOLE, None, None)]
        applied = parse_timestamp(record.get("updatedAt")) or now
        rows += [history_row(ctx, obj, row[obj.key_column], record.get("id"), change, side="warehouse", actor="warehouse",
                      changed_at=row.get("updated_at"), applied_at=applied) for change in changes]
    return rows


def pushed_deletions(ctx: SyncContext, obj: SyncedObject, rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Warehouse deletions Twenty now has (soft-deleted there)."""
    now = now_utc()
    return [history_row(ctx, obj, row[obj.key_column], row.get("crm_id"), (DELETED, None, None), side="warehouse",
                 actor="warehouse", changed_at=row.get("deleted_at") or row.get("updated_at"), applied_at=now)
            for row in rows]


def conflict_row(ctx: SyncContext, obj: SyncedObject, key: Any, crm_id: str, conflict: FieldConflict
                 ) -> dict[str, Any]:
    """A conflict as the merge saw it, for `truth-forge conflicts`."""
    return {"kind": "conflict", "object_type": obj.object_type, "record_key": str(key), "crm_id": crm_id,
            "field": conflict.field, "base_value": as_json(conflict.base), "warehouse_value": as_json(conflict.warehouse),
            "twenty_value": as_json(conflict.twenty), "winner": conflict.winner, "run_id": ctx.reporter.run_id}


def append(ctx: SyncContext, rows: Sequence[dict[str, Any]]) -> None:
    """Keep a batch's history rows; appended together once `FLUSH_ROWS` wait (and by `flush`)."""
    ctx.history.extend(rows)
    if len(ctx.history) >= FLUSH_ROWS:
        flush(ctx)


def flush(ctx: SyncContext) -> None:
    """Append the history rows kept so far: one INSERT (none when there are none). Called at the end
    of every pull and push, and by the run whatever way it ends."""
    if ctx.history:
        rows, ctx.history = ctx.history, []
        ctx.warehouse.append_history(rows)
