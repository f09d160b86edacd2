"""In-memory record tables with unique-key indexes and paging views.

A table per object; each unique field (person `emails.primaryEmail`, company
`domainName.primaryLinkUrl`, custom `isUnique` fields) gets a dict index so duplicate checks and
upsert matching stay O(1) even when a benchmark loads a million records. Every stored or removed
row is also handed to the table's paging views (views.py), so cursor walks stay exact.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from truth_forge.sandbox.metadata import UNIQUE_SUBFIELDS, FieldDef, ObjectDef
from truth_forge.sandbox.views import ViewCache


def unique_key(f: FieldDef, record: dict[str, Any]) -> Any:
    """The value a unique index holds for this record, or None when it is empty."""
    value = record.get(f.name)
    subs = UNIQUE_SUBFIELDS.get(f.type)
    if subs:
        if not isinstance(value, dict):
            return None
        parts = tuple(value.get(s) for s in subs)
        # Empty primary values ('' is the stored default) never collide.
        if all(p in (None, "") for p in parts):
            return None
        return parts if len(parts) > 1 else parts[0]
    if value is None or value == "":
        return None
    if isinstance(value, (list, dict)):
        return repr(value)
    return value


class RecordTable:
    def __init__(self, obj: ObjectDef) -> None:
        self.obj = obj
        self.rows: dict[str, dict[str, Any]] = {}
        # field name -> key -> ids (live AND soft-deleted rows; callers filter on deletedAt)
        self._indexes: dict[str, dict[Any, set[str]]] = {}
        self.min_position: float | None = None
        self.views = ViewCache()
        self.rebuild_indexes()

    def rebuild_indexes(self) -> None:
        """After a metadata change: fresh unique indexes, and no view bound to the old fields."""
        self.views.clear()
        self._indexes = {f.name: {} for f in self.obj.unique_fields()}
        for rec in self.rows.values():
            self._index_add(rec)

    def _index_add(self, rec: dict[str, Any]) -> None:
        for name, index in self._indexes.items():
            key = unique_key(self.obj.fields[name], rec)
            if key is not None:
                index.setdefault(key, set()).add(rec["id"])

    def _index_remove(self, rec: dict[str, Any]) -> None:
        for name, index in self._indexes.items():
            key = unique_key(self.obj.fields[name], rec)
            if key is not None and key in index:
                index[key].discard(rec["id"])
                if not index[key]:
                    del index[key]

    def put(self, rec: dict[str, Any]) -> None:
        old = self.rows.get(rec["id"])
        if old is not None:
            self._index_remove(old)
        self.rows[rec["id"]] = rec
        self._index_add(rec)
        self.views.on_change(old, rec)
        position = rec.get("position")
        if isinstance(position, (int, float)) and not isinstance(position, bool):
            if self.min_position is None or position < self.min_position:
                self.min_position = position

    def remove(self, rid: str) -> dict[str, Any] | None:
        rec = self.rows.pop(rid, None)
        if rec is not None:
            self._index_remove(rec)
            self.views.on_change(rec, None)
        return rec

    def get(self, rid: str) -> dict[str, Any] | None:
        return self.rows.get(rid)

    def lookup(self, field_name: str, key: Any) -> set[str]:
        return set(self._indexes.get(field_name, {}).get(key, set()))

    def has_index(self, field_name: str) -> bool:
        return field_name in self._indexes

    def values(self) -> Iterable[dict[str, Any]]:
        return self.rows.values()

    def next_position(self) -> float:
        # New API records go to the top, as Twenty's default "first" position does.
        return 0 if self.min_position is None else self.min_position - 1
