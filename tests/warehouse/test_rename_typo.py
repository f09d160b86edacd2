"""A rename of one of the user's tables that names a missing table is a typo: an error naming it, on
both engines, and nothing is created (an empty table would take in the whole CRM and report success).
Only a warehouse with no tables at all (a new one) gets its renamed tables created."""

from __future__ import annotations

from typing import Any

import pytest

from truth_forge.warehouse.errors import WarehouseConfigError


def test_a_rename_to_a_missing_table_is_an_error_naming_it(open_test_warehouse: Any) -> None:
    theirs = open_test_warehouse(tables={"contacts": "people_master"})  # a new warehouse: created
    theirs.upsert_contacts([{"contact_id": 1, "canonical_name": "Ada"}])
    before = sorted(theirs._table_names())
    assert "people_master" in before and "contacts" not in before
    with pytest.raises(WarehouseConfigError) as info:
        open_test_warehouse(tables={"contacts": "people_mastr"})
    said = str(info.value)
    assert "TRUTH_FORGE_WAREHOUSE_TABLES renames 'contacts' to 'people_mastr', which does not exist" in said
    assert "did you mean 'people_master'?" in said
    assert sorted(theirs._table_names()) == before  # nothing was created
