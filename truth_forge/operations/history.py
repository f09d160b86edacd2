"""A record's history, read for people: `truth-forge history contact 42` and the console's lookup.

Why it exists: the CLI and the web console show the same timeline; both call `record_history`,
which finds the record (by warehouse key, or by Twenty id through the sync state) and returns its
rows newest first with the values decoded from their JSON text.
"""

from __future__ import annotations

import json
from typing import Any

# What people type for an object, and the sync's name for it.
OBJECT_NAMES = {"contact": "person", "person": "person", "company": "company", "business": "company"}


def object_type_of(name: str) -> str:
    try:
        return OBJECT_NAMES[name.lower()]
    except KeyError:
        raise ValueError(f"unknown record type {name!r}: say contact or company") from None


def record_history(warehouse: Any, object_type: str | None = None, key: int | str | None = None,
                   crm_id: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
    """The history of one record, newest applied first. Name it by `object_type` ('contact',
    'person', 'company', 'business') and `key` (its contact_id / business_id), or by `crm_id` (its
    Twenty id; `object_type` optional). Each row: object_type, record_key, crm_id, field, old_value,
    new_value (decoded; None for the markers `(created)`, `(deleted)`...), side ('warehouse' |
    'twenty'), actor, changed_at, applied_at (aware UTC datetimes), run_id, via."""
    kind = object_type_of(object_type) if object_type else None
    if key is None and crm_id is None:
        raise ValueError("name the record: its key, or its Twenty id")
    if key is None:
        # By key where the sync state names it: the history's clustering prunes on the key.
        for candidate in (kind,) if kind else ("person", "company"):
            state = warehouse.read_sync_state_by_crm_id(candidate, [crm_id]).get(crm_id)
            if state is not None:
                kind, key = candidate, state["record_key"]
                break
    if key is not None:
        if kind is None:
            raise ValueError("a record key needs its type: contact or company")
        rows = warehouse.history_of(kind, record_key=key, limit=limit)
    else:
        rows = warehouse.history_of(kind, crm_id=crm_id, limit=limit)
    return [{**row, "old_value": _decoded(row["old_value"]), "new_value": _decoded(row["new_value"])} for row in rows]


def _decoded(text: str | None) -> Any:
    return None if text is None else json.loads(text)
