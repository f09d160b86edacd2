"""Two warehouse rows with one contact_id (the tables have no key: an ETL reused an id) are never
synced over each other: the person in Twenty stays as it was, an open error names both rows, and
once one row is left it syncs and the error closes. On both warehouse engines.
"""

from __future__ import annotations

from typing import Any

from tests.sync.test_sync_sandbox import SCHEMA, person_by_key, record_writes
from truth_forge.sync.runner import run_sync
from truth_forge.twenty import TwentyClient
from truth_forge.warehouse.binds import Scalar
from truth_forge.warehouse.sample_data import generate_sample_data
from truth_forge.warehouse.schema import STRING


def test_a_key_held_twice_is_refused_with_an_error_naming_both_until_one_is_left(
        sandbox: Any, client: TwentyClient, warehouse: Any) -> None:
    generate_sample_data(warehouse, 12, 3, seed=5)
    assert run_sync(warehouse, client, SCHEMA).status == "succeeded"
    before = person_by_key(client, 7)
    # The ETL appends a second contact 7, stamped as every writer should.
    warehouse._run("INSERT INTO {contacts} (contact_id, canonical_name, category_code, updated_at) "
                   "VALUES (7, @name, 'C', CURRENT_TIMESTAMP())", (Scalar("name", STRING, "Seven Seven"),))
    for _ in range(2):  # every run, not only the first: nothing flips
        sandbox.clear_request_log()
        result = run_sync(warehouse, client, SCHEMA)
        assert result.status == "partial"
        assert [e.path for e in record_writes(sandbox)] == []
        assert person_by_key(client, 7)["name"] == before["name"]
    [error] = [e for e in warehouse.open_errors() if e["record_key"] == "7"]
    assert "holds 2 rows with contact_id 7" in error["error_message"]
    assert "'Seven Seven'" in error["error_message"] and repr(warehouse_name(before)) in error["error_message"]
    # One row is left (the newcomer removed): it syncs, and the error closes.
    warehouse._run("DELETE FROM {contacts} WHERE contact_id = 7 AND canonical_name = @name",
                   (Scalar("name", STRING, "Seven Seven"),))
    warehouse.upsert_contacts([{"contact_id": 7, "category_code": "D"}])  # and an edit, stamped
    result = run_sync(warehouse, client, SCHEMA)
    assert result.status == "succeeded", result.sync_errors
    assert person_by_key(client, 7)["categoryCode"] == "D"
    assert [e for e in warehouse.open_errors() if e["record_key"] == "7"] == []


def warehouse_name(person: dict[str, Any]) -> str:
    return f"{person['name']['firstName']} {person['name']['lastName']}".strip()
