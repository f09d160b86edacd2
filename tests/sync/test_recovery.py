"""The sync recovers by rule: refused creates are checked for "ours", record-level trouble never stops
a run, two-step changes stay pending until confirmed, and error rows close when their cause is gone.

Real DuckDB files and the sandbox over loopback HTTP, as in test_sync_sandbox.py.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from tests.sync.test_sync_sandbox import SCHEMA, crm, forget_state, people, person_by_key, record_writes
from truth_forge.sync.runner import run_sync
from truth_forge.twenty import TwentyClient
from truth_forge.warehouse.detection import DetectionPolicy

BIGGEST_ID = 9223372036854775807


def batch_writes(sandbox: Any) -> list[Any]:
    return [e for e in record_writes(sandbox) if e.path.startswith("/rest/batch/people")]


def test_rows_already_in_twenty_but_not_in_the_state_are_claimed_not_refused(
        sandbox: Any, client: TwentyClient, store: Any) -> None:
    """Twenty has the records, the warehouse's state has lost them (removed by hand: a run killed
    between a write and its bookkeeping leaves the detection watermark where it was, so it finds
    them by their stamps; lost state rows are found by the audit). The next audited run claims them
    by key, with no failure and no duplicate."""
    run_sync(store, client, SCHEMA)
    forget_state(store, "person", ["3", "4", "5"])
    store.upsert_contacts([{"contact_id": 4, "category_code": "E"}])
    sandbox.clear_request_log()
    result = run_sync(store, client, SCHEMA, detection=DetectionPolicy(audit=True))
    assert result.status == "succeeded", result.sync_errors
    assert result.counts["push_person"] == {"upserted": 3, "deleted": 0, "failed": 0, "caught_up": 0}
    keys = sorted(int(p["contactId"]) for p in people(client))
    assert keys == list(range(1, 41))  # exactly once each
    assert person_by_key(client, 4)["categoryCode"] == "E"
    # One refused create, one lookup by key, one claim by id.
    assert [e.batch_size for e in batch_writes(sandbox)] == [3, 3]
    assert {s["crm_id"] for s in store.read_sync_state("person", [3, 4, 5]).values()} == \
        {person_by_key(client, k)["id"] for k in (3, 4, 5)}


def test_five_contacts_sharing_an_email_fail_alone_and_later_contacts_still_sync(
        sandbox: Any, client: TwentyClient, store: Any) -> None:
    shared = [{"contact_id": 200 + i, "canonical_name": f"Shared {i}", "primary_email": "Family@Example.org",
               "additional_emails": []} for i in range(5)]
    store.upsert_contacts(shared)
    first = run_sync(store, client, SCHEMA)
    assert first.status == "partial" and first.counts["push_person"]["failed"] == 4
    holder = next(p for p in people(client) if p["emails"]["primaryEmail"] == "family@example.org")
    failed = sorted(e["record_key"] for e in first.sync_errors)
    assert len(failed) == 4 and holder["contactId"] not in failed
    assert all(f"already belongs to Twenty person {holder['id']}" in e["error_message"] for e in first.sync_errors)
    # Added later: unaffected by the four that keep failing.
    store.upsert_contacts([{"contact_id": 300, "canonical_name": "Later Person", "primary_email": "later@example.org",
                            "additional_emails": []}])
    second = run_sync(store, client, SCHEMA)
    assert second.status == "partial" and second.counts["push_person"]["failed"] == 4
    assert person_by_key(client, 300)["name"] == {"firstName": "Later", "lastName": "Person"}
    assert len(people(client)) == 40 + 1 + 1


def test_emails_go_lower_cased_and_a_bad_one_stays_out_without_splitting_the_batch(
        sandbox: Any, client: TwentyClient, store: Any) -> None:
    store.upsert_contacts([
        {"contact_id": 2, "primary_email": "  Ada.Lovelace@Example.COM ", "additional_emails": ["ADA@Work.Example"]},
        {"contact_id": 3, "primary_email": "not-an-email", "additional_emails": ["also bad@x", "fine@example.net"]},
    ])
    result = run_sync(store, client, SCHEMA)
    assert result.counts["push_person"] == {"upserted": 40, "deleted": 0, "failed": 0, "caught_up": 0}
    assert len(batch_writes(sandbox)) == 1  # one request for all 40: nothing was bisected
    assert person_by_key(client, 2)["emails"] == {"primaryEmail": "ada.lovelace@example.com",
                                                  "additionalEmails": ["ada@work.example"]}
    three = person_by_key(client, 3)
    assert three["emails"]["primaryEmail"] in (None, "") and three["emails"]["additionalEmails"] == ["fine@example.net"]
    assert three["name"] == {"firstName": store.get_rows("person", [3])[0]["canonical_name"].split(" ")[0],
                             "lastName": " ".join(store.get_rows("person", [3])[0]["canonical_name"].split(" ")[1:])}
    [error] = store.open_errors("person")
    assert error["record_key"] == "3" and "primary_email 'not-an-email'" in error["error_message"]
    assert "'also bad@x'" in error["error_message"]
    # The warehouse keeps what it had; the open error closes once the address is fixed.
    assert store.get_rows("person", [3])[0]["primary_email"] == "not-an-email"
    quiet = run_sync(store, client, SCHEMA)
    assert quiet.counts["push_person"]["upserted"] == 0 and len(store.open_errors("person")) == 1
    store.upsert_contacts([{"contact_id": 3, "primary_email": "three@example.org", "additional_emails": []}])
    fixed = run_sync(store, client, SCHEMA)
    assert fixed.status == "succeeded" and store.open_errors() == []
    assert person_by_key(client, 3)["emails"]["primaryEmail"] == "three@example.org"


def test_a_nul_character_fails_that_record_alone_before_any_request(
        sandbox: Any, client: TwentyClient, store: Any) -> None:
    store.upsert_contacts([{"contact_id": 6, "canonical_name": "Nul\x00Byte"}])
    result = run_sync(store, client, SCHEMA)
    assert result.counts["push_person"] == {"upserted": 39, "deleted": 0, "failed": 1, "caught_up": 0}
    [error] = result.sync_errors
    assert error["record_key"] == "6" and "NUL character" in error["error_message"] and "name" in error["error_message"]
    assert len(batch_writes(sandbox)) == 1


def test_a_key_write_back_that_failed_is_finished_by_the_next_run(
        sandbox: Any, client: TwentyClient, store: Any) -> None:
    run_sync(store, client, SCHEMA)
    with crm(sandbox) as http:
        made = http.post("/rest/people", json={"name": {"firstName": "Made", "lastName": "InTwenty"}})
    new_id = made.json()["data"]["createPerson"]["id"]
    client.transport.retry.max_retries = 0
    sandbox.set_faults(error_rate=1.0, error_statuses=(500,), path_prefix="/rest/batch/people")
    broken = run_sync(store, client, SCHEMA)
    assert broken.counts["pull_person"]["created"] == 1
    [state] = store.read_sync_state_by_crm_id("person", [new_id]).values()
    # Written to the warehouse, never confirmed in Twenty: no hash, so every push resends it with its
    # key (this run's push tried too, under the same outage, and failed).
    assert state["status"] in ("pending", "failed") and state["warehouse_hash"] is None
    assert not client.records.get("people", new_id).get("contactId")
    sandbox.clear_faults()
    healed = run_sync(store, client, SCHEMA)
    assert healed.status == "succeeded", healed.sync_errors
    assert client.records.get("people", new_id)["contactId"] == state["record_key"]
    assert store.read_sync_state_by_crm_id("person", [new_id])[new_id]["status"] == "synced"
    assert store.open_errors() == []
    sandbox.clear_request_log()
    run_sync(store, client, SCHEMA)
    assert record_writes(sandbox) == []


def test_a_huge_contact_id_does_not_stop_id_allocation(sandbox: Any, client: TwentyClient, store: Any) -> None:
    store.upsert_contacts([{"contact_id": BIGGEST_ID, "canonical_name": "Biggest Id",
                            "primary_email": "big@example.org", "additional_emails": []}])
    run_sync(store, client, SCHEMA)
    assert person_by_key(client, BIGGEST_ID)["name"] == {"firstName": "Biggest", "lastName": "Id"}
    with crm(sandbox) as http:
        made = http.post("/rest/people", json={"name": {"firstName": "After", "lastName": "Big"}}).json()
    result = run_sync(store, client, SCHEMA)
    assert result.status == "succeeded", result.sync_errors
    [state] = store.read_sync_state_by_crm_id("person", [made["data"]["createPerson"]["id"]]).values()
    assert int(state["record_key"]) == 41  # counted on from the largest id that leaves room


def test_an_outage_stops_the_push_after_three_failed_writes_in_a_row(
        sandbox: Any, client: TwentyClient, store: Any) -> None:
    # Four on the wire at most: the stream's window (8 batches) is then well short of the 20 to send.
    with TwentyClient(sandbox.base_url, sandbox.api_key, requests_per_minute=100_000, timeout=5,
                      max_in_flight=4, max_retries=0) as narrow:
        narrow.records.batch_size = 2
        sandbox.set_faults(error_rate=1.0, error_statuses=(502,), path_prefix="/rest/batch/people")
        result = run_sync(store, narrow, SCHEMA)
        window = 2 * narrow.records.pool.size
    assert result.status == "aborted"
    assert result.counts["push_person"]["failed"] == 6  # three batches of 2, then the push stopped
    # Writes already on the wire when the third failure is read cannot be called back, but no more
    # leave: at most the stream's window of cut batches plus the two cut while reading the failures.
    assert 3 <= len(batch_writes(sandbox)) <= window + 2 < 20
    sandbox.clear_faults()
    assert run_sync(store, client, SCHEMA).status == "succeeded"
    assert len(people(client)) == 40 and store.open_errors() == []


def test_a_run_level_error_closes_with_the_next_successful_run(
        sandbox: Any, client: TwentyClient, store: Any) -> None:
    with TwentyClient(sandbox.base_url, "not-the-key", requests_per_minute=100_000, timeout=5) as wrong:
        failed = run_sync(store, wrong, SCHEMA)
    assert failed.status == "aborted"
    [error] = store.open_errors()
    assert error["record_key"] is None and error["http_status"] == 401 and "not-the-key" not in error["error_message"]
    ok = run_sync(store, client, SCHEMA)
    assert ok.status == "succeeded" and ok.counts["errors_closed"] == 1 and store.open_errors() == []


def test_the_setup_check_is_one_metadata_read_an_hour_and_forgotten_when_a_field_goes(
        sandbox: Any, client: TwentyClient, store: Any) -> None:
    run_sync(store, client, SCHEMA)
    sandbox.clear_request_log()
    run_sync(store, client, SCHEMA)
    assert [e for e in sandbox.request_log if e.path.startswith("/rest/metadata")] == []  # remembered
    # Someone deletes one of our fields in Twenty: the next write names it, the run stops with the
    # setup hint, and the run after that reads the metadata again and says what is missing.
    person = next(o for o in client.metadata.list_objects() if o["nameSingular"] == "person")
    field = next(f for f in person["fields"] if f["name"] == "categoryCode")
    with crm(sandbox) as http:
        http.delete(f"/rest/metadata/fields/{field['id']}").raise_for_status()
    store.upsert_contacts([{"contact_id": 2, "category_code": "B", "canonical_name": "Changed Name"}])
    stopped = run_sync(store, client, SCHEMA)
    assert stopped.status == "aborted" and "truth-forge setup" in stopped.sync_errors[-1]["error_message"]
    sandbox.clear_request_log()
    again = run_sync(store, client, SCHEMA)
    assert again.status == "aborted" and "categoryCode missing" in again.sync_errors[-1]["error_message"]
    assert [e for e in sandbox.request_log if e.path.startswith("/rest/metadata")]


def test_a_quiet_run_costs_one_read_per_object_and_still_sees_deletions(
        sandbox: Any, client: TwentyClient, store: Any) -> None:
    import datetime as dt

    run_sync(store, client, SCHEMA)
    run_sync(store, client, SCHEMA)  # reads its own writes back once, as echoes
    quiet = run_sync(store, client, SCHEMA, pull_overlap=dt.timedelta(0))
    assert quiet.counts["requests"] == 2  # live edits and deletions in one query per object; setup remembered
    with crm(sandbox) as http:
        http.delete(f"/rest/people/{person_by_key(client, 17)['id']}", params={"soft_delete": "true"})
    sandbox.clear_request_log()
    after = run_sync(store, client, SCHEMA, pull_overlap=dt.timedelta(0))
    assert after.counts["pull_person"]["deleted"] == 1 and store.get_rows("person", [17])[0]["deleted_at"] is not None
    assert len([e for e in sandbox.request_log if e.method == "GET"]) == 2


def test_a_pull_stopped_inside_a_tie_of_one_updated_at_resumes_without_missing_or_doubling(
        sandbox: Any, client: TwentyClient, store: Any) -> None:
    """Every record of one batch write shares one updatedAt. Someone in Twenty imports 120 people,
    then 200 more in one request, so the pull's first page of 200 ends inside the second tie; the
    run stops right there (Twenty goes down), and the next run must take in all 320 exactly once."""
    assert run_sync(store, client, SCHEMA).status == "succeeded"
    with crm(sandbox) as http:
        for first, count in ((0, 120), (120, 200)):
            batch = [{"name": {"firstName": f"Imported{n}", "lastName": "Tie"},
                      "emails": {"primaryEmail": f"imported{n}@tie.example", "additionalEmails": None}}
                     for n in range(first, first + count)]
            http.post("/rest/batch/people", json=batch).raise_for_status()
    stamps = {p["updatedAt"] for p in client.records.iter_records("people", filter='name.lastName[eq]:"Tie"')}
    assert len(stamps) == 2  # two writes, two shared stamps

    def down_after_the_first_page(event: Any) -> None:
        if event.kind == "page_read" and event.phase == "pull" and event.object_type == "person":
            sandbox.set_faults(error_rate=1.0, error_statuses=(503,), path_prefix="/rest/people")

    client.transport.retry.max_retries, client.transport.retry.base_delay = 1, 0.01
    # No overlap: the watermark alone (the tie's updatedAt, matched with gte) must bring the rest.
    stopped = run_sync(store, client, SCHEMA, on_event=down_after_the_first_page, pull_overlap=dt.timedelta(0))
    assert stopped.status == "aborted"
    sandbox.clear_faults()
    resumed = run_sync(store, client, SCHEMA, pull_overlap=dt.timedelta(0))
    assert resumed.status == "succeeded", resumed.sync_errors
    emails = [row["primary_email"] for row in store.get_rows("person", range(1, 10_000))
              if (row.get("primary_email") or "").endswith("@tie.example")]
    assert sorted(emails) == sorted(f"imported{n}@tie.example" for n in range(320))
