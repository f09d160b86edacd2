"""The two-way sync end to end: a real DuckDB file, the sandbox over loopback HTTP, no mocks."""

from __future__ import annotations

import dataclasses
from typing import Any

import httpx
import pytest

from tests.fixtures.sandbox import as_person
from truth_forge.core.crm_schema import CrmSchema
from truth_forge.core.reporting import ErrorReporter
from truth_forge.sync.context import SyncContext
from truth_forge.sync.objects import PERSON
from truth_forge.sync.pull import pull_records
from truth_forge.sync.runner import run_sync
from truth_forge.twenty import TwentyClient
from truth_forge.warehouse.detection import DetectionPolicy
from truth_forge.warehouse.sample_data import generate_sample_data

SCHEMA = CrmSchema.load()


@pytest.fixture(params=["", "?journal_fold_share=1000000&stage_pulled=true&pending_fold_minutes=1000000"],
                ids=["folded", "journal-kept"])
def store_options(request: pytest.FixtureRequest) -> str:
    """Every test twice: with the sync-state journal folded at every settle and pulled values written
    at once (DuckDB's default), and BigQuery's way pushed to its limit: the journal kept beside the
    state, folded only before a reader of the state table alone, and pulled values staged beside
    contacts, landing only when a reader needs the table itself."""
    return str(request.param)
SEED = 6
WRITES = {"POST", "PATCH", "PUT", "DELETE"}


def people(client: TwentyClient) -> list[dict[str, Any]]:
    return list(client.records.iter_records("people"))


def record_writes(sandbox: Any) -> list[Any]:
    return [e for e in sandbox.request_log if e.method in WRITES and not e.path.startswith("/rest/metadata")]


def crm(sandbox: Any) -> httpx.Client:
    """Someone editing in Twenty: plain HTTP, not our client."""
    return httpx.Client(base_url=sandbox.base_url, headers=as_person(sandbox))


def test_first_run_pushes_everything_and_links_companies(sandbox: Any, client: TwentyClient, store: Any) -> None:
    result = run_sync(store, client, SCHEMA)
    assert result.status == "succeeded", result.sync_errors
    assert result.counts["push_person"]["upserted"] == 40 and result.counts["push_company"]["upserted"] == 8
    crm_people = people(client)
    assert sorted(int(p["contactId"]) for p in crm_people) == list(range(1, 41))
    companies = {c["id"]: int(c["businessId"]) for c in client.records.iter_records("companies")}
    linked = {int(p["contactId"]): companies[p["companyId"]] for p in crm_people if p.get("companyId")}
    expected = {r["contact_id"]: r["business_id"] for r in store.get_rows("person", range(1, 41)) if r["business_id"]}
    assert linked == expected and linked
    run = store.get_run(result.run_id)
    assert run["status"] == "succeeded" and run["counts"]["requests"] == result.counts["requests"]


def test_second_run_writes_nothing(sandbox: Any, client: TwentyClient, store: Any) -> None:
    run_sync(store, client, SCHEMA)
    sandbox.clear_request_log()
    result = run_sync(store, client, SCHEMA)
    assert result.status == "succeeded"
    assert record_writes(sandbox) == []
    assert result.counts["push_person"] == {"upserted": 0, "deleted": 0, "failed": 0, "caught_up": 0}
    # Our own writes are left out at the server (updatedBy is our API key): one empty page per object.
    assert result.counts["pull_person"]["unchanged"] == 0 and result.counts["requests"] == 2


def test_a_warehouse_edit_sends_exactly_that_record(sandbox: Any, client: TwentyClient, store: Any) -> None:
    run_sync(store, client, SCHEMA)
    store.upsert_contacts([{"contact_id": 5, "category_code": "X", "llm_context": {"note": "moved abroad"}}])
    sandbox.clear_request_log()
    run_sync(store, client, SCHEMA)
    [write] = record_writes(sandbox)
    assert write.path == "/rest/batch/people" and write.batch_size == 1
    [five] = [p for p in people(client) if p["contactId"] == "5"]
    assert five["categoryCode"] == "X" and "moved abroad" in five["llmContext"]


