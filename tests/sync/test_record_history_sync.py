"""The record history and conflict review end to end: a real DuckDB file, the sandbox over loopback
HTTP, a workspace member editing in Twenty (`as_person`), no mocks."""

from __future__ import annotations

import datetime as dt
from typing import Any

import httpx
import pytest

from tests.fixtures.sandbox import SANDBOX_MEMBER_NAME, as_person
from truth_forge.core.crm_schema import CrmSchema
from truth_forge.core.reporting import ErrorReporter
from truth_forge.operations.conflicts import ConflictAlreadyResolved, list_conflicts, resolve_conflict
from truth_forge.operations.history import record_history
from truth_forge.sync.context import SyncContext
from truth_forge.sync.objects import parse_timestamp
from truth_forge.sync.runner import run_sync
from truth_forge.twenty import TwentyClient

SCHEMA = CrmSchema.load()


@pytest.fixture(params=["", "?journal_fold_share=1000000&stage_pulled=true&pending_fold_minutes=1000000"],
                ids=["folded", "journal-kept"])
def store_options(request: pytest.FixtureRequest) -> str:
    """DuckDB's way, and BigQuery's (pulled values staged beside contacts, landing late): the history
    is written when the merge decides, whichever way the values then land."""
    return str(request.param)


def person(client: TwentyClient, key: int) -> dict[str, Any]:
    [found] = [p for p in client.records.iter_records("people") if p["contactId"] == str(key)]
    return found


def crm(sandbox: Any) -> httpx.Client:
    return httpx.Client(base_url=sandbox.base_url, headers=as_person(sandbox))


def other(value: str | None, choices: tuple[str, ...]) -> str:
    return next(c for c in choices if c != value)


def test_an_edit_on_each_side_shows_in_the_history_with_its_actor_and_both_times(
        sandbox: Any, client: TwentyClient, store: Any) -> None:
    run_sync(store, client, SCHEMA)
    [seven_before, eight_before] = store.get_rows("person", [7, 8])
    relationship = other(seven_before["relationship_category"], ("FAMILY", "FRIEND"))
    category = other(eight_before["category_code"], ("H", "G"))
    seven = person(client, 7)
    with crm(sandbox) as http:
        http.patch(f"/rest/people/{seven['id']}", json={"relationshipCategory": relationship}).raise_for_status()
    edited_in_twenty = parse_timestamp(person(client, 7)["updatedAt"])
    # Another record: the warehouse side's time is its row's stamp, which a pulled value written to
    # the same row afterwards would move (docs/history.md).
    store.upsert_contacts([{"contact_id": 8, "category_code": category}])
    stamped_here = store.get_rows("person", [8])[0]["updated_at"]

    result = run_sync(store, client, SCHEMA)
    assert result.status == "succeeded", result.sync_errors
    landed_in_twenty = parse_timestamp(person(client, 8)["updatedAt"])

    [pulled] = [r for r in record_history(store, "contact", 7) if r["run_id"] == result.run_id]
    assert (pulled["field"], pulled["side"], pulled["actor"], pulled["via"]) == (
        "relationship_category", "twenty", SANDBOX_MEMBER_NAME, "sync")
    assert (pulled["old_value"], pulled["new_value"]) == (seven_before["relationship_category"], relationship)
    assert pulled["changed_at"] == edited_in_twenty and pulled["applied_at"] > edited_in_twenty

    history = record_history(store, "contact", 8)
    [pushed] = [r for r in history if r["run_id"] == result.run_id]
    assert (pushed["field"], pushed["side"], pushed["actor"], pushed["via"]) == (
        "category_code", "warehouse", "warehouse", "sync")
    assert (pushed["old_value"], pushed["new_value"]) == (eight_before["category_code"], category)
    assert pushed["changed_at"] == stamped_here and pushed["applied_at"] == landed_in_twenty

    # Newest first, the first run's create at the bottom; the same timeline by Twenty id.
    assert [r["applied_at"] for r in history] == sorted((r["applied_at"] for r in history), reverse=True)
    assert history[-1]["field"] == "(created)" and history[-1]["side"] == "warehouse"
    assert record_history(store, crm_id=person(client, 8)["id"]) == history
    # The run trimmed the history past its retention (once today: remembered for the next runs).
    assert store.get_watermark("history:trimmed-on") == dt.datetime.now(dt.UTC).date().isoformat()


