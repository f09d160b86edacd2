"""`truth-forge sync --dry-run`: what a run would do, read from both sides, with nothing written.

Why it exists: before a first sync of a real workspace, or after changing a policy, a person wants to
see the creates, the updates field by field, the deletions and the conflicts before anything moves.
The plan reads exactly what a run reads (the setup check, the pull's pages since the watermarks,
the warehouse's change detection) and decides with the same pure functions (`views`, `merge`), but
calls no write: no Twenty POST/PATCH/DELETE, no warehouse statement that changes a row, no run row.

It is a forecast, not a replay: a real run also retries the pull's retry list, reads each update
batch back just before writing it (catching edits made meanwhile), and recovers refused creates;
none of that can be known without writing. Counts are exact, samples show the first few records of
each kind, updates with each field's old value (the merge base: what both sides last agreed on, or
the warehouse's value for what the pull would bring in) and new one. Rows the push would refuse
before sending (the push's own body checks, `mapping.py`: an unreadable phone, a NUL character) are
listed as failing, and rows it would send without a value Twenty refuses (an invalid email or
website) as sent without it; what only Twenty can refuse (a SELECT option it lacks) is not foreseen.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from truth_forge.sync import mapping, views
from truth_forge.sync.context import SyncContext
from truth_forge.sync.early_pages import ChangedPages
from truth_forge.sync.merge import FieldConflict, changed_since, merge_fields
from truth_forge.sync.objects import PERSON, SyncedObject, selected
from truth_forge.sync.pull import DEFAULT_OVERLAP, changed_pages, first_pages_ahead
from truth_forge.sync.runner import _require_setup
from truth_forge.warehouse.accounting import format_bytes

SAMPLES_PER_KIND = 5
SHOWN_VALUE = 60  # characters of a value shown in an old -> new sample


@dataclass
class Bucket:
    """One kind of change (e.g. "update in Twenty, person"): how many, which fields, a few examples."""

    count: int = 0
    fields: Counter[str] = field(default_factory=Counter)
    samples: list[str] = field(default_factory=list)
    # Per sample of an update: field -> {"old": ..., "new": ...}.
    values: list[dict[str, dict[str, Any]]] = field(default_factory=list)

    def add(self, sample: str, fields: Any = (), old: Mapping[str, Any] | None = None) -> None:
        """One change; `old` (an update's values before it) turns `fields` (a mapping of the new
        values) into old -> new pairs on the sample."""
        self.count += 1
        self.fields.update(list(fields))  # the field names (a mapping's keys), one each
        if len(self.samples) >= SAMPLES_PER_KIND:
            return
        if old is not None and isinstance(fields, Mapping):
            pairs = {name: {"old": old.get(name), "new": new} for name, new in fields.items()}
            self.values.append(pairs)
            sample += ": " + "; ".join(f"{name} {_shown(p['old'])} -> {_shown(p['new'])}"
                                       for name, p in sorted(pairs.items()))
        self.samples.append(sample)


@dataclass
class SyncPlan:
    """Changes keyed by (target side, object type, action)."""

    changes: dict[tuple[str, str, str], Bucket] = field(default_factory=dict)
    conflicts: list[str] = field(default_factory=list)
    conflict_count: int = 0
    unchanged: Counter[str] = field(default_factory=Counter)
    requests: int = 0
    # What the dry run's own warehouse reads cost (the run's change detection reads the same), and,
    # where the engine bills by bytes, what one fold of the bookkeeping into the state would bill.
    warehouse_statements: int = 0
    bytes_billed: int | None = None
    fold_bytes: int | None = None

    def bucket(self, side: str, object_type: str, action: str) -> Bucket:
        return self.changes.setdefault((side, object_type, action), Bucket())

    def conflict(self, object_type: str, key: Any, found: FieldConflict | str) -> None:
        self.conflict_count += 1
        if len(self.conflicts) < SAMPLES_PER_KIND * 2:
            text = found.describe() if isinstance(found, FieldConflict) else found
            self.conflicts.append(f"{object_type} {key}: {text}")

    def as_dict(self) -> dict[str, Any]:
        return {
            "changes": [{"to": side, "object_type": obj, "action": action, "count": b.count,
                         "fields": dict(b.fields), "samples": b.samples,
                         **({"values": b.values} if b.values else {})}
                        for (side, obj, action), b in sorted(self.changes.items())],
            "conflicts": {"count": self.conflict_count, "samples": self.conflicts},
            "unchanged": dict(self.unchanged),
            "requests": self.requests,
            "warehouse": {"statements": self.warehouse_statements, "bytes_billed": self.bytes_billed,
                          "fold_bytes": self.fold_bytes},
        }


def plan_sync(ctx: SyncContext, *, direction: str = "both", overlap: dt.timedelta = DEFAULT_OVERLAP,
              objects: Sequence[str] | None = None) -> SyncPlan:
    """Read both sides and decide, writing nothing. `ctx.reporter` is not used; `objects` as run_sync's."""
    order = selected(objects)
    before = ctx.client.transport.stats.requests
    billed_before = ctx.warehouse.statements.snapshot()
    plan = SyncPlan()
    # As a run does: the pages go out beside the setup check, and are read only after its verdict.
    early = first_pages_ahead(ctx, order, overlap, remember=False) if direction in ("both", "pull") else {}
    merged: dict[str, set[str]] = {}
    try:
        _require_setup(ctx.warehouse, ctx.client, ctx.schema, remember=False)
        for obj in order:
            if obj.object_type in early:
                merged[obj.object_type] = _plan_pull(ctx, obj, plan, overlap, early.pop(obj.object_type))
    finally:
        ChangedPages.close_unread(early)
    if direction in ("both", "push"):
        for obj in order:
            _plan_push(ctx, obj, plan, merged.get(obj.object_type, set()))
    plan.requests = ctx.client.transport.stats.requests - before
    spent = ctx.warehouse.statements.since(billed_before)
    plan.warehouse_statements, plan.bytes_billed = spent["statements"] or 0, spent["bytes_billed"]
    # A fold is a MERGE into the state: on BigQuery it bills the whole state table (the journal is small).
    plan.fold_bytes = ctx.warehouse.table_bytes("crm_sync_state")
    return plan