def test_an_edit_in_twenty_comes_back_and_is_not_echoed(sandbox: Any, client: TwentyClient, store: Any) -> None:
    run_sync(store, client, SCHEMA)
    [seven] = [p for p in people(client) if p["contactId"] == "7"]
    with crm(sandbox) as http:
        http.patch(f"/rest/people/{seven['id']}", json={
            "name": {"firstName": "Grace", "lastName": "Hopper"}, "relationshipCategory": "FAMILY",
            "llmContext": "typed into the CRM by hand"}).raise_for_status()
    result = run_sync(store, client, SCHEMA)
    assert result.counts["pull_person"]["updated"] == 1
    [row] = store.get_rows("person", [7])
    assert row["canonical_name"] == "Grace Hopper" and row["relationship_category"] == "FAMILY"
    assert row["llm_context"] != "typed into the CRM by hand"  # computed fields belong to the warehouse
    # The pulled edit is not pushed back...
    assert result.counts["push_person"]["upserted"] == 0
    sandbox.clear_request_log()
    # ...and the next run is quiet too.
    run_sync(store, client, SCHEMA)
    assert record_writes(sandbox) == []


def test_a_person_created_in_twenty_gets_a_contact_id(sandbox: Any, client: TwentyClient, store: Any) -> None:
    run_sync(store, client, SCHEMA)
    with crm(sandbox) as http:
        made = http.post("/rest/people", json={"name": {"firstName": "New", "lastName": "Person"},
                                                "emails": {"primaryEmail": "new@example.org"}}).json()
    new_id = made["data"]["createPerson"]["id"]
    result = run_sync(store, client, SCHEMA)
    assert result.counts["pull_person"]["created"] == 1
    [state] = store.read_sync_state_by_crm_id("person", [new_id]).values()
    contact_id = int(state["record_key"])
    assert contact_id > 40
    [row] = store.get_rows("person", [contact_id])
    assert row["canonical_name"] == "New Person" and row["primary_email"] == "new@example.org"
    assert client.records.get("people", new_id)["contactId"] == str(contact_id)
    run_sync(store, client, SCHEMA)
    store.fold_pending(force=True)  # the table itself (staged values land in it only now and then)
    assert store.count_rows("contacts") == 41 and len(people(client)) == 41


def test_deletions_travel_both_ways(sandbox: Any, client: TwentyClient, store: Any) -> None:
    run_sync(store, client, SCHEMA)
    [three] = [p for p in people(client) if p["contactId"] == "3"]
    with crm(sandbox) as http:
        http.delete(f"/rest/people/{three['id']}", params={"soft_delete": "true"}).raise_for_status()
    store.soft_delete("person", [4])
    result = run_sync(store, client, SCHEMA)
    assert result.counts["pull_person"]["deleted"] == 1 and result.counts["push_person"]["deleted"] == 1
    assert store.get_rows("person", [3])[0]["deleted_at"] is not None
    assert {p["contactId"] for p in people(client)} == {str(i) for i in range(1, 41)} - {"3", "4"}
    sandbox.clear_request_log()
    run_sync(store, client, SCHEMA)
    assert record_writes(sandbox) == []


def test_a_conflict_is_recorded_and_twenty_wins(sandbox: Any, client: TwentyClient, store: Any) -> None:
    run_sync(store, client, SCHEMA)
    [nine] = [p for p in people(client) if p["contactId"] == "9"]
    with crm(sandbox) as http:
        http.patch(f"/rest/people/{nine['id']}", json={"categoryCode": "A"}).raise_for_status()
    store.upsert_contacts([{"contact_id": 9, "category_code": "H", "ai_insights": {"score": 3}}])
    result = run_sync(store, client, SCHEMA)
    # Settled by the policy: recorded and counted, but not a failed record.
    assert result.status == "succeeded" and result.counts["pull_person"]["conflicts"] == 1
    [conflict] = [e for e in result.sync_errors if e["operation"] == "conflict"]
    assert conflict["record_key"] == "9" and conflict["run_id"] == result.run_id
    assert conflict["resolved_at"] is not None
    assert conflict["error_message"] == ("category_code edited on both sides since the last sync: base 'C', "
                                         "warehouse 'H', Twenty 'A'; twenty wins")
    assert store.count_rows("crm_sync_errors") == 1
    assert store.open_errors("person") == []
    assert store.get_rows("person", [9])[0]["category_code"] == "A"
    [nine_after] = [p for p in people(client) if p["contactId"] == "9"]
    assert nine_after["categoryCode"] == "A" and '"score":3' in nine_after["aiInsights"]