def test_a_conflict_resolved_by_hand_reaches_both_sides_and_the_history(
        sandbox: Any, client: TwentyClient, store: Any) -> None:
    run_sync(store, client, SCHEMA)
    base = store.get_rows("person", [9])[0]["category_code"]
    theirs, ours = other(base, ("A", "B")), other(base, ("H", "G"))
    with crm(sandbox) as http:
        http.patch(f"/rest/people/{person(client, 9)['id']}", json={"categoryCode": theirs}).raise_for_status()
    store.upsert_contacts([{"contact_id": 9, "category_code": ours}])
    run_sync(store, client, SCHEMA)  # Twenty wins by policy
    assert store.get_rows("person", [9])[0]["category_code"] == theirs

    [conflict] = list_conflicts(store, open_only=True)
    assert (conflict["object_type"], conflict["record_key"], conflict["field"], conflict["base_value"],
            conflict["warehouse_value"], conflict["twenty_value"], conflict["winner"]) == (
        "person", "9", "category_code", base, ours, theirs, "twenty")

    ctx = SyncContext(store, client, SCHEMA, ErrorReporter("resolve:test"))
    outcome = resolve_conflict(ctx, conflict["conflict_id"][:12], "warehouse", "Grace Hopper")
    assert outcome["errors"] == [] and outcome["push"]["upserted"] == 1
    assert store.get_rows("person", [9])[0]["category_code"] == ours
    assert person(client, 9)["categoryCode"] == ours

    assert list_conflicts(store, open_only=True) == []
    [reviewed] = list_conflicts(store)
    assert (reviewed["taken"], reviewed["chosen_value"], reviewed["resolved_by"]) == ("warehouse", ours, "Grace Hopper")
    resolved = [r for r in record_history(store, "contact", 9) if r["via"] == "resolve"]
    assert sorted((r["side"], r["field"], r["old_value"], r["new_value"], r["actor"]) for r in resolved) == [
        ("warehouse", "category_code", theirs, ours, "Grace Hopper")] * 2  # the warehouse write, then Twenty's
    with pytest.raises(ConflictAlreadyResolved):
        resolve_conflict(ctx, conflict["conflict_id"], "twenty", "Grace Hopper")

    # The choice stays: the next run brings no conflict and sends nothing back.
    again = run_sync(store, client, SCHEMA)
    assert again.counts["pull_person"]["conflicts"] == 0 and again.counts["push_person"]["upserted"] == 0
    assert store.get_rows("person", [9])[0]["category_code"] == ours == person(client, 9)["categoryCode"]


def test_a_staged_twenty_value_that_landing_keeps_back_is_corrected_in_the_history(
        sandbox: Any, client: TwentyClient, store: Any, store_options: str) -> None:
    """The history says Twenty's value was applied when the pull staged it; a warehouse edit of the
    same field before landing wins, and a history row says so."""
    if "stage_pulled" not in store_options:
        pytest.skip("values are written at once: nothing lands later")
    run_sync(store, client, SCHEMA)
    [six_before] = store.get_rows("person", [6])
    twenty_value = other(six_before["category_code"], ("H", "G"))
    warehouse_value = other(twenty_value, ("B", "C"))
    with crm(sandbox) as http:
        http.patch(f"/rest/people/{person(client, 6)['id']}", json={"categoryCode": twenty_value}).raise_for_status()
    assert run_sync(store, client, SCHEMA, direction="pull").status == "succeeded"
    assert store.pending_keys("person", [6]) == [6]  # staged, not landed
    store.upsert_contacts([{"contact_id": 6, "category_code": warehouse_value}])  # a pipeline, before landing
    result = run_sync(store, client, SCHEMA)  # lands, keeps the warehouse's value, pushes it
    assert result.status == "succeeded", result.sync_errors
    assert store.get_rows("person", [6])[0]["category_code"] == warehouse_value
    assert person(client, 6)["categoryCode"] == warehouse_value
    [kept] = [r for r in record_history(store, "contact", 6) if r["via"] == "landing"]
    assert (kept["field"], kept["side"], kept["old_value"], kept["new_value"]) == (
        "category_code", "warehouse", twenty_value, warehouse_value)
    assert kept["crm_id"] == person(client, 6)["id"]