def _plan_pull(ctx: SyncContext, obj: SyncedObject, plan: SyncPlan, overlap: dt.timedelta,
               early: ChangedPages | None = None) -> set[str]:
    """Twenty's changes since the watermarks; returns the warehouse keys the pull would merge."""
    warehouse = ctx.warehouse
    merged: set[str] = set()
    # The very pages the pull would read.
    for page in changed_pages(ctx, obj, overlap, remember=False, early=early):
        states = warehouse.read_sync_state_by_crm_id(obj.object_type, [r["id"] for r in page.records])
        companies = _company_keys(ctx, page.records) if obj is PERSON else {}
        for record in page.records:
            state = states.get(record["id"])
            if record.get("deletedAt"):
                if state is not None and state.get("status") != "deleted":
                    plan.bucket("warehouse", obj.object_type, "delete").add(
                        _describe(obj, record, state["record_key"]))
                    merged.add(state["record_key"])
                continue
            key = _plan_record(ctx, obj, plan, record, state, companies)
            if key is not None:
                merged.add(key)
    return merged


def _plan_record(ctx: SyncContext, obj: SyncedObject, plan: SyncPlan, record: Mapping[str, Any],
                 state: Mapping[str, Any] | None, companies: Mapping[str, int]) -> str | None:
    """One changed Twenty record, decided as the pull would; returns its warehouse key if known."""
    if state is not None and state.get("crm_hash") == obj.crm_hash(record, ctx.schema) \
            and state.get("status") != "deleted":
        plan.unchanged[f"pull {obj.object_type}"] += 1
        return None
    theirs = views.twenty_view(obj, ctx.schema, record, companies)
    if state is None:
        plan.bucket("warehouse", obj.object_type, "create").add(_describe(obj, record, None), theirs)
        return None
    key = state["record_key"]
    rows = ctx.warehouse.get_rows(obj.object_type, [int(key)])
    if not rows or state.get("status") == "deleted" or rows[0].get("deleted_at") is not None:
        plan.bucket("warehouse", obj.object_type, "update").add(_describe(obj, record, key), theirs)
        return key
    ours = views.warehouse_view(obj, ctx.schema, rows[0])
    base = views.comparable_base(obj, ctx.schema, state.get("base"))
    result = merge_fields(base and views.two_way(obj, ctx.schema, base), views.two_way(obj, ctx.schema, ours),
                          theirs, ctx.policy_for)
    for found in result.conflicts:
        plan.conflict(obj.object_type, key, found)
    if result.to_warehouse:
        plan.bucket("warehouse", obj.object_type, "update").add(_describe(obj, record, key), result.to_warehouse,
                                                                old=ours)
    computed = {c: ours[c] for c in views.push_only_columns(obj, ctx.schema) if c in ours}
    to_twenty = {**result.to_twenty, **(changed_since(base, computed) if base else computed)}
    if to_twenty:
        plan.bucket("twenty", obj.object_type, "update").add(_describe(obj, record, key), to_twenty,
                                                             old=base or {})
    return key


