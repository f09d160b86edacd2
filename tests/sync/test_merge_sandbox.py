"""The per-field merge end to end, on both warehouse engines: no edit on either side is lost.

Someone edits in Twenty over plain HTTP (not our client); the warehouse is edited through its own
interface; then one sync. Every case of the merge table, then edits made in Twenty while a push
is under way (from the sync's own event hook, so the moment is exact), over seeded trials.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from tests.sync.test_sync_sandbox import SCHEMA, crm, people, person_by_key, store_options  # noqa: F401 (both journal ways)
from truth_forge.sync.context import SyncEvent
from truth_forge.sync.runner import run_sync
from truth_forge.twenty import TwentyClient
from truth_forge.warehouse import open_warehouse
from truth_forge.warehouse.sample_data import generate_sample_data


@pytest.fixture
def synced(sandbox: Any, client: TwentyClient, warehouse: Any) -> Any:
    generate_sample_data(warehouse, 12, 3, seed=11)
    assert run_sync(warehouse, client, SCHEMA).status == "succeeded"
    return warehouse


def edit_in_twenty(sandbox: Any, client: TwentyClient, key: int, body: dict[str, Any]) -> None:
    with crm(sandbox) as http:
        http.patch(f"/rest/people/{person_by_key(client, key)['id']}", json=body).raise_for_status()


def row(store: Any, key: int) -> dict[str, Any]:
    return store.get_rows("person", [key])[0]


def test_edits_to_different_fields_on_each_side_both_survive(sandbox: Any, client: TwentyClient, synced: Any) -> None:
    edit_in_twenty(sandbox, client, 3, {"name": {"firstName": "Grace", "lastName": "Hopper"}})
    synced.upsert_contacts([{"contact_id": 3, "category_code": "E"}])
    result = run_sync(synced, client, SCHEMA)
    assert result.status == "succeeded" and result.counts["pull_person"]["conflicts"] == 0
    three = person_by_key(client, 3)
    assert three["name"] == {"firstName": "Grace", "lastName": "Hopper"} and three["categoryCode"] == "E"
    assert row(synced, 3)["canonical_name"] == "Grace Hopper" and row(synced, 3)["category_code"] == "E"


def test_only_what_changed_is_sent(sandbox: Any, client: TwentyClient, synced: Any) -> None:
    synced.upsert_contacts([{"contact_id": 4, "subcategory_code": "E1_MENTORS"}])
    sandbox.clear_request_log()
    run_sync(synced, client, SCHEMA)
    [write] = [e for e in sandbox.request_log if e.method == "POST" and e.path == "/rest/batch/people"]
    assert write.batch_size == 1
    bodies = [e for e in sandbox.request_log if e.path == "/rest/batch/people"]
    assert bodies  # the request log does not keep bodies; the Twenty side shows what landed:
    assert person_by_key(client, 4)["subcategoryCode"] == "E1_MENTORS"


def test_the_same_change_on_both_sides_is_no_conflict(sandbox: Any, client: TwentyClient, synced: Any) -> None:
    edit_in_twenty(sandbox, client, 5, {"categoryCode": "G"})
    synced.upsert_contacts([{"contact_id": 5, "category_code": "G"}])
    result = run_sync(synced, client, SCHEMA)
    assert result.counts["pull_person"]["conflicts"] == 0 and result.sync_errors == []
    assert person_by_key(client, 5)["categoryCode"] == "G" and row(synced, 5)["category_code"] == "G"


@pytest.mark.parametrize(("policy", "expected"), [("crm_wins", "A"), ("warehouse_wins", "H")])
def test_one_field_changed_on_both_sides_is_settled_by_policy_and_recorded_with_three_values(
        sandbox: Any, client: TwentyClient, synced: Any, policy: str, expected: str) -> None:
    before = row(synced, 6)["category_code"]
    edit_in_twenty(sandbox, client, 6, {"categoryCode": "A", "jobTitle": "ignored"})
    synced.upsert_contacts([{"contact_id": 6, "category_code": "H", "subcategory_code": "H1_ACQUAINTANCES"}])
    result = run_sync(synced, client, SCHEMA, conflict_policy=policy)  # type: ignore[arg-type]
    assert result.status == "succeeded"
    [conflict] = [e for e in result.sync_errors if e["operation"] == "conflict"]
    assert f"base {before!r}, warehouse 'H', Twenty 'A'" in conflict["error_message"]
    assert person_by_key(client, 6)["categoryCode"] == expected and row(synced, 6)["category_code"] == expected
    # The other field changed on one side only, whatever the policy: it arrived.
    assert person_by_key(client, 6)["subcategoryCode"] == "H1_ACQUAINTANCES"
    quiet = run_sync(synced, client, SCHEMA, conflict_policy=policy)  # type: ignore[arg-type]
    assert quiet.counts["pull_person"]["conflicts"] == 0 and quiet.counts["push_person"]["upserted"] == 0


def test_a_new_primary_in_twenty_and_a_new_additional_email_in_the_warehouse_are_both_kept(
        sandbox: Any, client: TwentyClient, synced: Any) -> None:
    old = row(synced, 7)
    edit_in_twenty(sandbox, client, 7, {"emails": {"primaryEmail": "new.primary@example.org",
                                                   "additionalEmails": old["additional_emails"]}})
    synced.upsert_contacts([{"contact_id": 7, "primary_email": old["primary_email"],
                             "additional_emails": [*old["additional_emails"], "extra@example.org"]}])
    result = run_sync(synced, client, SCHEMA)
    assert result.counts["pull_person"]["conflicts"] == 0, result.sync_errors
    expected = {"primaryEmail": "new.primary@example.org",
                "additionalEmails": [*old["additional_emails"], "extra@example.org"]}
    assert person_by_key(client, 7)["emails"] == expected
    assert row(synced, 7)["primary_email"] == "new.primary@example.org"
    assert row(synced, 7)["additional_emails"] == expected["additionalEmails"]


def test_a_company_link_changed_on_both_sides_is_settled_once(sandbox: Any, client: TwentyClient, synced: Any) -> None:
    companies = {int(c["businessId"]): c["id"] for c in client.records.iter_records("companies")}
    current = row(synced, 8)["business_id"]
    theirs, ours = [b for b in sorted(companies) if b != current][:2]
    edit_in_twenty(sandbox, client, 8, {"companyId": companies[theirs]})
    synced.upsert_contacts([{"contact_id": 8, "business_id": ours}])
    result = run_sync(synced, client, SCHEMA)
    [conflict] = [e for e in result.sync_errors if e["operation"] == "conflict"]
    assert conflict["error_message"].startswith("business_id edited on both sides")
    assert row(synced, 8)["business_id"] == theirs and person_by_key(client, 8)["companyId"] == companies[theirs]


def test_an_edit_in_twenty_against_a_deletion_in_the_warehouse(sandbox: Any, client: TwentyClient, synced: Any) -> None:
    edit_in_twenty(sandbox, client, 9, {"categoryCode": "C"})
    synced.soft_delete("person", [9])
    result = run_sync(synced, client, SCHEMA)  # crm_wins: the edited person lives on in both
    assert [e["record_key"] for e in result.sync_errors if e["operation"] == "conflict"] == ["9"]
    assert row(synced, 9)["deleted_at"] is None and row(synced, 9)["category_code"] == "C"
    assert person_by_key(client, 9)["deletedAt"] is None


def test_a_deletion_in_twenty_against_an_edit_in_the_warehouse(sandbox: Any, client: TwentyClient, synced: Any) -> None:
    with crm(sandbox) as http:
        http.delete(f"/rest/people/{person_by_key(client, 10)['id']}", params={"soft_delete": "true"})
    synced.upsert_contacts([{"contact_id": 10, "category_code": "D"}])
    result = run_sync(synced, client, SCHEMA, conflict_policy="warehouse_wins")
    assert [e["record_key"] for e in result.sync_errors if e["operation"] == "conflict"] == ["10"]
    back = person_by_key(client, 10)  # the warehouse won: revived in Twenty with its values
    assert back["deletedAt"] is None and back["categoryCode"] == "D" and row(synced, 10)["deleted_at"] is None


# --- edits made in Twenty while the push is under way ----------------------------------------------

TRIALS = 20
CHUNK = 4


def test_no_edit_made_in_twenty_during_a_push_is_lost(sandbox: Any, client: TwentyClient, tmp_path: Any) -> None:
    """(DuckDB only: this is about the push's timing, and the merge table above covers both engines.)
    After each write request of the push, someone edits in Twenty a person whose write is
    already done (before), the one about to go (inside the next batch) or a later one (after),
    either the very field the warehouse is changing or another. Then one more run. Every edit
    must be in Twenty and in the warehouse at the end."""
    warehouse = open_warehouse(f"duckdb:///{tmp_path / 'during.duckdb'}")
    warehouse.ensure_tables()
    generate_sample_data(warehouse, 16, 2, seed=5)
    client.records.batch_size = CHUNK
    run_sync(warehouse, client, SCHEMA)
    rng = random.Random(2024)
    lost: list[str] = []
    edits_made = 0
    for trial in range(TRIALS):
        codes = ["A", "B", "C", "D", "E", "F", "G", "H", "X"]
        new_codes = {k: rng.choice(codes) for k in range(1, 17)}
        warehouse.upsert_contacts([{"contact_id": k, "category_code": c} for k, c in new_codes.items()])
        edits: dict[int, dict[str, Any]] = {}
        written = 0

        def during_push(event: SyncEvent) -> None:
            nonlocal written
            if event.kind != "batch_written" or event.phase != "push" or event.object_type != "person":
                return
            written += 1
            where = rng.choice(["before", "inside", "after"])
            first = {"before": (written - 1) * CHUNK, "inside": written * CHUNK, "after": (written + 1) * CHUNK}[where]
            candidates = [k for k in range(first + 1, min(first + CHUNK, 16) + 1) if k not in edits]
            if not candidates:
                return
            key = rng.choice(candidates)
            body = ({"categoryCode": rng.choice(codes)} if rng.random() < 0.5
                    else {"jobTitle": "x", "subcategoryCode": f"T{trial}_K{key}"})
            edit_in_twenty(sandbox, client, key, body)
            edits[key] = body

        run_sync(warehouse, client, SCHEMA, on_event=during_push)
        run_sync(warehouse, client, SCHEMA)
        edits_made += len(edits)
        for key, body in edits.items():
            there, here = person_by_key(client, key), row(warehouse, key)
            if "categoryCode" in body and (there["categoryCode"], here["category_code"]) != (body["categoryCode"],) * 2:
                lost.append(f"trial {trial} key {key}: {body} -> Twenty {there['categoryCode']}, "
                            f"warehouse {here['category_code']}")
            if "subcategoryCode" in body and (there["subcategoryCode"], here["subcategory_code"]) != \
                    (body["subcategoryCode"],) * 2:
                lost.append(f"trial {trial} key {key}: {body} -> Twenty {there['subcategoryCode']}, "
                            f"warehouse {here['subcategory_code']}")
        # Keys the edits did not touch carry the warehouse's change.
        for key, code in new_codes.items():
            if key not in edits:
                assert person_by_key(client, key)["categoryCode"] == code
    warehouse.close()
    assert edits_made >= TRIALS
    assert lost == [], lost
    assert len(people(client)) == 16
