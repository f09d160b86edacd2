"""Conflicts settled by policy, reviewed by people: `truth-forge conflicts` and `conflicts resolve`.

Why it exists: the merge settles a field edited on both sides at once, by policy, and keeps its base,
warehouse and Twenty values in `crm_sync_conflicts`. A person may disagree: `resolve` applies their
choice the way every change travels. The chosen value is written to the warehouse (as any warehouse
writer would, stamped), then that one record is pushed (`push_keys`), which sends it to Twenty when it
differs from what both sides last agreed on. Both steps go to the record history with via 'resolve'
and the person's name as actor; a review row closes the conflict.
"""

from __future__ import annotations

import json
from typing import Any

from truth_forge.sync import changelog, views
from truth_forge.sync.context import SyncContext
from truth_forge.sync.objects import BY_TYPE, PERSON, now_utc
from truth_forge.sync.push import PushStats, push_keys
from truth_forge.warehouse.pending_rows import STAGED_HASH

TAKES = ("warehouse", "twenty")
# Warehouse inputs written in pairs (base.py: emails and phones replace a contact's list whole).
_PAIRS = {"primary_email": "additional_emails", "additional_emails": "primary_email",
          "primary_phone": "additional_phones", "additional_phones": "primary_phone"}


class ConflictNotFound(LookupError):
    pass


class ConflictAlreadyResolved(ValueError):
    pass


def list_conflicts(warehouse: Any, *, open_only: bool = False, limit: int = 200) -> list[dict[str, Any]]:
    """Conflicts newest first, values decoded; `is_open` while nobody has reviewed one."""
    return [_decoded(row) for row in warehouse.conflicts(open_only=open_only, limit=limit)]


def find_conflict(warehouse: Any, conflict_id: str) -> dict[str, Any]:
    """The conflict with this id (or the only one whose id starts so)."""
    found = warehouse.conflicts(conflict_id=conflict_id, limit=2)
    if not found:
        raise ConflictNotFound(f"no conflict {conflict_id!r}: list them with truth-forge conflicts")
    if len(found) > 1:
        raise ConflictNotFound(f"{conflict_id!r} starts more than one conflict id: give more of it")
    return _decoded(found[0])


def chosen_value(conflict: dict[str, Any], take: str) -> Any:
    """The value `take` names: a side's value as the conflict saw it, or a value typed by hand (JSON
    where the field holds something else than text, e.g. a number or a list)."""
    if take in TAKES:
        return conflict[f"{take}_value"]
    sides = (conflict["warehouse_value"], conflict["twenty_value"], conflict["base_value"])
    if all(v is None or isinstance(v, str) for v in sides):
        return take
    try:
        return json.loads(take)
    except ValueError:
        raise ValueError(f"{conflict['field']} holds {type(next(v for v in sides if v is not None)).__name__} "
                         f"values: give the value as JSON (e.g. 42, [\"a\"]), or --take warehouse|twenty") from None


def resolve_conflict(ctx: SyncContext, conflict_id: str, take: str, by: str) -> dict[str, Any]:
    """Apply a person's choice for one conflict: to the warehouse, then to Twenty by pushing the
    record; recorded in the history (via 'resolve', actor `by`) and as the conflict's review."""
    warehouse = ctx.warehouse
    conflict = find_conflict(warehouse, conflict_id)
    if conflict["resolved_at"] is not None:
        raise ConflictAlreadyResolved(f"conflict {conflict['conflict_id']} was already resolved by "
                                      f"{conflict['resolved_by']} at {conflict['resolved_at']}; nothing changed")
    value = chosen_value(conflict, take)
    obj = BY_TYPE[conflict["object_type"]]
    key, field = int(conflict["record_key"]), conflict["field"]
    rows = warehouse.get_rows(obj.object_type, [key])
    if rows and rows[0]["row_hash"] == STAGED_HASH:
        # Pulled values of this record still wait to land (BigQuery): landed first, or landing them
        # later could put the value the merge saw over the person's choice when the two are equal.
        warehouse.fold_pending(force=True)
        rows = warehouse.get_rows(obj.object_type, [key])
    if not rows:
        raise ConflictNotFound(f"the warehouse has no {obj.object_type} {key} any more")
    row = rows[0]
    before = views.warehouse_view(obj, ctx.schema, row).get(field, row.get(field))
    ctx.via, ctx.actor = "resolve", by
    if before != value:
        write = {obj.key_column: key, field: value}
        if field in _PAIRS:
            write[_PAIRS[field]] = row.get(_PAIRS[field])
        (warehouse.upsert_contacts if obj is PERSON else warehouse.upsert_businesses)([write])
        changed = warehouse.get_rows(obj.object_type, [key])[0].get("updated_at")
        changelog.append(ctx, [{"object_type": obj.object_type, "record_key": str(key), "crm_id": conflict["crm_id"],
                                "field": field, "old_value": changelog.as_json(before),
                                "new_value": changelog.as_json(value), "side": "warehouse", "actor": by,
                                "changed_at": changed, "applied_at": changed or now_utc(),
                                "run_id": ctx.reporter.run_id, "via": "resolve"}])
    pushed: PushStats = push_keys(ctx, obj, [key])
    warehouse.append_conflicts([{
        "conflict_id": conflict["conflict_id"], "kind": "review", "object_type": obj.object_type,
        "record_key": str(key), "crm_id": conflict["crm_id"], "field": field,
        "winner": take if take in TAKES else "value", "chosen_value": changelog.as_json(value), "actor": by,
        "run_id": ctx.reporter.run_id}])
    ctx.reporter.flush(warehouse)
    changelog.flush(ctx)
    return {"conflict_id": conflict["conflict_id"], "field": field, "value": value, "warehouse_changed": before != value,
            "push": pushed.as_dict(),
            "errors": [e for e in ctx.reporter.sync_errors if e["resolved_at"] is None]}


def _decoded(row: dict[str, Any]) -> dict[str, Any]:
    out = dict(row)
    for name in ("base_value", "warehouse_value", "twenty_value", "chosen_value"):
        out[name] = None if out.get(name) is None else json.loads(out[name])
    out["is_open"] = out.get("resolved_at") is None
    return out