def _plan_push(ctx: SyncContext, obj: SyncedObject, plan: SyncPlan, merged: set[str]) -> None:
    """The warehouse's changed rows, decided as the push would (rows the pull merges are done), found
    as the push finds them (the same detection, never committed), so the dry run reads what it reads."""
    for rows in ctx.warehouse.detect_changes(obj.object_type, policy=ctx.detection):
        keys = [str(r[obj.key_column]) for r in rows if str(r[obj.key_column]) not in merged]
        states = ctx.warehouse.read_sync_state(obj.object_type, keys)
        for row in rows:
            key = str(row[obj.key_column])
            if key in merged:
                continue
            sample = _describe_row(obj, row)
            if row.get("deleted_at") is not None:
                if row.get("crm_id"):
                    plan.bucket("twenty", obj.object_type, "delete").add(sample)
                continue
            refused, left_out = _push_checks(ctx, obj, row)
            if refused is not None:
                plan.bucket("twenty", obj.object_type, "fail").add(f"{sample}: {refused}")
                continue
            if left_out:
                plan.bucket("twenty", obj.object_type, "send without a value").add(f"{sample}: {'; '.join(left_out)}")
            if not row.get("crm_id"):
                plan.bucket("twenty", obj.object_type, "create").add(sample)
                continue
            base = views.comparable_base(obj, ctx.schema, states.get(key, {}).get("base"))
            ours = views.warehouse_view(obj, ctx.schema, row)
            changed = ours if base is None else changed_since(base, ours)
            if changed:
                plan.bucket("twenty", obj.object_type, "update").add(sample, changed, old=base or {})
            else:
                plan.unchanged[f"push {obj.object_type}"] += 1


def _push_checks(ctx: SyncContext, obj: SyncedObject, row: Mapping[str, Any]) -> tuple[str | None, list[str]]:
    """The push's own checks of a row's body (`push._Push._item`): why it would fail before being
    sent (None: it would be sent), and the values it would be sent without."""
    left_out: list[str] = []
    try:
        if obj is PERSON:
            mapping.contact_to_person(row, ctx.schema, default_region=ctx.default_region, left_out=left_out)
        else:
            mapping.business_to_company(row, ctx.schema, left_out=left_out)
    except ValueError as exc:
        return str(exc), left_out
    return None, left_out


def _shown(value: Any) -> str:
    text = json.dumps(value, default=str, ensure_ascii=False, sort_keys=True)
    return text if len(text) <= SHOWN_VALUE else text[:SHOWN_VALUE - 3] + "..."


def _company_keys(ctx: SyncContext, records: Any) -> dict[str, int]:
    crm_ids = {r["companyId"] for r in records if r.get("companyId")}
    found = ctx.warehouse.read_sync_state_by_crm_id("company", crm_ids)
    return {crm_id: int(s["record_key"]) for crm_id, s in found.items()}


def _describe(obj: SyncedObject, record: Mapping[str, Any], key: Any) -> str:
    name = record.get("name")
    if isinstance(name, Mapping):
        name = " ".join(p for p in (name.get("firstName"), name.get("lastName")) if p)
    ours = f"{obj.key_column} {key}, " if key is not None else ""
    return f"{ours}Twenty {record['id']}: {name or '(no name)'}"


def _describe_row(obj: SyncedObject, row: Mapping[str, Any]) -> str:
    name = row.get("canonical_name") if obj is PERSON else row.get("business_name")
    return f"{obj.key_column} {row[obj.key_column]}: {name or '(no name)'}"


def render_plan(plan: SyncPlan, policy: str) -> list[str]:
    """The plan as lines a person reads."""
    lines = [f"Dry run: nothing was written ({plan.requests} read requests to Twenty)."]
    if plan.bytes_billed is not None:
        lines.append(f"Warehouse: these reads billed {format_bytes(plan.bytes_billed)} in "
                     f"{plan.warehouse_statements} statements; the run's detection reads the same, its bookkeeping "
                     "appends bill nothing, and each fold of them into the state (at most 3 a run, only when "
                     f"there is something to fold) bills the state table, {format_bytes(plan.fold_bytes)} now.")
    for side, title in (("warehouse", "Into the warehouse (from Twenty)"), ("twenty", "Into Twenty (from the warehouse)")):
        buckets = {k: b for k, b in plan.changes.items() if k[0] == side}
        lines.append(f"{title}:" + ("" if buckets else " nothing"))
        for (_, obj, action), bucket in sorted(buckets.items()):
            by_field = ", ".join(f"{name} {n}" for name, n in bucket.fields.most_common())
            lines.append(f"  {action} {obj}: {bucket.count}" + (f"  (fields: {by_field})" if action == "update" else "")
                         + ("  (the push refuses these before sending; see why below)" if action == "fail" else ""))
            lines += [f"      e.g. {s}" for s in bucket.samples]
    lines.append(f"Conflicts: {plan.conflict_count}" + (f", settled by {policy}" if plan.conflict_count else ""))
    lines += [f"  {c}" for c in plan.conflicts]
    if plan.unchanged:
        lines.append("Unchanged: " + ", ".join(f"{k} {n}" for k, n in sorted(plan.unchanged.items())))
    return lines
