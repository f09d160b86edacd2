"""Record operations of the core REST API: create/upsert, find, update, delete, restore.

The behaviour a sync depends on lives here: upsert matching on `id` and unique fields
(including soft-deleted rows, which are revived), duplicate checks against live AND
soft-deleted rows (Twenty's unique indexes have no deletedAt clause), all-or-nothing plain
batch inserts, batch upserts that update first and insert second without one transaction,
one `updatedAt` per write statement, `createdBy`/`updatedBy` stamped with the caller's actor,
cursor pagination over maintained views (views.py) and `depth`/`fields` rendering.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

from truth_forge.sandbox.actors import Credential
from truth_forge.sandbox.candidates import candidate_ids
from truth_forge.sandbox.errors import ApiError, bad_request, not_found
from truth_forge.sandbox.filters import Node, bind, evaluate, mentions_deleted_at, parse_filter
from truth_forge.sandbox.metadata import ObjectDef, composite_default
from truth_forge.sandbox.profiles import Behaviour
from truth_forge.sandbox.query import (
    OrderItem,
    decode_cursor,
    encode_cursor,
    id_from_key,
    id_slot,
    parse_depth,
    parse_fields,
    parse_limit,
    parse_order_by,
    sort_key,
)
from truth_forge.sandbox.store import RecordTable, unique_key
from truth_forge.sandbox.values import is_uuid, merge_values, normalize_input, record_defaults
from truth_forge.sandbox.views import View
from truth_forge.sandbox.workspace import RecordEvent, Workspace

# Keys whose change does not count as a field update in webhook `updatedFields`.
_BOOKKEEPING = frozenset({"updatedAt", "updatedBy"})


def check_uuid(rid: str) -> str:
    if not is_uuid(rid):
        raise bad_request(f"'{rid}' is not a valid UUID")
    return rid.lower()


class _Batch:
    """Undo log for one write statement, so a failing one leaves the tables untouched.

    `now` is the statement's one timestamp: Postgres' CURRENT_TIMESTAMP is the transaction's
    start time, so every row one statement writes carries the same `updatedAt`.
    """

    def __init__(self, table: RecordTable, now: str) -> None:
        self.table = table
        self.now = now
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

    @property
    def rules(self) -> Behaviour:
        return self.ws.config.behaviour

    def _not_found(self) -> ApiError:
        # Most versions answer 404; some older REST handlers threw BadRequestException (400).
        if self.rules.not_found_status == 400:
            return bad_request("Record not found")
        return not_found()

    def _caller(self, who: Credential | None) -> Credential:
        # In-process callers (benchmarks loading data) write as the first API key.
        if who is not None:
            return who
        return self.ws.config.credentials[self.ws.config.api_keys[0]]

    def _created_by(self, who: Credential, given: dict[str, Any] | None) -> dict[str, Any]:
        """injectActorToRecord: an input createdBy with a name is kept; otherwise the caller's
        actor, with the input's `source` if it named one (the front end does that)."""
        if given and given.get("name"):
            return {"source": given.get("source") or "MANUAL",
                    "workspaceMemberId": given.get("workspaceMemberId"),
                    "name": given["name"], "context": given.get("context") or {}}
        actor = who.actor()
        if given and given.get("source"):
            actor["source"] = given["source"]
        return actor

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
        # Twenty's unique indexes have no deletedAt clause (a custom one only leaves out the
        # field's empty default), so a soft-deleted row keeps its value taken.
        for f in obj.unique_fields():
            key = unique_key(f, rec)
            if key is not None and table.lookup(f.name, key) - {rec["id"]}:
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
                data: dict[str, Any], who: Credential | None, *,
                revive: bool = False) -> tuple[dict[str, Any], list[str]]:
        """`who` None: no hook stamps `updatedBy` on this path (a legacy upsert's update)."""
        data = {k: v for k, v in data.items() if k not in ("id", "createdBy")}
        new = merge_values(rec, data, obj, self.rules)
        if revive:
            new["deletedAt"] = None
        new["updatedAt"] = batch.now
        if who is not None:
            new["updatedBy"] = who.actor()
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
            batch = _Batch(self.ws.table(obj), self.ws.clock.now_iso())
            try:
                yield batch, events
                self._commit(obj, batch)
            except BaseException:
                batch.rollback()
                raise
        self.ws.emit(events)

    def _event(self, batch: _Batch, action: str, obj: ObjectDef, rec: dict[str, Any],
               updated: list[str] | None = None) -> RecordEvent:
        return RecordEvent(action, obj, self.render(obj, rec), batch.now, updated)

    # ----------------------------------------------------------------------------------------
    # create / upsert

    def create(self, obj: ObjectDef, items: list[Any], *, upsert: bool,
               who: Credential | None = None) -> list[dict[str, Any]]:
        """Batch (or single) create; with `upsert`, Twenty's two-step write.

        Every input is checked before anything is written. A plain create is one INSERT: all
        rows or none. An upsert matches every input against the rows that existed before the
        request, then updates the matched ones and inserts the rest as two separate writes, so
        a failing insert leaves the updates applied; the answer lists updates, then inserts.
        Both steps carry what the createMany hook injected: `updatedBy` is the caller on current
        servers, and left alone on older ones (`create_stamps_updated_by`).
        """
        who = self._caller(who)
        stamp = who if self.rules.create_stamps_updated_by else None
        inputs = []
        with self.ws.lock:
            for item in items:
                data = normalize_input(obj, item, self.rules)
                rid = data.pop("id", None)
                self._check_relations(obj, data)
                inputs.append((rid, data))
        if not upsert:
            with self._writing(obj) as (batch, events):
                created = [self._insert(obj, batch, rid, data, who) for rid, data in inputs]
                events += [self._event(batch, "created", obj, rec) for rec in created]
            return created
        table = self.ws.table(obj)
        with self.ws.lock:
            matches = [self._upsert_match(obj, table, rid, data) for rid, data in inputs]
        updated: list[dict[str, Any]] = []
        to_update = [(m, data) for m, (_, data) in zip(matches, inputs) if m is not None]
        if to_update:
            with self._writing(obj) as (batch, events):
                for match, data in to_update:
                    current = batch.table.get(match["id"])
                    if current is None:
                        continue  # destroyed meanwhile: the UPDATE finds no row
                    rec, changed = self._update(obj, batch, current, data, stamp, revive=True)
                    events.append(self._event(batch, "updated", obj, rec, changed))
                # Read back after the write: a row matched twice is answered once.
                seen = {m["id"]: batch.table.get(m["id"]) for m, _ in to_update}
            updated = [rec for rec in seen.values() if rec is not None]
        to_insert = [(rid, data) for m, (rid, data) in zip(matches, inputs) if m is None]
        inserted: list[dict[str, Any]] = []
        if to_insert:
            with self._writing(obj) as (batch, events):
                inserted = [self._insert(obj, batch, rid, data, who) for rid, data in to_insert]
                events += [self._event(batch, "created", obj, rec) for rec in inserted]
        return updated + inserted

    def _insert(self, obj: ObjectDef, batch: _Batch, rid: str | None,
                data: dict[str, Any], who: Credential) -> dict[str, Any]:
        table = batch.table
        if rid is not None and (table.get(rid) is not None or rid in batch.before):
            raise bad_request("Record already exists")
        now = batch.now
        rec: dict[str, Any] = {"id": rid or str(uuid.uuid4())}
        rec.update(record_defaults(obj))
        created_by = data.pop("createdBy", None)
        rec = merge_values(rec, data, obj, self.rules, fresh=True)
        rec["createdAt"] = data.get("createdAt") or now
        rec["updatedAt"] = now
        rec.setdefault("deletedAt", None)
        rec["createdBy"] = self._created_by(who, created_by)
        if self.rules.create_stamps_updated_by:
            rec["updatedBy"] = who.actor()
        else:  # nothing injected it: the column's default
            updated_by = obj.field("updatedBy")
            rec["updatedBy"] = composite_default("ACTOR", updated_by.default_value) \
                if updated_by else None
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
                raise self._not_found()
            return self.render(obj, rec, depth, fields)

    @staticmethod
    def _bind(obj: ObjectDef, filter_text: str | None, with_deleted: bool
              ) -> tuple[Node | None, bool]:
        """The bound filter, and whether soft-deleted rows take part.

        Soft-deleted rows are hidden unless the filter itself talks about `deletedAt`
        (graphql-query.parser: withDeleted()): that is how `deletedAt[is]:NOT_NULL` finds
        deletions, and `or(updatedAt[gte]:..,deletedAt[gte]:..)` finds both kinds of change.
        """
        node: Node | None = bind(parse_filter(filter_text), obj) if filter_text else None
        return node, with_deleted or (node is not None and mentions_deleted_at(node))

    def _scan(self, table: RecordTable, node: Node | None) -> list[dict[str, Any]]:
        """The rows the filter could match: through an index when it names ids or unique
        values, else every row."""
        ids = candidate_ids(node, table) if node is not None else None
        if ids is None:
            return list(table.values())
        return [rec for rec in map(table.get, ids) if rec is not None]

    def _filtered(self, obj: ObjectDef, filter_text: str | None,
                  *, with_deleted: bool = False) -> list[dict[str, Any]]:
        node, include_deleted = self._bind(obj, filter_text, with_deleted)
        return [rec for rec in self._scan(self.ws.table(obj), node)
                if (include_deleted or rec.get("deletedAt") is None)
                and (node is None or evaluate(node, rec))]

    def find_many(self, obj: ObjectDef, params: Mapping[str, str]) -> dict[str, Any]:
        limit = parse_limit(params.get("limit"))
        depth = parse_depth(params.get("depth"))
        fields = parse_fields(params.get("fields"), obj)
        order = parse_order_by(params.get("order_by"), obj)
        after, before = params.get("starting_after"), params.get("ending_before")
        if after and before:
            raise bad_request("'starting_after' and 'ending_before' cannot be used together")
        filter_text = params.get("filter")
        with self.ws.lock:
            table = self.ws.table(obj)
            node, include_deleted = self._bind(obj, filter_text, False)
            # One view per (filter, order) walk: the first page builds it, later pages bisect.
            view_key = (filter_text or "", include_deleted, tuple(order))
            view = table.views.get(view_key)
            if view is None:
                view = View(node, include_deleted, order, self._scan(table, node))
                if len(view.keys) > limit:  # a walk that needs a second page: keep it
                    table.views.keep(view_key, view)
            keys, has_prev, has_next = self._page(view, limit, after, before,
                                                  tie_repeats=self._tie_repeats(obj, order))
            slot = id_slot(order)
            page = [table.rows[id_from_key(k, slot)] for k in keys]
            rendered = [self.render(obj, r, depth, fields) for r in page]
            page_info = {
                "hasNextPage": has_next,
                "hasPreviousPage": has_prev,
                "startCursor": encode_cursor(page[0], order) if page else None,
                "endCursor": encode_cursor(page[-1], order) if page else None,
            }
        return {"records": rendered, "pageInfo": page_info, "totalCount": len(view.keys)}

    def _tie_repeats(self, obj: ObjectDef, order: list[OrderItem]) -> bool:
        """Whether a cursor walk on this order starts again at the first row of the cursor's tie
        (`cursor_paging` "sort_value": older servers, a DATE_TIME first sort field)."""
        first = obj.field(order[0].path[0]) if len(order[0].path) == 1 else None
        return self.rules.cursor_paging == "sort_value" and first is not None and first.type == "DATE_TIME"

    @staticmethod
    def _page(view: View, limit: int, after: str | None, before: str | None, *,
              tie_repeats: bool = False) -> tuple[list[tuple[Any, ...]], bool, bool]:
        """Keys of one page: rows strictly after (or before) the cursor's order values + id; with
        `tie_repeats`, every row whose first order value equals the cursor's comes again."""
        keys, order = view.keys, view.order
        if after:
            key = sort_key(decode_cursor(after, order), order)
            # The first item's (rank, value) sorts before every key that starts with it.
            start = keys.bisect_left(key[:2]) if tie_repeats and key[1] is not None else keys.bisect_right(key)
            return keys.slice(start, start + limit), start > 0, len(keys) - start > limit
        if before:
            end = keys.bisect_left(sort_key(decode_cursor(before, order), order))
            page = keys.slice(end - limit, end) if limit else []
            return page, end > limit, end < len(keys)
        return keys.slice(0, limit), False, len(keys) > limit

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

    def update_one(self, obj: ObjectDef, rid: str, body: Any,
                   who: Credential | None = None) -> dict[str, Any]:
        rid = check_uuid(rid)
        return self._update_rows(obj, lambda: [self._live(obj, rid)], body, who)[0]

    def update_many(self, obj: ObjectDef, filter_text: str | None, body: Any,
                    who: Credential | None = None) -> list[dict[str, Any]]:
        if not filter_text:
            raise bad_request("A filter is required to update many records")
        return self._update_rows(obj, lambda: self._filtered(obj, filter_text), body, who)

    def _live(self, obj: ObjectDef, rid: str) -> dict[str, Any]:
        rec = self.ws.table(obj).get(rid)
        if rec is None or rec.get("deletedAt") is not None:
            raise self._not_found()
        return rec

    def update_unstamped(self, obj: ObjectDef, rid: str, body: Any) -> dict[str, Any]:
        """A write through the repository, past the query runner's hooks: what older workflow "update
        record" steps did. The values land and `updatedAt` moves; `updatedBy` keeps the last editor."""
        rid = check_uuid(rid)
        return self._update_rows(obj, lambda: [self._live(obj, rid)], body, None, stamp=False)[0]

    def _update_rows(self, obj: ObjectDef, select: Any, body: Any,
                     who: Credential | None, *, stamp: bool = True) -> list[dict[str, Any]]:
        """PATCH: the update-one / update-many hooks stamp `updatedBy` in every profile."""
        who = self._caller(who) if stamp else None
        results: list[dict[str, Any]] = []
        with self._writing(obj) as (batch, events):
            data = normalize_input(obj, body, self.rules)
            self._check_relations(obj, data)
            for rec in select():
                if "id" in data and data["id"] != rec["id"]:
                    raise bad_request("The id of a record cannot be changed")
                new, changed = self._update(obj, batch, rec, data, who)
                events.append(self._event(batch, "updated", obj, new, changed))
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
                raise self._not_found()
            return [rec]

        return self._delete_rows(obj, select, soft=soft)[0]

    def delete_many(self, obj: ObjectDef, filter_text: str | None, *, soft: bool
                    ) -> list[dict[str, Any]]:
        if not filter_text:
            raise bad_request("A filter is required to delete many records")
        return self._delete_rows(obj, lambda: self._filtered(obj, filter_text), soft=soft)

    def _delete_rows(self, obj: ObjectDef, select: Any, *, soft: bool) -> list[dict[str, Any]]:
        """No actor hook runs on delete or destroy: `updatedBy` keeps the last editor."""
        results: list[dict[str, Any]] = []
        with self._writing(obj) as (batch, events):
            for rec in select():
                if soft:
                    new = {**rec, "deletedAt": batch.now, "updatedAt": batch.now}
                    batch.put(new)
                    events.append(self._event(batch, "deleted", obj, new))
                    results.append(new)
                else:
                    batch.remove(rec["id"])
                    events.append(self._event(batch, "destroyed", obj, rec))
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
                raise self._not_found()
            return [rec]

        return self._restore_rows(obj, select)[0]

    def restore_many(self, obj: ObjectDef, filter_text: str | None) -> list[dict[str, Any]]:
        if not filter_text:
            raise bad_request("A filter is required to restore many records")
        # TypeORM's restore() is an UPDATE over every row the filter matches, deleted or not.
        return self._restore_rows(
            obj, lambda: self._filtered(obj, filter_text, with_deleted=True))

    def _restore_rows(self, obj: ObjectDef, select: Any) -> list[dict[str, Any]]:
        """`SET deletedAt = NULL` on every selected row, live ones too: each gets a new
        `updatedAt` and a `restored` event, whether or not it was deleted. No actor hook runs on
        restore: `updatedBy` keeps the last editor."""
        results: list[dict[str, Any]] = []
        with self._writing(obj) as (batch, events):
            for rec in select():
                new = {**rec, "deletedAt": None, "updatedAt": batch.now}
                self._check_unique(obj, batch.table, new)
                batch.put(new)
                events.append(self._event(batch, "restored", obj, new))
                results.append(new)
        return results

    # ----------------------------------------------------------------------------------------
    # merge

    def merge_many(self, obj: ObjectDef, ids: Any, priority: Any, *, dry_run: bool = False) -> dict[str, Any]:
        """Merge duplicates into the record at `ids[priority]` (common-merge-many-query-runner).

        Each non-system field takes the priority record's value when it has one, else the first
        other record's that has one; emails are pooled (the others' addresses become additional
        ones). Many-to-one references to the others move to the survivor, the others go to the
        trash, and the survivor is written with the merged values. No actor hook runs on this path:
        the survivor's `updatedBy` (a system field, left out of the merge) stays what it was.
        """
        if not isinstance(ids, list) or len(ids) < 2 or not all(isinstance(i, str) for i in ids):
            raise bad_request("ids must be an array of at least two record ids")
        if len(ids) > MERGE_MAX_RECORDS:
            raise bad_request(f"Cannot merge more than {MERGE_MAX_RECORDS} records")
        ids = [check_uuid(i) for i in ids]
        if not isinstance(priority, int) or isinstance(priority, bool) or not 0 <= priority < len(ids):
            raise bad_request("conflictPriorityIndex must be an index into ids")
        table = self.ws.table(obj)
        with self.ws.lock:
            found = [table.get(i) for i in ids]
            if any(r is None or r.get("deletedAt") is not None for r in found):
                raise self._not_found()
            records: list[dict[str, Any]] = [r for r in found if r is not None]
            merged = _merged_values(obj, records, priority)
        survivor_id = ids[priority]
        if dry_run:
            return {**records[priority], **merged, "id": str(uuid.uuid4()), "deletedAt": self.ws.clock.now_iso()}
        losers = [i for i in ids if i != survivor_id]
        self._repoint_references(obj, losers, survivor_id)
        with self._writing(obj) as (batch, events):
            for rid in losers:
                rec = batch.table.get(rid)
                assert rec is not None
                gone = {**rec, "deletedAt": batch.now, "updatedAt": batch.now}
                batch.put(gone)
                events.append(self._event(batch, "deleted", obj, gone))
            before = batch.table.get(survivor_id)
            assert before is not None
            survivor = {**before, **merged, "updatedAt": batch.now}
            self._check_unique(obj, batch.table, survivor)
            batch.put(survivor)
            changed = [k for k in survivor if k not in _BOOKKEEPING and survivor.get(k) != before.get(k)]
            events.append(self._event(batch, "updated", obj, survivor, changed))
        return survivor

    def _repoint_references(self, obj: ObjectDef, losers: list[str], survivor: str) -> None:
        """Many-to-one references to the merged-away records now name the survivor."""
        gone = set(losers)
        with self.ws.lock:
            for other in self.ws.objects.values():
                for column, f in other.join_columns().items():
                    if not f.relation or f.relation["target"] != obj.name_singular:
                        continue
                    table = self.ws.table(other)
                    moved = [{**r, column: survivor} for r in table.values() if r.get(column) in gone]
                    for rec in moved:
                        table.put(rec)
                    self.ws.persist(other.name_singular, moved, [])


