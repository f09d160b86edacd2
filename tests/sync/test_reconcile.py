"""`sync --full`: a pass over every Twenty record finds what the incremental pull cannot see."""

from __future__ import annotations

from typing import Any

from tests.sync.test_sync_sandbox import SCHEMA, crm, people, person_by_key
from truth_forge.sync.runner import run_sync
from truth_forge.twenty import TwentyClient


def test_a_record_destroyed_in_twenty_is_found_and_deleted_in_the_warehouse(
        sandbox: Any, client: TwentyClient, store: Any) -> None:
    run_sync(store, client, SCHEMA)
    gone = person_by_key(client, 14)
    with crm(sandbox) as http:  # destroyed: no trash, and no updatedAt for the pull to see
        http.delete(f"/rest/people/{gone['id']}").raise_for_status()
    incremental = run_sync(store, client, SCHEMA)
    assert incremental.counts["pull_person"]["deleted"] == 0 and store.get_rows("person", [14])[0]["deleted_at"] is None
    sandbox.clear_request_log()
    full = run_sync(store, client, SCHEMA, full=True)
    assert full.status == "succeeded", full.sync_errors
    assert full.counts["reconcile_person"]["destroyed"] == 1 and full.counts["reconcile_person"]["checked"] == 39
    assert store.get_rows("person", [14])[0]["deleted_at"] is not None  # deleted, never destroyed, here
    assert store.read_sync_state("person", [14])["14"]["status"] == "deleted"
    # About N/200 reads: one page of people, one of companies, and one metadata check.
    reads = [e for e in sandbox.request_log if e.method == "GET" and not e.path.startswith("/rest/metadata")]
    assert len(reads) == 2
    quiet = run_sync(store, client, SCHEMA)
    assert quiet.counts["push_person"]["deleted"] == 0 and len(people(client)) == 39


def test_drift_the_watermark_skipped_is_merged(sandbox: Any, client: TwentyClient, store: Any) -> None:
    run_sync(store, client, SCHEMA)
    with crm(sandbox) as http:
        http.patch(f"/rest/people/{person_by_key(client, 15)['id']}", json={"categoryCode": "F"}).raise_for_status()
    # A watermark far in the future (a clock gone wrong): the incremental pull sees nothing.
    store.set_watermark("pull:person", "2999-01-01T00:00:00.000Z")
    run_sync(store, client, SCHEMA)
    assert store.get_rows("person", [15])[0]["category_code"] != "F"
    full = run_sync(store, client, SCHEMA, full=True)
    assert full.counts["reconcile_person"]["drifted"] == 1
    assert store.get_rows("person", [15])[0]["category_code"] == "F"


def test_a_destroyed_record_the_warehouse_edited_comes_back_when_the_warehouse_wins(
        sandbox: Any, client: TwentyClient, store: Any) -> None:
    run_sync(store, client, SCHEMA)
    with crm(sandbox) as http:
        http.delete(f"/rest/people/{person_by_key(client, 16)['id']}").raise_for_status()
    store.upsert_contacts([{"contact_id": 16, "category_code": "H"}])
    result = run_sync(store, client, SCHEMA, full=True, conflict_policy="warehouse_wins")
    assert [e["record_key"] for e in result.sync_errors if e["operation"] == "conflict"] == ["16"]
    back = person_by_key(client, 16)
    assert back["categoryCode"] == "H" and len(people(client)) == 40


def test_a_record_destroyed_in_twenty_while_the_warehouse_edits_it_follows_the_same_rule_in_a_push(
        sandbox: Any, client: TwentyClient, store: Any) -> None:
    run_sync(store, client, SCHEMA)
    with crm(sandbox) as http:
        for key in (18, 19):
            http.delete(f"/rest/people/{person_by_key(client, key)['id']}").raise_for_status()
    store.upsert_contacts([{"contact_id": 18, "category_code": "H"}, {"contact_id": 19, "category_code": "H"}])
    # Only the push runs: its read-back before the update batch finds them gone.
    result = run_sync(store, client, SCHEMA, direction="push", conflict_policy={"deleted_at": "warehouse_wins"})
    assert result.counts["push_person"]["caught_up"] == 2 and result.counts["push_person"]["upserted"] == 0
    assert sorted(e["record_key"] for e in result.sync_errors if e["operation"] == "conflict") == ["18", "19"]
    again = run_sync(store, client, SCHEMA, direction="push")  # the warehouse won: created again, whole
    assert again.counts["push_person"]["upserted"] == 2
    assert person_by_key(client, 18)["categoryCode"] == "H" and len(people(client)) == 40
