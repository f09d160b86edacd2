"""The keys that tie a warehouse row to its Twenty record, and links that cannot be made (issue 18, points 2, 11).

`contactId` / `businessId` in Twenty carry the warehouse's key; the sync state ties each key to one
Twenty id. A person can retype that key in Twenty. Before, the pull's hash left the key out, so
nothing happened, and when the warehouse later got a contact with the typed key the push claimed the
retyped record by it and wrote another person over it. Now a retyped key is an open error naming
the Twenty record, the key it should carry and the key it carries; the record is left out of the
sync both ways until a person sets the key back, and no record tied to one key is claimed by another.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.sync.test_sync_sandbox import SCHEMA, crm, people, person_by_key
from truth_forge.sync.runner import run_sync
from truth_forge.twenty import TwentyClient
from truth_forge.warehouse.sample_data import generate_sample_data

TYPED = 777777


@pytest.fixture
def store(warehouse: Any) -> Any:
    """40 contacts and 8 businesses, on each engine in turn (DuckDB, then BigQuery on bqemulator)."""
    generate_sample_data(warehouse, 40, 8, seed=7)
    return warehouse


def retype_key(sandbox: Any, crm_id: str, key: int | str) -> None:
    with crm(sandbox) as http:
        http.patch(f"/rest/people/{crm_id}", json={"contactId": str(key)}).raise_for_status()


def open_errors_about(store: Any, crm_id: str) -> list[dict[str, Any]]:
    return [e for e in store.open_errors("person") if e["crm_id"] == crm_id]


def test_a_contact_id_retyped_in_twenty_is_an_open_error_and_nobody_is_overwritten(
        sandbox: Any, client: TwentyClient, store: Any) -> None:
    assert run_sync(store, client, SCHEMA).status == "succeeded"
    thirty = person_by_key(client, 30)
    retype_key(sandbox, thirty["id"], TYPED)

    noticed = run_sync(store, client, SCHEMA)
    assert noticed.status == "partial"
    [error] = open_errors_about(store, thirty["id"])
    assert error["record_key"] == "30"
    assert "contactId" in error["error_message"] and "30" in error["error_message"]
    assert str(TYPED) in error["error_message"] and thirty["id"] in error["error_message"]

    # The warehouse gets a contact with the typed key, and contact 30 changes: neither is written over
    # the retyped record, which is kept out of the sync until a person mends it.
    store.upsert_contacts([{"contact_id": TYPED, "canonical_name": "Seven Seven"},
                           {"contact_id": 30, "canonical_name": "Thirty Renamed"}])
    held = run_sync(store, client, SCHEMA)
    assert held.status == "partial"
    record = client.records.get("people", thirty["id"])
    assert record["name"] == thirty["name"] and record["contactId"] == str(TYPED)
    states = store.read_sync_state("person", [30, TYPED])
    assert states["30"]["crm_id"] == thirty["id"]
    assert states.get(str(TYPED), {}).get("crm_id") != thirty["id"]  # never two keys on one Twenty id
    [claim] = [e for e in store.open_errors("person") if e["record_key"] == str(TYPED)]
    assert thirty["id"] in claim["error_message"] and "30" in claim["error_message"]
    assert store.get_rows("person", [30])[0]["canonical_name"] == "Thirty Renamed"

    # A person sets the key back: both contacts sync, every error closes.
    retype_key(sandbox, thirty["id"], 30)
    mended = run_sync(store, client, SCHEMA)
    assert mended.status == "succeeded", mended.sync_errors
    assert store.open_errors("person") == []
    assert client.records.get("people", thirty["id"])["name"] == {"firstName": "Thirty", "lastName": "Renamed"}
    assert person_by_key(client, TYPED)["name"] == {"firstName": "Seven", "lastName": "Seven"}
    assert len(people(client)) == 41


def test_a_retyped_key_with_an_edit_beside_it_is_not_merged_either(
        sandbox: Any, client: TwentyClient, store: Any) -> None:
    """The same record edited and retyped in one go: before, the key was written back silently."""
    assert run_sync(store, client, SCHEMA).status == "succeeded"
    thirty = person_by_key(client, 30)
    with crm(sandbox) as http:
        http.patch(f"/rest/people/{thirty['id']}", json={
            "contactId": str(TYPED), "name": {"firstName": "Someone", "lastName": "Else"}}).raise_for_status()
    assert run_sync(store, client, SCHEMA).status == "partial"
    assert open_errors_about(store, thirty["id"])
    assert store.get_rows("person", [30])[0]["canonical_name"] != "Someone Else"
    assert client.records.get("people", thirty["id"])["contactId"] == str(TYPED)


def test_a_contact_id_cleared_in_twenty_is_written_back(sandbox: Any, client: TwentyClient, store: Any) -> None:
    assert run_sync(store, client, SCHEMA).status == "succeeded"
    thirty = person_by_key(client, 30)
    retype_key(sandbox, thirty["id"], "")
    assert run_sync(store, client, SCHEMA).status == "succeeded"
    assert client.records.get("people", thirty["id"])["contactId"] == "30"


def test_a_contact_linked_to_a_business_missing_from_the_warehouse_has_an_open_error(
        sandbox: Any, client: TwentyClient, store: Any) -> None:
    missing = 4040
    store.upsert_contacts([{"contact_id": 12, "business_id": missing}])
    first = run_sync(store, client, SCHEMA)
    assert first.status == "partial"
    [error] = [e for e in store.open_errors("person") if e["record_key"] == "12"]
    assert f"business {missing}" in error["error_message"]
    assert store.read_sync_state("person", [12])["12"]["status"] == "pending"

    store.upsert_businesses([{"business_id": missing, "business_name": "Found Later Ltd"}])
    linked = run_sync(store, client, SCHEMA)
    assert linked.status == "succeeded", linked.sync_errors
    assert store.open_errors("person") == []
    company = next(c for c in client.records.iter_records("companies") if c["businessId"] == str(missing))
    assert person_by_key(client, 12)["companyId"] == company["id"]


def test_a_business_id_retyped_in_twenty_is_held_the_same_way(sandbox: Any, client: TwentyClient, store: Any) -> None:
    assert run_sync(store, client, SCHEMA).status == "succeeded"
    [three] = [c for c in client.records.iter_records("companies") if c["businessId"] == "3"]
    with crm(sandbox) as http:
        http.patch(f"/rest/companies/{three['id']}", json={"businessId": "5555"}).raise_for_status()
    store.upsert_businesses([{"business_id": 3, "business_name": "Renamed Here Ltd"}])
    assert run_sync(store, client, SCHEMA).status == "partial"
    [error] = [e for e in store.open_errors("company") if e["crm_id"] == three["id"]]
    assert error["record_key"] == "3" and "'5555'" in error["error_message"]
    assert client.records.get("companies", three["id"])["name"] == three["name"]  # not written over
    with crm(sandbox) as http:
        http.patch(f"/rest/companies/{three['id']}", json={"businessId": "3"}).raise_for_status()
    assert run_sync(store, client, SCHEMA).status == "succeeded"
    assert store.open_errors("company") == []
    assert client.records.get("companies", three["id"])["name"] == "Renamed Here Ltd"