# Twenty's MUTATION_MAX_MERGE_RECORDS (twenty-shared constants).
MERGE_MAX_RECORDS = 9


def _has_value(value: Any) -> bool:
    """hasRecordFieldValue: a composite counts when any of its parts does."""
    if isinstance(value, dict):
        return any(_has_value(v) for v in value.values())
    if isinstance(value, (list, str)):
        return len(value) > 0
    return value is not None


def _merged_values(obj: ObjectDef, records: list[dict[str, Any]], priority: int) -> dict[str, Any]:
    ordered = [records[priority], *(r for i, r in enumerate(records) if i != priority)]
    merged: dict[str, Any] = {}
    for name, f in obj.fields.items():
        if f.is_system or f.type == "RELATION" and not f.join_column:
            continue
        key = f.join_column or name
        with_value = [r[key] for r in ordered if _has_value(r.get(key))]
        if not with_value:
            continue
        if f.type == "EMAILS":
            primary = next((v.get("primaryEmail") for v in with_value if v.get("primaryEmail")), None)
            pooled = [e for v in with_value for e in [v.get("primaryEmail"), *(v.get("additionalEmails") or [])] if e]
            extra = list(dict.fromkeys(e for e in pooled if e != primary))
            merged[key] = {**with_value[0], "primaryEmail": primary, "additionalEmails": extra or None}
        else:
            merged[key] = with_value[0]
    return merged
