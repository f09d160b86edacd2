"""Pulled values that landed late: whether each row holds what its merge decided, and the record
history of a value landing kept back.

On BigQuery a pull reads the rows it merges without their JSON columns (most of a contact's bytes,
billed per column read), and stages what it decided (warehouse/pending_rows.py). The merge could
not see a JSON edit made without a new `updated_at`, so when the values land, the landed rows are
read whole (by the landing's own stamp, a block or so) and compared with the merge base here, where
views know what a base means. A row that passes is recorded as synced; any other is left for the
next push to compare and send.

The record history said Twenty's value was applied when the pull staged it. If a warehouse writer
set the field again before it landed, landing keeps that newer value: a history row says so.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from truth_forge.core.crm_schema import CrmSchema
from truth_forge.sync import changelog, views
from truth_forge.sync.context import SyncContext
from truth_forge.sync.merge import changed_since
from truth_forge.sync.objects import BY_TYPE, now_utc
from truth_forge.warehouse.pending_rows import KeptValue


def check_landings(ctx: SyncContext) -> None:
    """Let the run's warehouse judge the rows it lands with the run's views, and keep the history
    of what landing keeps back in the run's."""
    ctx.warehouse.check_landed_rows_with(
        lambda object_type, rows, states: as_merged(ctx.schema, object_type, rows, states),
        lambda kept: kept_back(ctx, kept))  # appended at once by the landing handle


def as_merged(schema: CrmSchema, object_type: str, rows: Mapping[int, Mapping[str, Any]],
              states: Mapping[str, Mapping[str, Any]]) -> set[int]:
    """The keys of `rows` whose every field holds what their merge base says."""
    obj = BY_TYPE[object_type]
    good = set()
    for key, row in rows.items():
        base = views.comparable_base(obj, schema, states.get(str(key), {}).get("base"))
        if base is not None and not changed_since(base, views.warehouse_view(obj, schema, row)):
            good.add(key)
    return good


def kept_back(ctx: SyncContext, kept: list[KeptValue]) -> list[dict[str, Any]]:
    """History rows: Twenty's staged value did not land, the warehouse's newer one stays."""
    now = now_utc()
    return [{**changelog.history_row(ctx, BY_TYPE[k.object_type], k.key, k.crm_id,
                                     (k.column, k.twenty_value, k.warehouse_value), side="warehouse",
                                     actor="warehouse", changed_at=k.warehouse_stamp, applied_at=now),
             "via": "landing"}
            for k in kept]