def test_a_bad_row_is_recorded_and_the_rest_sync(sandbox: Any, client: TwentyClient, store: Any) -> None:
    store.upsert_contacts([{"contact_id": 2, "primary_phone": "not a phone", "additional_phones": []}])
    result = run_sync(store, client, SCHEMA)
    assert result.status == "partial" and result.counts["push_person"]["failed"] == 1
    [error] = result.sync_errors
    assert error["record_key"] == "2" and "not a phone" in error["error_message"]
    assert len(people(client)) == 39
    assert [e["record_key"] for e in store.open_errors("person")] == ["2"]
    # Fixed in the warehouse: the next run sends it and closes the error.
    store.upsert_contacts([{"contact_id": 2, "primary_phone": "+14155550199", "additional_phones": []}])
    result = run_sync(store, client, SCHEMA)
    assert result.status == "succeeded" and len(people(client)) == 40
    assert store.open_errors("person") == []


def test_a_run_killed_midway_converges_without_duplicates(sandbox: Any, client: TwentyClient, store: Any) -> None:
    assert run_sync(store, client, SCHEMA).status == "succeeded"
    store.upsert_contacts([{"contact_id": i, "subcategory_code": f"S{i}"} for i in range(1, 41)])
    client.transport.retry.max_retries = 0
    client.records.batch_size = 10
    # A seeded outage on the people batches: some land, some fail; the run carries on past each
    # failed batch (fewer than three in a row) and records the records that did not land.
    sandbox.set_faults(error_rate=0.5, error_statuses=(503,), path_prefix="/rest/batch/people", seed=SEED)
    broken = run_sync(store, client, SCHEMA)
    assert broken.status == "partial"
    landed = sum(1 for p in people(client) if p["subcategoryCode"].startswith("S"))
    assert 0 < landed < 40, landed
    assert broken.counts["push_person"]["failed"] == 40 - landed
    assert store.get_run(broken.run_id)["status"] == "partial"
    assert len(store.open_errors("person")) == 40 - landed
    assert all(e["http_status"] == 503 for e in broken.sync_errors)
    sandbox.clear_faults()
    healed = run_sync(store, client, SCHEMA)
    assert healed.status == "succeeded" and healed.counts["push_person"]["upserted"] == 40 - landed
    assert store.open_errors() == []  # every error closed once its record went through
    crm_people = people(client)
    assert len(crm_people) == 40 and {p["subcategoryCode"] for p in crm_people} == {f"S{i}" for i in range(1, 41)}


def test_the_loop_on_both_warehouse_engines(sandbox: Any, client: TwentyClient, warehouse: Any) -> None:
    """The same sync on DuckDB and on BigQuery (bqemulator): push, a Twenty edit back, then quiet."""
    generate_sample_data(warehouse, 15, 3, seed=3)
    first = run_sync(warehouse, client, SCHEMA)
    assert first.status == "succeeded" and first.counts["push_person"]["upserted"] == 15
    [four] = [p for p in people(client) if p["contactId"] == "4"]
    with crm(sandbox) as http:
        http.patch(f"/rest/people/{four['id']}", json={"jobTitle": "ignored", "categoryCode": "G"}).raise_for_status()
    second = run_sync(warehouse, client, SCHEMA)
    assert second.counts["pull_person"]["updated"] == 1 and second.counts["push_person"]["upserted"] == 0
    assert warehouse.get_rows("person", [4])[0]["category_code"] == "G"
    sandbox.clear_request_log()
    assert run_sync(warehouse, client, SCHEMA).status == "succeeded"
    assert record_writes(sandbox) == []


def forget_state(store: Any, object_type: str, keys: list[str]) -> None:
    """Lose these records' sync state, as a hand edit of crm_sync_state would: only the audit finds
    rows whose state is gone (nothing stamps them), so the next run is asked to audit."""
    store.fold_journal(force=True)
    quoted = ", ".join(f"'{k}'" for k in keys)
    store._run(f"DELETE FROM {{crm_sync_state}} WHERE object_type = '{object_type}' AND record_key IN ({quoted})", ())
    store.fold_journal(forget=True)


def person_by_key(client: TwentyClient, key: int) -> dict[str, Any]:
    [found] = [p for p in people(client) if p["contactId"] == str(key)]
    return found


