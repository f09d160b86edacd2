"""What the sync learns from the answers to its own writes, kept in the warehouse (own_writes.py)."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import httpx
import pytest

from tests.sync.test_sync_sandbox import SCHEMA, crm, person_by_key
from truth_forge.core.crm_schema import setup_schema
from truth_forge.sync import own_writes
from truth_forge.sync.objects import PERSON, now_utc, parse_timestamp
from truth_forge.sync.pull import changes_query, read_again
from truth_forge.sync.runner import run_sync
from truth_forge.twenty import TwentyClient
from truth_forge.warehouse import open_warehouse
from truth_forge.warehouse.sample_data import generate_sample_data

URL = "http://twenty.example"


def stamped(*actors: dict[str, Any] | None) -> list[dict[str, Any]]:
    return [{"id": str(n), "updatedBy": actor} for n, actor in enumerate(actors)]


def api(name: str) -> dict[str, Any]:
    return {"source": "API", "name": name, "workspaceMemberId": None, "context": {}}


def test_nothing_is_left_out_before_a_write_has_answered(store: Any) -> None:
    assert own_writes.filter_clause(store, URL) is None
    assert own_writes.status(store, URL).startswith("not known yet")


def test_our_api_actor_is_learnt_from_a_write_and_named_in_the_filter(store: Any) -> None:
    own_writes.observe(store, URL, stamped(api("truth-forge"), api("truth-forge")))
    clause = own_writes.filter_clause(store, URL)
    assert clause == ('or(updatedBy.source[neq]:API,updatedBy.source[is]:NULL,'
                      'updatedBy.name[is]:NULL,updatedBy.name[neq]:"truth-forge")')  # the name last
    assert own_writes.filter_clause(store, "http://another.example") is None  # per workspace


@pytest.mark.parametrize("answer", [
    stamped(api("truth-forge"), {"source": "MANUAL", "name": "Ada Lovelace", "workspaceMemberId": "m-1"}),
    stamped({"source": "MANUAL", "name": "", "workspaceMemberId": None}),  # the column's default: never stamped
    stamped(api("truth-forge"), api("someone else")),
    stamped(None),
])
def test_an_answer_not_stamped_by_us_alone_turns_the_filter_off_for_good(store: Any, answer: list[dict[str, Any]]) -> None:
    own_writes.observe(store, URL, stamped(api("truth-forge")))
    own_writes.observe(store, URL, answer)
    assert own_writes.filter_clause(store, URL) is None
    own_writes.observe(store, URL, stamped(api("truth-forge")))  # a later clean answer does not undo it
    assert own_writes.filter_clause(store, URL) is None
    assert own_writes.status(store, URL).startswith("off: a write of ours came back")
    own_writes.forget(store, URL)
    own_writes.observe(store, URL, stamped(api("truth-forge")))
    assert own_writes.filter_clause(store, URL) is not None


def test_a_key_name_that_would_break_the_filter_is_never_put_in_it(store: Any) -> None:
    own_writes.observe(store, URL, stamped(api('sync, "prod" (main)')))
    assert own_writes.filter_clause(store, URL) is None
    assert "rename the key" in own_writes.status(store, URL)


def test_answers_without_updated_by_teach_nothing(store: Any) -> None:
    own_writes.observe(store, URL, [{"id": "1", "name": {"firstName": "A"}}])
    assert own_writes.status(store, URL).startswith("not known yet")


def test_the_filter_narrows_edits_never_deletions(store: Any) -> None:
    store.set_watermark("pull:person", "2026-11-30T10:00:00.000Z")
    query = changes_query(store, PERSON, dt.timedelta(minutes=2), "NOT_OURS")
    assert query == ('or(deletedAt[gte]:"2026-11-30T09:58:00.000Z",'
                     'and(updatedAt[gte]:"2026-11-30T09:58:00.000Z",NOT_OURS))')  # NOT_OURS last


# -- against the sandbox: what a run right after a push reads, and what it must never skip ---------


def pulled(result: Any) -> int:
    """Records the pull looked at (merged, created, deleted or skipped as unchanged)."""
    return sum(sum(result.counts[f"pull_{o}"].values()) for o in ("person", "company"))


def test_a_run_right_after_a_push_reads_none_of_it_back(sandbox: Any, client: TwentyClient, store: Any) -> None:
    generate_sample_data(store, 600, 30, seed=3, replace=True)
    first = run_sync(store, client, SCHEMA)
    assert first.status == "succeeded" and first.counts["push_person"]["upserted"] == 600
    assert own_writes.status(store, sandbox.base_url).startswith("on")
    again = run_sync(store, client, SCHEMA)  # right away: every record pushed is inside the window
    assert again.status == "succeeded"
    assert again.counts["requests"] == 2 and pulled(again) == 0  # one empty page per object


def test_an_edit_made_in_twenty_right_after_the_push_is_pulled(sandbox: Any, client: TwentyClient, store: Any) -> None:
    assert run_sync(store, client, SCHEMA).status == "succeeded"
    seven = person_by_key(client, 7)
    code = "C" if seven["categoryCode"] != "C" else "D"
    with crm(sandbox) as http:
        http.patch(f"/rest/people/{seven['id']}", json={"categoryCode": code}).raise_for_status()
    again = run_sync(store, client, SCHEMA)
    assert again.counts["pull_person"]["updated"] == 1 and again.counts["requests"] == 2
    assert store.get_rows("person", [7])[0]["category_code"] == code


def test_an_edit_landing_between_the_read_back_and_our_write_is_read_again(
        sandbox: Any, client: TwentyClient, store: Any) -> None:
    """Someone edits a field we do not send in the instant before our write goes out (after the
    push's read-back). Our write then carries our stamp, so the filter alone would hide that edit
    for ever; Twenty's answer shows it, and the record is fetched by id on the next pull."""
    assert run_sync(store, client, SCHEMA).status == "succeeded"
    seven = person_by_key(client, 7)
    store.upsert_contacts([{"contact_id": 7, "category_code": "E"}])
    edited: list[str] = []

    def someone_edits_first(request: httpx.Request) -> None:
        if request.method == "POST" and request.url.path == "/rest/batch/people" and not edited:
            with crm(sandbox) as http:
                http.patch(f"/rest/people/{seven['id']}", json={"subcategoryCode": "E1_MENTORS"}).raise_for_status()
            edited.append(seven["id"])

    client.transport._http.event_hooks["request"].append(someone_edits_first)
    pushed = run_sync(store, client, SCHEMA)
    client.transport._http.event_hooks["request"].remove(someone_edits_first)
    assert edited and pushed.counts["push_person"]["upserted"] == 1
    assert person_by_key(client, 7)["categoryCode"] == "E"  # ours landed beside theirs
    after = run_sync(store, client, SCHEMA)
    assert after.counts["pull_person"]["updated"] == 1
    assert store.get_rows("person", [7])[0]["subcategory_code"] == "E1_MENTORS"


def test_the_watermark_moves_to_the_servers_time_when_nothing_changed(
        sandbox: Any, client: TwentyClient, store: Any) -> None:
    assert run_sync(store, client, SCHEMA).status == "succeeded"
    before = parse_timestamp(store.get_watermark("pull:person"))
    time.sleep(1.1)  # the Date header counts whole seconds
    assert run_sync(store, client, SCHEMA).counts["requests"] == 2
    after = parse_timestamp(store.get_watermark("pull:person"))
    assert before is not None and after is not None and after > before
    assert after <= client.transport.server_time  # type: ignore[operator]


def test_a_server_that_does_not_stamp_upserts_has_its_echoes_read_back(
        legacy_sandbox: Any, tmp_path: Any) -> None:
    """Older Twenty left `updatedBy` alone on a batch upsert: the filter turns itself off, the next
    pull reads our writes back (skipped as echoes), and an edit made there still comes through."""
    with open_warehouse(f"duckdb:///{tmp_path / 'legacy.duckdb'}") as store, \
            TwentyClient(legacy_sandbox.base_url, legacy_sandbox.api_key, requests_per_minute=100_000) as client:
        setup_schema(client, SCHEMA)
        store.ensure_tables()
        generate_sample_data(store, 30, 3, seed=4)
        assert run_sync(store, client, SCHEMA).status == "succeeded"
        assert own_writes.status(store, legacy_sandbox.base_url).startswith("off")
        five = person_by_key(client, 5)
        code = "B" if five["categoryCode"] != "B" else "D"
        with crm(legacy_sandbox) as http:
            http.patch(f"/rest/people/{five['id']}", json={"categoryCode": code}).raise_for_status()
        again = run_sync(store, client, SCHEMA)
        assert again.counts["pull_person"]["unchanged"] >= 29  # the echoes, read and skipped
        assert store.get_rows("person", [5])[0]["category_code"] == code


def test_a_record_restored_in_twenty_after_our_last_write_comes_back_with_a_full_pass(
        sandbox: Any, client: TwentyClient, store: Any) -> None:
    """Twenty's restore stamps nothing, so the incremental pull cannot tell it from our own write;
    `sync --full` (and serve's webhooks) can."""
    assert run_sync(store, client, SCHEMA).status == "succeeded"
    store.soft_delete("person", [9])
    assert run_sync(store, client, SCHEMA).counts["push_person"]["deleted"] == 1
    nine = [p for p in client.records.iter_records("people", filter="deletedAt[is]:NOT_NULL")
            if p["contactId"] == "9"][0]
    with crm(sandbox) as http:
        http.patch(f"/rest/people/{nine['id']}/restore").raise_for_status()
    run_sync(store, client, SCHEMA, full=True)
    assert store.get_rows("person", [9])[0]["deleted_at"] is None


# -- our landed writes are the merge base, wherever Twenty's records are merged (issue 18, point 1) --


def test_our_actor_is_known_for_the_merge_until_the_server_is_found_not_to_stamp(store: Any) -> None:
    assert own_writes.our_api_key_name(store, URL) is None
    own_writes.observe(store, URL, stamped(api("truth-forge")))
    assert own_writes.our_api_key_name(store, URL) == "truth-forge"
    own_writes.forget(store, URL)  # a full pass relearns the filter, and still knows whose writes are ours
    assert own_writes.filter_clause(store, URL) is None
    assert own_writes.our_api_key_name(store, URL) == "truth-forge"
    own_writes.observe(store, URL, stamped(api("truth-forge"), api("someone else")))
    assert own_writes.our_api_key_name(store, URL) is None
    assert not own_writes.last_written_by_us({"updatedBy": api("truth-forge")}, None)
    assert own_writes.last_written_by_us({"updatedBy": api("truth-forge")}, "truth-forge")
    assert not own_writes.last_written_by_us(
        {"updatedBy": {"source": "MANUAL", "name": "truth-forge", "workspaceMemberId": "m-1"}}, "truth-forge")


@pytest.fixture
def engine_store(warehouse: Any) -> Any:
    """40 contacts and 8 businesses, on each engine in turn (DuckDB, then BigQuery on bqemulator)."""
    generate_sample_data(warehouse, 40, 8, seed=7)
    return warehouse


def write_as_a_killed_run_did(store: Any, client: TwentyClient, crm_id: str, name: str) -> None:
    """What a run killed before saving its answer leaves: its run row `running` (the next run closes
    it as stale), and our write in Twenty, not in the sync state."""
    store.start_run(started_at=now_utc())
    first, last = name.split(" ")
    client.records.create_many("people", [{"id": crm_id, "name": {"firstName": first, "lastName": last}}],
                               upsert=True, match_key="id")


@pytest.mark.parametrize("full", [False, True], ids=["pull", "full pass"])
def test_our_unsaved_write_is_the_base_and_the_newer_warehouse_value_goes_out(
        sandbox: Any, client: TwentyClient, engine_store: Any, full: bool) -> None:
    store = engine_store
    assert run_sync(store, client, SCHEMA).status == "succeeded"
    seven = person_by_key(client, 7)
    write_as_a_killed_run_did(store, client, seven["id"], "Seven Once")
    store.upsert_contacts([{"contact_id": 7, "canonical_name": "Seven Twice"}])
    # The incremental pull leaves our stamped record out at the server: put it where it is read anyway.
    read_again(store, PERSON, [seven["id"]])
    result = run_sync(store, client, SCHEMA, full=full)
    assert result.status == "succeeded", result.sync_errors
    assert store.get_rows("person", [7])[0]["canonical_name"] == "Seven Twice"
    assert person_by_key(client, 7)["name"] == {"firstName": "Seven", "lastName": "Twice"}
    assert result.counts["reconcile_person" if full else "pull_person"]["conflicts"] == 0


def test_a_person_editing_after_our_unsaved_write_is_still_a_conflict(
        sandbox: Any, client: TwentyClient, engine_store: Any) -> None:
    store = engine_store
    assert run_sync(store, client, SCHEMA).status == "succeeded"
    seven = person_by_key(client, 7)
    write_as_a_killed_run_did(store, client, seven["id"], "Seven Once")
    with crm(sandbox) as http:
        http.patch(f"/rest/people/{seven['id']}", json={"name": {"firstName": "Seven", "lastName": "Person"}}
                   ).raise_for_status()
    store.upsert_contacts([{"contact_id": 7, "canonical_name": "Seven Twice"}])
    result = run_sync(store, client, SCHEMA)
    assert result.counts["pull_person"]["conflicts"] == 1  # Twenty wins by default: a person's edit
    assert store.get_rows("person", [7])[0]["canonical_name"] == "Seven Person"


def test_a_deletion_made_here_after_our_unsaved_write_goes_out(
        sandbox: Any, client: TwentyClient, store: Any) -> None:
    """Before, our landed write counted as an edit made in Twenty against the deletion, and the
    default policy (Twenty wins) brought the contact back to life."""
    assert run_sync(store, client, SCHEMA).status == "succeeded"
    seven = person_by_key(client, 7)
    write_as_a_killed_run_did(store, client, seven["id"], "Seven Once")
    store.soft_delete("person", [7])
    read_again(store, PERSON, [seven["id"]])
    result = run_sync(store, client, SCHEMA)
    assert result.status == "succeeded", result.sync_errors
    assert result.counts["pull_person"]["conflicts"] == 0 and result.counts["push_person"]["deleted"] == 1
    assert store.get_rows("person", [7])[0]["deleted_at"] is not None
    trash = client.records.iter_records("people", filter="deletedAt[is]:NOT_NULL")
    assert seven["id"] in {p["id"] for p in trash}
