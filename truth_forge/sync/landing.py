"""Whether pulled values that landed late left a row that holds what its merge decided.

On BigQuery a pull reads the rows it merges without their JSON columns (most of a contact's bytes,
billed per column read), and stages what it decided (warehouse/pending_rows.py). The merge could
not see a JSON edit made without a new `updated_at`, so when the values land, the landed rows are
read whole (by the landing's own stamp, a block or so) and compared with the merge base here, where
views know what a base means. A row that passes is recorded as synced; any other is left for the
next push to compare and send.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from truth_forge.core.crm_schema import CrmSchema
from truth_forge.sync import views
from truth_forge.sync.merge import changed_since
from truth_forge.sync.objects import COMPANY, PERSON
from truth_forge.sync.store import SyncStore


def check_landings(warehouse: SyncStore, schema: CrmSchema) -> None:
    """Let `warehouse` judge the rows it lands with this schema's views."""
    warehouse.check_landed_rows_with(lambda object_type, rows, states: as_merged(schema, object_type, rows, states))


def as_merged(schema: CrmSchema, object_type: str, rows: Mapping[int, Mapping[str, Any]],
              states: Mapping[str, Mapping[str, Any]]) -> set[int]:
    """The keys of `rows` whose every field holds what their merge base says."""
    obj = PERSON if object_type == PERSON.object_type else COMPANY
    good = set()
    for key, row in rows.items():
        base = views.comparable_base(obj, schema, states.get(str(key), {}).get("base"))
        if base is not None and not changed_since(base, views.warehouse_view(obj, schema, row)):
            good.add(key)
    return good