def test_a_new_contact_sharing_an_email_never_takes_over_another_record(
        sandbox: Any, client: TwentyClient, store: Any) -> None:
    run_sync(store, client, SCHEMA)
    taken = person_by_key(client, 1)
    email = taken["emails"]["primaryEmail"]
    store.upsert_contacts([
        {"contact_id": 100, "canonical_name": "Other Person", "primary_email": email, "additional_emails": []},
        {"contact_id": 101, "canonical_name": "Twin A", "primary_email": "twin@example.org", "additional_emails": []},
        {"contact_id": 102, "canonical_name": "Twin B", "primary_email": "twin@example.org", "additional_emails": []},
    ])
    result = run_sync(store, client, SCHEMA)
    assert result.status == "partial"
    assert sorted(e["record_key"] for e in result.sync_errors) == ["100", "102"]
    by_key = {e["record_key"]: e["error_message"] for e in result.sync_errors}
    # Each failure names the record that holds the email, and what to do.
    assert f"already belongs to Twenty person {taken['id']} (contactId 1)" in by_key["100"]
    assert "(contactId 101)" in by_key["102"] and "then sync again" in by_key["102"]
    after = person_by_key(client, 1)  # untouched: same record, same owner, same name
    assert after["id"] == taken["id"] and after["name"] == taken["name"]
    assert person_by_key(client, 101)["name"] == {"firstName": "Twin", "lastName": "A"}
    assert store.read_sync_state("person", [100, 102]).get("100", {}).get("crm_id") is None


def test_a_key_typed_in_twenty_links_to_its_warehouse_row_with_warehouse_values(
        sandbox: Any, client: TwentyClient, store: Any) -> None:
    run_sync(store, client, SCHEMA)
    store.upsert_contacts([{"contact_id": 300, "canonical_name": "Warehouse Name", "category_code": "C",
                            "primary_email": "w300@example.org", "additional_emails": []}])
    with crm(sandbox) as http:
        typed = http.post("/rest/people", json={"name": {"firstName": "Typed", "lastName": "ByHand"},
                                                "contactId": "300"}).json()["data"]["createPerson"]
        bad = http.post("/rest/people", json={"name": {"firstName": "Bad", "lastName": "Key"},
                                              "contactId": "abc"}).json()["data"]["createPerson"]
    result = run_sync(store, client, SCHEMA)
    linked = client.records.get("people", typed["id"])
    assert linked["name"] == {"firstName": "Warehouse", "lastName": "Name"} and linked["categoryCode"] == "C"
    assert store.get_rows("person", [300])[0]["canonical_name"] == "Warehouse Name"
    store.fold_pending(force=True)
    assert store.count_rows("contacts") == 41  # neither Twenty record made a new contact
    assert any(e["crm_id"] == bad["id"] and "not a warehouse key" in e["error_message"] for e in result.sync_errors)
    # Someone clears the bad key in Twenty: the record, kept on the retry list, now comes in.
    with crm(sandbox) as http:
        http.patch(f"/rest/people/{bad['id']}", json={"contactId": None}).raise_for_status()
    second = run_sync(store, client, SCHEMA)
    store.fold_pending(force=True)
    assert second.counts["pull_person"]["created"] == 1 and store.count_rows("contacts") == 42


def test_company_links_follow_edits_on_both_sides(sandbox: Any, client: TwentyClient, store: Any) -> None:
    run_sync(store, client, SCHEMA)
    linked = [r for r in store.get_rows("person", range(1, 41)) if r["business_id"]]
    first, second = linked[0]["contact_id"], linked[1]["contact_id"]
    store.upsert_contacts([{"contact_id": first, "business_id": None}])  # unlinked in the warehouse
    with crm(sandbox) as http:  # unlinked in Twenty
        http.patch(f"/rest/people/{person_by_key(client, second)['id']}", json={"companyId": None}).raise_for_status()
    run_sync(store, client, SCHEMA)
    assert person_by_key(client, first)["companyId"] is None
    assert store.get_rows("person", [second])[0]["business_id"] is None
    sandbox.clear_request_log()
    run_sync(store, client, SCHEMA)
    assert record_writes(sandbox) == []


def test_a_person_whose_company_is_not_in_twenty_yet_is_linked_later(
        sandbox: Any, client: TwentyClient, store: Any) -> None:
    store.upsert_businesses([{"business_id": 1, "business_type": "no such legal form"}])
    first = run_sync(store, client, SCHEMA)
    assert first.counts["push_company"]["failed"] == 1
    waiting = [r["contact_id"] for r in store.get_rows("person", range(1, 41)) if r["business_id"] == 1]
    assert waiting and all(person_by_key(client, k)["companyId"] is None for k in waiting)
    store.upsert_businesses([{"business_id": 1, "business_type": "LLC"}])
    run_sync(store, client, SCHEMA)
    company = next(c for c in client.records.iter_records("companies") if c["businessId"] == "1")
    assert all(person_by_key(client, k)["companyId"] == company["id"] for k in waiting)


