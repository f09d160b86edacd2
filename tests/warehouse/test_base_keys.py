"""The merge base is stored with short field names and read back with the full ones; a base saved
before the aliases (full names) reads the same, and the sync never sees an alias."""

from __future__ import annotations

import json
from typing import Any

from truth_forge.core.crm_schema import CrmSchema
from truth_forge.sync import views
from truth_forge.sync.objects import COMPANY, PERSON
from truth_forge.warehouse import Warehouse, base_keys
from truth_forge.warehouse.binds import Scalar
from truth_forge.warehouse.sample_data import generate_sample_data
from truth_forge.warehouse.schema import STRING

SCHEMA = CrmSchema.load()


def stored_base(wh: Warehouse, key: str) -> Any:
    rows, _ = wh._run("SELECT TO_JSON_STRING(t.base) AS base FROM {crm_sync_state} AS t "
                      "WHERE t.record_key = '" + key + "'", (), fetch=True)
    return rows[0]["base"]


def test_every_field_a_view_holds_has_one_alias_of_its_own(warehouse: Warehouse) -> None:
    generate_sample_data(warehouse, 3, 1, seed=2)
    fields = set(views.warehouse_view(PERSON, SCHEMA, warehouse.get_rows("person", [1])[0]))
    fields |= set(views.warehouse_view(COMPANY, SCHEMA, warehouse.get_rows("company", [1])[0]))
    encoded = base_keys.encode({f: 1 for f in fields})
    assert all(k.startswith("~") for k in encoded) and len(encoded) == len(fields)
    assert base_keys.decode(encoded) == {f: 1 for f in fields}


def test_a_base_is_stored_short_read_back_whole_and_an_older_base_reads_the_same(warehouse: Warehouse) -> None:
    generate_sample_data(warehouse, 3, 1, seed=2)
    view = views.warehouse_view(PERSON, SCHEMA, warehouse.get_rows("person", [2])[0])
    warehouse.upsert_sync_state([{"object_type": "person", "record_key": "2", "status": "synced", "base": view}])
    warehouse.fold_journal(force=True)
    text = stored_base(warehouse, "2")
    assert "canonical_name" not in text and len(text) < len(str(view)) * 3 // 4
    warehouse.fold_journal(forget=True)  # read through, not from this process's memory
    assert warehouse.read_sync_state("person", [2])["2"]["base"] == view
    # A base an older truth-forge saved with the full names.
    warehouse._run("UPDATE {crm_sync_state} SET base = PARSE_JSON(@b) WHERE record_key = '2'",
                   (Scalar("b", STRING, json.dumps(view)),))
    warehouse.fold_journal(forget=True)
    assert warehouse.read_sync_state("person", [2])["2"]["base"] == view

