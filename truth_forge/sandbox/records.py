"""Record operations of the core REST API: create/upsert, find, update, delete, restore.

The behaviour a sync depends on lives here: upsert matching on `id` and unique fields
(including soft-deleted rows, which are revived), duplicate checks against live rows, atomic
batches, `createdBy`/`updatedAt` bookkeeping, cursor pagination and `depth`/`fields` rendering.
"""

from __future__ import annotations

import bisect
import contextlib
import functools
import uuid
from collections.abc import Iterator
from typing import Any, Mapping

from truth_forge.sandbox.errors import bad_request, not_found
from truth_forge.sandbox.filters import Node, bind, evaluate, mentions_deleted_at, parse_filter
from truth_forge.sandbox.metadata import ObjectDef
from truth_forge.sandbox.query import (
    OrderItem,
    compare,
    decode_cursor,
    encode_cursor,
    parse_depth,
    parse_fields,
    parse_limit,
    parse_order_by,
    sort_records,
)
from truth_forge.sandbox.store import RecordTable, unique_key
from truth_forge.sandbox.values import is_uuid, merge_values, normalize_input, record_defaults
from truth_forge.sandbox.workspace import RecordEvent, Workspace

# Keys whose change does not count as a field update in webhook `updatedFields`.
_BOOKKEEPING = frozenset({"updatedAt", "updatedBy"})


def check_uuid(rid: str) -> str:
    if not is_uuid(rid):
        raise bad_request(f"'{rid}' is not a valid UUID")
    return rid.lower()


class _Batch:
    """Undo log for one request, so a failing batch leaves the tables untouched (atomic)."""

    def __init__(self, table: RecordTable) -> None:
        self.table = table
        self.before: dict[str, dict[str, Any] | None] = {}

    def put(self, rec: dict[str, Any]) -> None:
        self.before.setdefault(rec["id"], self.table.get(rec["id"]))
        self.table.put(rec)

    def remove(self, rid: str) -> dict[str, Any] | None:
        self.before.setdefault(rid, self.table.get(rid))
        return self.table.remove(rid)

    def rollback(self) -> None:
        for rid, old in self.before.items():
            self.table.remove(rid)
            if old is not None:
                self.table.put(old)

    def changes(self) -> tuple[list[dict[str, Any]], list[str]]:
        puts, deletes = [], []
        for rid in self.before:
            rec = self.table.get(rid)
            if rec is None:
                deletes.append(rid)
            else:
                puts.append(rec)
        return puts, deletes