def test_delete_against_edit_is_a_recorded_conflict(sandbox: Any, client: TwentyClient, store: Any) -> None:
    run_sync(store, client, SCHEMA)
    with crm(sandbox) as http:
        http.delete(f"/rest/people/{person_by_key(client, 12)['id']}", params={"soft_delete": "true"})
        http.patch(f"/rest/people/{person_by_key(client, 13)['id']}", json={"jobTitle": "x", "categoryCode": "E"})
    store.upsert_contacts([{"contact_id": 12, "category_code": "F"}])
    store.soft_delete("person", [13])
    result = run_sync(store, client, SCHEMA)  # crm_wins: 12 stays deleted, 13 comes back to life
    assert sorted(e["record_key"] for e in result.sync_errors if e["operation"] == "conflict") == ["12", "13"]
    assert store.get_rows("person", [12])[0]["deleted_at"] is not None
    row13 = store.get_rows("person", [13])[0]
    assert row13["deleted_at"] is None and row13["category_code"] == "E"
    assert person_by_key(client, 13)["deletedAt"] is None


def test_warehouse_wins_puts_the_warehouse_value_in_twenty(sandbox: Any, client: TwentyClient, store: Any) -> None:
    run_sync(store, client, SCHEMA)
    with crm(sandbox) as http:
        http.patch(f"/rest/people/{person_by_key(client, 8)['id']}", json={"categoryCode": "A"})
    store.upsert_contacts([{"contact_id": 8, "category_code": "H"}])
    run_sync(store, client, SCHEMA, conflict_policy="warehouse_wins")
    assert person_by_key(client, 8)["categoryCode"] == "H"
    assert store.get_rows("person", [8])[0]["category_code"] == "H"
    sandbox.clear_request_log()
    run_sync(store, client, SCHEMA, conflict_policy="warehouse_wins")
    assert record_writes(sandbox) == []


def test_a_json_edit_made_without_a_stamp_reaches_twenty_even_when_a_pull_touches_the_record(
        sandbox: Any, client: TwentyClient, store: Any) -> None:
    """A writer that rewrites a JSON column and leaves updated_at alone breaks the contract; the
    audit is what catches it. A Twenty edit of the same record that needs no warehouse write must
    not record the row as synced meanwhile (on BigQuery the merge reads no JSON): the audit still
    finds the row and sends the edit."""
    assert run_sync(store, client, SCHEMA).status == "succeeded"
    [five] = store.get_rows("person", [5])
    relationship = "FAMILY" if five["relationship_category"] != "FAMILY" else "FRIEND"
    store._run("UPDATE {contacts} AS t SET ai_insights = JSON('{{\"unstamped\": 1}}'), "
               f"relationship_category = '{relationship}' WHERE t.contact_id = 5", ())
    [twenty_five] = [p for p in people(client) if p["contactId"] == "5"]
    with crm(sandbox) as http:  # a person sets the same value in Twenty: nothing to write in the warehouse
        http.patch(f"/rest/people/{twenty_five['id']}", json={"relationshipCategory": relationship}).raise_for_status()
    assert run_sync(store, client, SCHEMA).status == "succeeded"
    audit = run_sync(store, client, SCHEMA, detection=dataclasses.replace(DetectionPolicy(), audit=True))
    assert audit.status == "succeeded"
    [after] = [p for p in people(client) if p["contactId"] == "5"]
    assert '"unstamped":1' in after["aiInsights"].replace(" ", "")


def test_an_edit_made_while_the_key_is_written_back_is_not_taken_for_synced(
        sandbox: Any, client: TwentyClient, store: Any) -> None:
    """A person created in Twenty is merged from the record as read; the write-back of its new key
    answers with the record as it is by then. An edit made in between must still be merged when the
    record comes again (a webhook's echo, the next pull), not recorded as already synced."""
    run_sync(store, client, SCHEMA)
    with crm(sandbox) as http:
        created = http.post("/rest/people", json={"name": {"firstName": "Eve", "lastName": "Stone"},
                                                  "emails": {"primaryEmail": "eve@example.com"}})
        created.raise_for_status()
        eve_id = created.json()["data"]["createPerson"]["id"]
        as_read = client.records.get("people", eve_id)
        http.patch(f"/rest/people/{eve_id}", json={"name": {"firstName": "Evelyn", "lastName": "Stone"}}
                   ).raise_for_status()
    ctx = SyncContext(store, client, SCHEMA, ErrorReporter("test"))
    pull_records(ctx, PERSON, [as_read])  # merged as read; the key write-back answers with "Evelyn"
    now = client.records.get("people", eve_id)
    assert now["name"]["firstName"] == "Evelyn" and now["contactId"]
    pull_records(ctx, PERSON, [now])  # the write-back's echo
    [row] = store.get_rows("person", [int(now["contactId"])])
    assert row["canonical_name"] == "Evelyn Stone"