class RecordService:
    def __init__(self, workspace: Workspace) -> None:
        self.ws = workspace

    # ----------------------------------------------------------------------------------------
    # helpers

    def _actor(self, source: str = "API") -> dict[str, Any]:
        return {"source": source, "workspaceMemberId": None,
                "name": self.ws.config.api_key_name, "context": {}}

    def _check_relations(self, obj: ObjectDef, data: dict[str, Any]) -> None:
        for column, f in obj.join_columns().items():
            target_id = data.get(column)
            if target_id is None or f.relation is None:
                continue
            target = self.ws.objects.get(f.relation["target"])
            if target is not None and self.ws.table(target).get(target_id) is None:
                # A foreign-key violation in Postgres; Twenty reports it as a 400.
                raise bad_request(f"Related {target.name_singular} record {target_id} "
                                  f"(field {f.name}) does not exist")

    def _check_unique(self, obj: ObjectDef, table: RecordTable, rec: dict[str, Any]) -> None:
        # Unique indexes carry `WHERE "deletedAt" IS NULL`: only live rows collide.
        if rec.get("deletedAt") is not None:
            return
        for f in obj.unique_fields():
            key = unique_key(f, rec)
            if key is None:
                continue
            for other_id in table.lookup(f.name, key) - {rec["id"]}:
                other = table.get(other_id)
                if other is not None and other.get("deletedAt") is None:
                    raise bad_request(f"A duplicate entry was detected. Duplicate {f.label}. "
                                      "Please set a unique one.")

    def _upsert_match(self, obj: ObjectDef, table: RecordTable, rid: str | None,
                      data: dict[str, Any]) -> dict[str, Any] | None:
        """The one existing row (soft-deleted included) this input matches, if any."""
        matches: dict[str, list[str]] = {}
        if rid and table.get(rid) is not None:
            matches.setdefault(rid, []).append("id")
        for f in obj.unique_fields():
            key = unique_key(f, data)
            if key is None:
                continue
            for other in table.lookup(f.name, key):
                matches.setdefault(other, []).append(f.name)
        if len(matches) > 1:
            keys = sorted({k for names in matches.values() for k in names})
            raise bad_request("Multiple records found with the same unique field values for "
                              f"{', '.join(keys)}. Cannot determine which record to update.")
        return table.get(next(iter(matches))) if matches else None

    def _update(self, obj: ObjectDef, batch: _Batch, rec: dict[str, Any],
                data: dict[str, Any], *, revive: bool = False) -> tuple[dict[str, Any], list[str]]:
        data = {k: v for k, v in data.items() if k not in ("id", "createdBy")}
        new = merge_values(rec, data, obj)
        if revive:
            new["deletedAt"] = None
        new["updatedAt"] = self.ws.clock.now_iso()
        new["updatedBy"] = self._actor()
        self._check_unique(obj, batch.table, new)
        batch.put(new)
        changed = [k for k in new if k not in _BOOKKEEPING and new.get(k) != rec.get(k)]
        return new, changed

    def _commit(self, obj: ObjectDef, batch: _Batch) -> None:
        puts, deletes = batch.changes()
        self.ws.persist(obj.name_singular, puts, deletes)

    @contextlib.contextmanager
    def _writing(self, obj: ObjectDef) -> Iterator[tuple[_Batch, list[RecordEvent]]]:
        """One atomic write: under the workspace lock, committed whole or rolled back whole;
        its webhook events go out only after it committed."""
        events: list[RecordEvent] = []
        with self.ws.lock:
            batch = _Batch(self.ws.table(obj))
            try:
                yield batch, events
                self._commit(obj, batch)
            except BaseException:
                batch.rollback()
                raise
        self.ws.emit(events)

    def _event(self, action: str, obj: ObjectDef, rec: dict[str, Any],
               updated: list[str] | None = None) -> RecordEvent:
        return RecordEvent(action, obj, self.render(obj, rec), self.ws.clock.now_iso(), updated)

    # ----------------------------------------------------------------------------------------
    # create / upsert

    def create(self, obj: ObjectDef, items: list[Any], *, upsert: bool) -> list[dict[str, Any]]:
        results: list[dict[str, Any]] = []
        with self._writing(obj) as (batch, events):
            for item in items:
                data = normalize_input(obj, item)
                rid = data.pop("id", None)
                self._check_relations(obj, data)
                match = self._upsert_match(obj, batch.table, rid, data) if upsert else None
                if match is not None:
                    rec, changed = self._update(obj, batch, match, data, revive=True)
                    events.append(self._event("updated", obj, rec, changed))
                else:
                    rec = self._insert(obj, batch, rid, data)
                    events.append(self._event("created", obj, rec))
                results.append(rec)
        return results

    def _insert(self, obj: ObjectDef, batch: _Batch, rid: str | None,
                data: dict[str, Any]) -> dict[str, Any]:
        table = batch.table
        if rid is not None and (table.get(rid) is not None or rid in batch.before):
            raise bad_request("Record already exists")
        now = self.ws.clock.now_iso()
        rec: dict[str, Any] = {"id": rid or str(uuid.uuid4())}
        rec.update(record_defaults(obj))
        created_by = data.pop("createdBy", None) or {}
        rec = merge_values(rec, data, obj)
        rec["createdAt"] = data.get("createdAt") or now
        rec["updatedAt"] = now
        rec.setdefault("deletedAt", None)
        rec["createdBy"] = self._actor(created_by.get("source") or "API")
        rec["updatedBy"] = self._actor()
        if data.get("position") is None:
            rec["position"] = table.next_position()
        self._check_unique(obj, table, rec)
        batch.put(rec)
        return rec

    # ----------------------------------------------------------------------------------------
    # read

    def find_one(self, obj: ObjectDef, rid: str, params: Mapping[str, str]) -> dict[str, Any]:
        rid = check_uuid(rid)
        depth = parse_depth(params.get("depth"))
        fields = parse_fields(params.get("fields"), obj)
        with self.ws.lock:
            rec = self.ws.table(obj).get(rid)
            if rec is None or rec.get("deletedAt") is not None:
                raise not_found()
            return self.render(obj, rec, depth, fields)

    def _filtered(self, obj: ObjectDef, filter_text: str | None,
                  *, deleted_only: bool = False) -> list[dict[str, Any]]:
        node: Node | None = bind(parse_filter(filter_text), obj) if filter_text else None
        # Soft-deleted rows are hidden unless the filter itself talks about `deletedAt`
        # (as GraphQL does): that is how `deletedAt[is]:NOT_NULL` finds deletions.
        include_deleted = deleted_only or (node is not None and mentions_deleted_at(node))
        rows = []
        for rec in self.ws.table(obj).values():
            deleted = rec.get("deletedAt") is not None
            if deleted_only and not deleted:
                continue
            if deleted and not include_deleted:
                continue
            if node is None or evaluate(node, rec):
                rows.append(rec)
        return rows

    def find_many(self, obj: ObjectDef, params: Mapping[str, str]) -> dict[str, Any]:
        limit = parse_limit(params.get("limit"))
        depth = parse_depth(params.get("depth"))
        fields = parse_fields(params.get("fields"), obj)
        order = parse_order_by(params.get("order_by"), obj)
        after, before = params.get("starting_after"), params.get("ending_before")
        if after and before:
            raise bad_request("'starting_after' and 'ending_before' cannot be used together")
        with self.ws.lock:
            rows = sort_records(self._filtered(obj, params.get("filter")), order)
            page, has_prev, has_next = self._page(rows, order, limit, after, before)
            rendered = [self.render(obj, r, depth, fields) for r in page]
            page_info = {
                "hasNextPage": has_next,
                "hasPreviousPage": has_prev,
                "startCursor": encode_cursor(page[0], order) if page else None,
                "endCursor": encode_cursor(page[-1], order) if page else None,
            }
        return {"records": rendered, "pageInfo": page_info, "totalCount": len(rows)}

    @staticmethod
    def _page(rows: list[dict[str, Any]], order: list[OrderItem], limit: int,
              after: str | None, before: str | None) -> tuple[list[dict[str, Any]], bool, bool]:
        key = functools.cmp_to_key(lambda a, b: compare(a, b, order))
        if after:
            start = bisect.bisect_right(rows, key(decode_cursor(after, order)), key=key)
            window = rows[start:]
            return window[:limit], start > 0, len(window) > limit
        if before:
            end = bisect.bisect_left(rows, key(decode_cursor(before, order)), key=key)
            window = rows[:end]
            page = window[-limit:] if limit else []
            return page, len(window) > limit, end < len(rows)
        return rows[:limit], False, len(rows) > limit

    def render(self, obj: ObjectDef, rec: dict[str, Any], depth: int = 0,
               fields: list[str] | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in obj.fields.values():
            if f.type == "RELATION":
                if f.join_column:
                    out[f.join_column] = rec.get(f.join_column)
                if depth >= 1 and f.relation is not None:
                    out[f.name] = self._related(f.relation, rec)
                continue
            out[f.name] = rec.get(f.name)
        if fields is not None:
            out = {k: v for k, v in out.items() if k == "id" or k in fields}
        return out

    def _related(self, relation: dict[str, Any], rec: dict[str, Any]) -> Any:
        target = self.ws.objects.get(relation["target"])
        if relation["kind"] == "MANY_TO_ONE":
            target_id = rec.get(relation["joinColumn"])
            if target is None or target_id is None:
                return None
            other = self.ws.table(target).get(target_id)
            return self.render(target, other) if other and not other.get("deletedAt") else None
        if target is None:
            return []
        inverse = target.field(relation["inverse"])
        column = inverse.join_column if inverse else None
        return [self.render(target, r) for r in self.ws.table(target).values()
                if column and r.get(column) == rec["id"] and not r.get("deletedAt")]

    # ----------------------------------------------------------------------------------------
    # update

    def update_one(self, obj: ObjectDef, rid: str, body: Any) -> dict[str, Any]:
        rid = check_uuid(rid)
        return self._update_rows(obj, lambda: [self._live(obj, rid)], body)[0]

    def update_many(self, obj: ObjectDef, filter_text: str | None, body: Any
                    ) -> list[dict[str, Any]]:
        if not filter_text:
            raise bad_request("A filter is required to update many records")
        return self._update_rows(obj, lambda: self._filtered(obj, filter_text), body)

    def _live(self, obj: ObjectDef, rid: str) -> dict[str, Any]:
        rec = self.ws.table(obj).get(rid)
        if rec is None or rec.get("deletedAt") is not None:
            raise not_found()
        return rec

    def _update_rows(self, obj: ObjectDef, select: Any, body: Any) -> list[dict[str, Any]]:
        results: list[dict[str, Any]] = []
        with self._writing(obj) as (batch, events):
            data = normalize_input(obj, body)
            self._check_relations(obj, data)
            for rec in select():
                if "id" in data and data["id"] != rec["id"]:
                    raise bad_request("The id of a record cannot be changed")
                new, changed = self._update(obj, batch, rec, data)
                events.append(self._event("updated", obj, new, changed))
                results.append(new)
        return results

    # ----------------------------------------------------------------------------------------
    # delete / restore

    def delete_one(self, obj: ObjectDef, rid: str, *, soft: bool) -> dict[str, Any]:
        rid = check_uuid(rid)

        def select() -> list[dict[str, Any]]:
            rec = self.ws.table(obj).get(rid)
            # Destroy also reaches soft-deleted rows; soft delete only live ones.
            if rec is None or (soft and rec.get("deletedAt") is not None):
                raise not_found()
            return [rec]

        return self._delete_rows(obj, select, soft=soft)[0]

    def delete_many(self, obj: ObjectDef, filter_text: str | None, *, soft: bool
                    ) -> list[dict[str, Any]]:
        if not filter_text:
            raise bad_request("A filter is required to delete many records")
        return self._delete_rows(obj, lambda: self._filtered(obj, filter_text), soft=soft)

    def _delete_rows(self, obj: ObjectDef, select: Any, *, soft: bool) -> list[dict[str, Any]]:
        results: list[dict[str, Any]] = []
        with self._writing(obj) as (batch, events):
            for rec in select():
                if soft:
                    now = self.ws.clock.now_iso()
                    new = {**rec, "deletedAt": now, "updatedAt": now}
                    batch.put(new)
                    events.append(self._event("deleted", obj, new))
                    results.append(new)
                else:
                    batch.remove(rec["id"])
                    events.append(self._event("destroyed", obj, rec))
                    results.append({"id": rec["id"]})
            if not soft:
                self._null_dangling_references(obj, [r["id"] for r in results])
        return results

    def _null_dangling_references(self, obj: ObjectDef, ids: list[str]) -> None:
        """ON DELETE SET NULL for many-to-one relations pointing at destroyed rows."""
        gone = set(ids)
        for other in self.ws.objects.values():
            for column, f in other.join_columns().items():
                if not f.relation or f.relation["target"] != obj.name_singular:
                    continue
                table = self.ws.table(other)
                changed = [{**r, column: None} for r in table.values() if r.get(column) in gone]
                for rec in changed:
                    table.put(rec)
                self.ws.persist(other.name_singular, changed, [])

    def restore_one(self, obj: ObjectDef, rid: str) -> dict[str, Any]:
        rid = check_uuid(rid)

        def select() -> list[dict[str, Any]]:
            rec = self.ws.table(obj).get(rid)
            if rec is None:
                raise not_found()
            return [rec]

        return self._restore_rows(obj, select)[0]

    def restore_many(self, obj: ObjectDef, filter_text: str | None) -> list[dict[str, Any]]:
        if not filter_text:
            raise bad_request("A filter is required to restore many records")
        return self._restore_rows(
            obj, lambda: self._filtered(obj, filter_text, deleted_only=True))

    def _restore_rows(self, obj: ObjectDef, select: Any) -> list[dict[str, Any]]:
        results: list[dict[str, Any]] = []
        with self._writing(obj) as (batch, events):
            for rec in select():
                if rec.get("deletedAt") is None:
                    results.append(rec)  # already live: nothing to restore
                    continue
                new = {**rec, "deletedAt": None, "updatedAt": self.ws.clock.now_iso()}
                self._check_unique(obj, batch.table, new)
                batch.put(new)
                events.append(self._event("restored", obj, new))
                results.append(new)
        return results
