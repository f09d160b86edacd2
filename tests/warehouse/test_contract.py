"""The warehouse contract: every backend (DuckDB file, BigQuery on bqemulator) must pass all of it.

Each test gets a fresh store from the parametrised `warehouse` fixture (tests/fixtures/warehouse.py).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from truth_forge.warehouse import TABLES, Warehouse, WarehouseDataError

UTC = dt.UTC


def contact(cid: int, **over: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "contact_id": cid,
        "canonical_name": f"Person {cid}",
        "category_code": "B",
        "subcategory_code": "B1_BEST_FRIENDS",
        "relationship_category": "FRIEND",
        "llm_context": {"summary": f"friend {cid}", "topics": ["hiking", "jazz"]},
        "communication_stats": {"messages": cid * 3},
        "social_network": None,
        "ai_insights": {"sentiment": 0.5},
        "recommendations": [],
        "sync_metadata": None,
        "primary_email": f"p{cid}@example.com",
        "additional_emails": [f"p{cid}.alt@example.org"],
        "primary_phone": f"+1415555{cid:04d}",
        "additional_phones": [],
        "business_id": None,
        "deleted_at": None,
    }
    row.update(over)
    return row


def changed_keys(wh: Warehouse, object_type: str = "person") -> list[int]:
    key = "contact_id" if object_type == "person" else "business_id"
    return sorted(r[key] for batch in wh.changed_rows(object_type) for r in batch)  # type: ignore[arg-type]


def mark_synced(wh: Warehouse, object_type: str, keys: list[int], status: str = "synced") -> None:
    hashes = wh.row_hashes(object_type, keys)  # type: ignore[arg-type]
    wh.upsert_sync_state(
        {"object_type": object_type, "record_key": str(k), "crm_id": f"crm-{k}", "warehouse_hash": h, "status": status}
        for k, h in hashes.items()
    )


@pytest.fixture
def seeded(warehouse: Warehouse) -> Warehouse:
    """Five contacts and two businesses, all recorded as synced."""
    warehouse.upsert_businesses(
        [
            {"business_id": 10, "business_name": "Acme", "website": "https://acme.test", "industry": "Software",
             "business_type": "LLC", "llm_context": None, "business_data": {"employees": 12},
             "relationship_stats": None, "sync_metadata": None},
            {"business_id": 11, "business_name": "Globex", "website": None, "industry": "Energy",
             "business_type": "CORPORATION", "llm_context": {"note": "x"}, "business_data": None,
             "relationship_stats": None, "sync_metadata": None},
        ]
    )
    warehouse.upsert_contacts([contact(i, business_id=10 if i == 1 else None) for i in range(1, 6)])
    hashes = [("person", k, h) for k, h in warehouse.row_hashes("person", [1, 2, 3, 4, 5]).items()]
    hashes += [("company", k, h) for k, h in warehouse.row_hashes("company", [10, 11]).items()]
    warehouse.upsert_sync_state(
        {"object_type": t, "record_key": str(k), "crm_id": f"crm-{k}", "warehouse_hash": h, "status": "synced"}
        for t, k, h in hashes
    )
    return warehouse


def test_creates_every_table_empty_and_reopens_idempotently(warehouse: Warehouse, open_test_warehouse: Any) -> None:
    assert {name: warehouse.count_rows(name) for name in TABLES} == {name: 0 for name in TABLES}
    warehouse.upsert_contacts([contact(1)])
    warehouse.close()
    again = open_test_warehouse()
    assert again.count_rows("contacts") == 1


def test_round_trip_of_a_contact_view_row(warehouse: Warehouse) -> None:
    warehouse.upsert_businesses([{"business_id": 7, "business_name": "Initech"}])
    row = contact(1, business_id=7, additional_emails=["z@x.io", "a@x.io"], additional_phones=["+442071838750"],
                  llm_context={"b": {"nested": [1, 2, {"deep": True}]}, "a": "ü"})
    warehouse.upsert_contacts([row])
    [got] = warehouse.get_rows("person", [1])
    for name, value in row.items():
        assert got[name] == value, name
    assert got["additional_emails"] == ["z@x.io", "a@x.io"]  # order as given, not sorted
    assert isinstance(got["row_hash"], str) and len(got["row_hash"]) == 32
    assert got["updated_at"].tzinfo is not None
    [biz] = warehouse.get_rows("company", [7])
    assert biz["business_name"] == "Initech" and biz["website"] is None


def test_everything_is_changed_until_recorded_then_nothing(warehouse: Warehouse) -> None:
    warehouse.upsert_contacts([contact(i) for i in range(1, 4)])
    assert changed_keys(warehouse) == [1, 2, 3]
    mark_synced(warehouse, "person", [1, 2, 3])
    assert changed_keys(warehouse) == []


def test_column_edit_changes_exactly_that_row(seeded: Warehouse) -> None:
    assert changed_keys(seeded) == []
    seeded.upsert_contacts([{"contact_id": 3, "category_code": "C"}])
    [[row]] = list(seeded.changed_rows("person"))
    assert row["contact_id"] == 3 and row["category_code"] == "C"
    assert row["crm_id"] == "crm-3" and row["sync_status"] == "synced" and row["synced_hash"] != row["row_hash"]


def test_json_context_edit_changes_the_hash(seeded: Warehouse) -> None:
    seeded.upsert_contacts([{"contact_id": 4, "llm_context": {"summary": "new"}}])
    assert changed_keys(seeded) == [4]


def test_primary_email_edit_changes_exactly_that_row(seeded: Warehouse) -> None:
    seeded.upsert_contacts([{"contact_id": 2, "primary_email": "new2@example.com", "additional_emails": ["p2.alt@example.org"]}])
    assert changed_keys(seeded) == [2]
    [row] = seeded.get_rows("person", [2])
    assert row["primary_email"] == "new2@example.com"
    assert row["primary_phone"] == "+14155550002"  # phones untouched by an email-only edit


def test_business_link_edit_changes_exactly_that_row(seeded: Warehouse) -> None:
    seeded.upsert_contacts([{"contact_id": 1, "business_id": 11}, {"contact_id": 5, "business_id": 10}])
    assert changed_keys(seeded) == [1, 5]
    rows = {r["contact_id"]: r for r in seeded.get_rows("person", [1, 5])}
    assert rows[1]["business_id"] == 11 and rows[5]["business_id"] == 10
    assert seeded.count_rows("contact_businesses") == 3  # the old link is demoted, not lost
    mark_synced(seeded, "person", [1, 5])
    seeded.upsert_contacts([{"contact_id": 1, "business_id": None}])
    assert changed_keys(seeded) == [1]
    assert seeded.get_rows("person", [1])[0]["business_id"] is None


def test_rewriting_identical_values_changes_nothing(seeded: Warehouse) -> None:
    # Same values, JSON keys in another order, identifiers re-sent: no row may look changed.
    row = contact(3)
    row["llm_context"] = {"topics": ["hiking", "jazz"], "summary": "friend 3"}
    seeded.upsert_contacts([row])
    seeded.upsert_businesses([{"business_id": 10, "business_data": {"employees": 12}}])
    assert changed_keys(seeded) == []
    assert changed_keys(seeded, "company") == []


def test_business_edit_is_detected(seeded: Warehouse) -> None:
    seeded.upsert_businesses([{"business_id": 11, "industry": "Utilities"}])
    assert changed_keys(seeded, "company") == [11]
    assert changed_keys(seeded) == []


def test_failed_and_pending_rows_come_back_until_synced(seeded: Warehouse) -> None:
    seeded.upsert_sync_state(
        [
            {"object_type": "person", "record_key": "2", "status": "failed", "attempts": 1, "last_error": "HTTP 500"},
            {"object_type": "person", "record_key": "4", "status": "pending", "attempts": 0, "last_error": None},
        ]
    )
    assert changed_keys(seeded) == [2, 4]
    assert changed_keys(seeded) == [2, 4]  # detection itself changes nothing
    state = seeded.read_sync_state("person", [2])
    assert state["2"]["crm_id"] == "crm-2"  # fields the update left out are kept
    assert state["2"]["attempts"] == 1
    mark_synced(seeded, "person", [2, 4])
    assert changed_keys(seeded) == []


def test_soft_delete_is_a_change_and_never_synced_deleted_rows_are_skipped(seeded: Warehouse) -> None:
    assert seeded.soft_delete("person", [2, 99]) == 1
    assert seeded.soft_delete("person", [2]) == 0  # already deleted
    [[row]] = list(seeded.changed_rows("person"))
    assert row["contact_id"] == 2 and row["deleted_at"] is not None
    seeded.upsert_contacts([contact(50, deleted_at=dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))])
    assert changed_keys(seeded) == [2]  # 50 was never in the CRM: nothing to delete there
    seeded.upsert_sync_state([{"object_type": "person", "record_key": "2", "status": "deleted",
                               "warehouse_hash": seeded.row_hashes("person", [2])[2]}])
    assert changed_keys(seeded) == []
    seeded.upsert_contacts([{"contact_id": 2, "deleted_at": None}])  # restored
    assert changed_keys(seeded) == [2]


def test_changed_rows_are_streamed_in_bounded_batches(warehouse: Warehouse) -> None:
    warehouse.upsert_contacts([contact(i) for i in range(1, 26)])
    batches = list(warehouse.changed_rows("person", batch_size=10))
    assert len(batches) >= 3 and all(1 <= len(b) <= 10 for b in batches)
    assert sorted(r["contact_id"] for b in batches for r in b) == list(range(1, 26))


def test_row_hashes_match_the_change_stream(seeded: Warehouse) -> None:
    seeded.upsert_contacts([{"contact_id": 1, "canonical_name": "Renamed"}])
    [[row]] = list(seeded.changed_rows("person"))
    assert seeded.row_hashes("person", [1, 404]) == {1: row["row_hash"]}
    assert seeded.row_hashes("person", []) == {}


def test_partial_upsert_touches_only_the_given_fields(seeded: Warehouse) -> None:
    seeded.upsert_contacts([{"contact_id": 3, "canonical_name": "Only Name"}])
    [row] = seeded.get_rows("person", [3])
    expected = contact(3, canonical_name="Only Name")
    assert {k: row[k] for k in expected} == expected


def test_identifiers_are_replaced_whole(seeded: Warehouse) -> None:
    seeded.upsert_contacts([{"contact_id": 1, "primary_email": "a@x.io", "additional_emails": ["c@x.io", "b@x.io", "a@x.io"],
                             "primary_phone": "", "additional_phones": []}])
    [row] = seeded.get_rows("person", [1])
    assert (row["primary_email"], row["additional_emails"]) == ("a@x.io", ["c@x.io", "b@x.io"])
    assert (row["primary_phone"], row["additional_phones"]) == (None, [])
    assert seeded.count_rows("contact_identifiers") == 5 * 3 - 2 + 2  # contact 1: 2 emails -> 3, phone gone


def test_duplicate_keys_in_a_batch_keep_the_last(warehouse: Warehouse) -> None:
    warehouse.upsert_contacts([contact(1, canonical_name="first"), contact(1, canonical_name="second")])
    assert warehouse.count_rows("contacts") == 1
    assert warehouse.get_rows("person", [1])[0]["canonical_name"] == "second"


BAD_BATCHES = [
    ({"contact_id": 1, "canonical_name": "ok"}, {"canonical_name": "no key"}, "missing its key 'contact_id'"),
    ({"contact_id": 1, "canonical_name": "ok"}, {"contact_id": "7", "canonical_name": "x"}, "expects an integer"),
    ({"contact_id": 1, "canonical_name": "ok"}, {"contact_id": 7, "canonical_name": 42}, "'canonical_name' expects a string"),
    ({"contact_id": 1, "llm_context": {}}, {"contact_id": 7, "llm_context": {"bad": {1, 2}}}, "JSON-serialisable"),
    ({"contact_id": 1, "deleted_at": None}, {"contact_id": 7, "deleted_at": dt.datetime(2026, 1, 1)}, "timezone-aware"),
    ({"contact_id": 1, "canonical_name": "ok"}, {"contact_id": 7, "nickname": "x"}, "unknown fields ['nickname']"),
    ({"contact_id": 1, "business_id": 10}, {"contact_id": 7, "business_id": True}, "expects an integer"),
    ({"contact_id": 1, "additional_emails": [], "primary_email": "a@b.c"},
     {"contact_id": 7, "additional_emails": "x@y.z", "primary_email": None}, "expects a list of strings"),
]


def test_bad_input_is_rejected_whole_and_loses_nothing(seeded: Warehouse) -> None:
    before = seeded.get_rows("person", [1, 2, 3, 4, 5])
    for good, bad, message in BAD_BATCHES:
        with pytest.raises(WarehouseDataError, match="row 1") as info:
            seeded.upsert_contacts([good, bad])  # the good row comes first: it must not be written either
        assert message in str(info.value)
    assert seeded.get_rows("person", [1, 2, 3, 4, 5]) == before
    assert seeded.count_rows("contacts") == 5 and changed_keys(seeded) == []


def test_emails_and_phones_come_whole(seeded: Warehouse) -> None:
    with pytest.raises(WarehouseDataError, match="must be given together"):
        seeded.upsert_contacts([{"contact_id": 1, "primary_email": "x@y.z"}])
    assert changed_keys(seeded) == []


def test_rows_of_one_batch_must_carry_the_same_fields(seeded: Warehouse) -> None:
    with pytest.raises(WarehouseDataError, match="same fields"):
        seeded.upsert_contacts([{"contact_id": 1, "canonical_name": "a"}, {"contact_id": 2}])
    with pytest.raises(WarehouseDataError, match="crm_sync_state row 0"):
        seeded.upsert_sync_state([{"object_type": "person", "record_key": "1", "status": "done"}])
    assert changed_keys(seeded) == []


def test_allocated_ids_are_new_and_never_repeat(seeded: Warehouse) -> None:
    first = seeded.allocate_ids("person", 3)
    second = seeded.allocate_ids("person", 2)
    assert first == [6, 7, 8] and second == [9, 10]
    seeded.upsert_contacts([contact(100)])
    assert seeded.allocate_ids("person", 1) == [101]
    assert seeded.allocate_ids("company", 2) == [12, 13]
    assert seeded.allocate_ids("person", 0) == []


def test_sync_state_by_key_and_by_crm_id(seeded: Warehouse) -> None:
    when = dt.datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
    seeded.upsert_sync_state([{"object_type": "company", "record_key": "10", "crm_hash": "abc", "crm_updated_at": when}])
    state = seeded.read_sync_state("company", [10, 12])
    assert list(state) == ["10"]
    assert state["10"]["crm_hash"] == "abc" and state["10"]["crm_updated_at"] == when
    assert state["10"]["crm_id"] == "crm-10" and state["10"]["status"] == "synced"
    by_crm = seeded.read_sync_state_by_crm_id("person", ["crm-3", "crm-404"])
    assert list(by_crm) == ["crm-3"] and by_crm["crm-3"]["record_key"] == "3"
    assert seeded.read_sync_state("person", []) == {}


def test_watermarks(warehouse: Warehouse) -> None:
    assert warehouse.get_watermark("pull:person") is None
    warehouse.set_watermark("pull:person", "2026-01-01T00:00:00Z")
    warehouse.set_watermark("pull:person", "2026-02-01T00:00:00Z")
    warehouse.set_watermark("pull:company", "2026-03-01T00:00:00Z")
    assert warehouse.get_watermark("pull:person") == "2026-02-01T00:00:00Z"
    assert warehouse.get_watermark("pull:company") == "2026-03-01T00:00:00Z"


def test_runs_and_errors(warehouse: Warehouse) -> None:
    run = warehouse.start_run("run-1")
    assert warehouse.get_run(run)["status"] == "running"  # type: ignore[index]
    n = warehouse.record_errors(
        [
            {"run_id": run, "object_type": "person", "record_key": "1", "crm_id": "u1", "operation": "push",
             "error_class": "ValidationError", "error_message": "bad email" + "!" * 10_000, "http_status": 400, "attempt": 1},
            {"run_id": run, "object_type": "company", "record_key": "10", "operation": "pull",
             "error_class": "Timeout", "error_message": "timed out"},
        ]
    )
    assert n == 2
    errors = warehouse.open_errors()
    assert [e["record_key"] for e in errors] == ["1", "10"]
    assert errors[0]["http_status"] == 400 and len(errors[0]["error_message"]) == 4000
    assert [e["record_key"] for e in warehouse.open_errors("company")] == ["10"]
    assert warehouse.resolve_errors("person", [1]) == 1
    assert [e["record_key"] for e in warehouse.open_errors()] == ["10"]
    warehouse.finish_run(run, "failed", {"pushed": 5, "errors": 2})
    got = warehouse.get_run(run)
    assert got is not None and got["status"] == "failed" and got["counts"] == {"pushed": 5, "errors": 2}
    assert got["finished_at"] >= got["started_at"]


def test_error_lifecycles_runs_and_bookkeeping_read_back(warehouse: Warehouse) -> None:
    t0 = dt.datetime(2026, 5, 1, tzinfo=UTC)
    for n, run in enumerate(("run-a", "run-b")):
        warehouse.start_run(run, started_at=t0 + dt.timedelta(hours=n))
        warehouse.record_errors([
            {"run_id": run, "object_type": "person", "record_key": "7", "operation": "push",
             "error_class": f"Refused{n}", "error_message": f"attempt {n}", "occurred_at": t0 + dt.timedelta(hours=n)},
            {"run_id": run, "operation": "run", "error_class": "TwentyAuthError", "error_message": "key refused",
             "occurred_at": t0 + dt.timedelta(hours=n, minutes=1)},
        ])
        warehouse.finish_run(run, "partial", {"errors": 2})
    warehouse.record_errors([{"run_id": "run-b", "object_type": "company", "record_key": "3", "operation": "pull",
                              "error_class": "X", "error_message": "gone", "occurred_at": t0,
                              "resolved_at": t0 + dt.timedelta(minutes=5)}])
    lifecycles = warehouse.error_lifecycles()
    assert [(e["record_key"], e["operation"], e["attempts"], e["is_open"]) for e in lifecycles] == [
        (None, "run", 2, True), ("7", "push", 2, True), ("3", "pull", 1, False)]
    record = lifecycles[1]
    assert (record["first_seen"], record["last_seen"]) == (t0, t0 + dt.timedelta(hours=1))
    assert (record["error_class"], record["error_message"], record["last_run_id"]) == ("Refused1", "attempt 1", "run-b")
    assert [e["record_key"] for e in warehouse.error_lifecycles(open_only=True)] == [None, "7"]
    assert [e["record_key"] for e in warehouse.error_lifecycles(run_id="run-a")] == [None, "7"]
    assert warehouse.error_lifecycles(run_id="run-none") == []
    assert len(warehouse.error_lifecycles(run_id="run-")) == 3  # the start of an id is enough
    kinds = {(k["operation"], k["error_class"]): (k["open_errors"], k["attempts"]) for k in warehouse.open_error_kinds()}
    assert kinds == {("push", "Refused1"): (1, 2), ("run", "TwentyAuthError"): (1, 2)}
    assert [r["run_id"] for r in warehouse.recent_runs(5)] == ["run-b", "run-a"]
    assert warehouse.recent_runs(1)[0]["counts"] == {"errors": 2}
    warehouse.upsert_sync_state([{"object_type": "person", "record_key": str(k), "status": s}
                                 for k, s in ((1, "synced"), (2, "synced"), (3, "failed"))])
    assert warehouse.sync_state_counts() == {"person": {"synced": 2, "failed": 1}}
    warehouse.set_watermark("pull:person", "2026-02-01T00:00:00Z")
    assert warehouse.bookkeeping_values() == {"watermark:pull:person": "2026-02-01T00:00:00Z"}


def test_errors_close_when_settled_superseded_or_after_a_good_run(warehouse: Warehouse) -> None:
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    at = [t0 + dt.timedelta(minutes=m) for m in range(6)]
    warehouse.record_errors([
        # record 1 failed twice (the same operation): only the newer stays open
        {"run_id": "r1", "object_type": "person", "record_key": "1", "operation": "push", "error_message": "a",
         "occurred_at": at[0]},
        {"run_id": "r2", "object_type": "person", "record_key": "1", "operation": "push", "error_message": "a",
         "occurred_at": at[2]},
        # record 2 failed, then synced cleanly after it
        {"run_id": "r1", "object_type": "person", "record_key": "2", "operation": "push", "error_message": "b",
         "occurred_at": at[0]},
        # record 5 failed on a machine whose clock ran a year ahead, then synced cleanly
        {"run_id": "r0", "object_type": "person", "record_key": "5", "operation": "pull", "error_message": "e",
         "occurred_at": at[0] + dt.timedelta(days=365)},
        # a pull error known only by its Twenty id, whose record has synced since
        {"run_id": "r1", "object_type": "person", "crm_id": "u3", "operation": "pull", "error_message": "c",
         "occurred_at": at[0]},
        # a pull error known only by its Twenty id, seen again: the newer one stays open
        {"run_id": "r1", "object_type": "person", "crm_id": "u4", "operation": "pull", "error_message": "d",
         "occurred_at": at[0]},
        {"run_id": "r2", "object_type": "person", "crm_id": "u4", "operation": "pull", "error_message": "d",
         "occurred_at": at[2]},
        # run-level errors: one before the successful run started, one during it
        {"run_id": "r1", "operation": "run", "error_message": "down", "occurred_at": at[0]},
        {"run_id": "r3", "operation": "run", "error_message": "blip", "occurred_at": at[4]},
    ])
    warehouse.upsert_sync_state([
        {"object_type": "person", "record_key": "2", "crm_id": "u2", "status": "synced", "last_synced_at": at[1]},
        {"object_type": "person", "record_key": "3", "crm_id": "u3", "status": "synced", "last_synced_at": at[1]},
        {"object_type": "person", "record_key": "5", "crm_id": "u5", "status": "synced", "last_synced_at": at[1]},
    ])
    # The end of run r2: its own rows supersede the older ones of the same record and operation.
    assert warehouse.close_settled_errors(run_id="r2", run_succeeded=False) == 5
    assert sorted((e["record_key"] or "", e["error_message"]) for e in warehouse.open_errors()) == \
        [("", "blip"), ("", "d"), ("", "down"), ("1", "a")]
    # A later run that succeeded closes the run-level errors of the runs before it, not its own.
    assert warehouse.close_settled_errors(run_id="r3", run_succeeded=True) == 1
    assert sorted((e["record_key"] or "", e["error_message"]) for e in warehouse.open_errors()) == \
        [("", "blip"), ("", "d"), ("1", "a")]


def test_renamed_tables_are_used(open_test_warehouse: Any) -> None:
    renames = {"contacts": "people_master", "crm_sync_state": "my_sync_state"}
    wh = open_test_warehouse(tables=renames)
    wh.upsert_contacts([contact(1), contact(2)])
    assert changed_keys(wh) == [1, 2]
    mark_synced(wh, "person", [1])
    assert changed_keys(wh) == [2]
    assert {"people_master", "my_sync_state"} <= set(wh._existing_columns())
    default = open_test_warehouse()
    assert default.count_rows("contacts") == 0 and default.count_rows("crm_sync_state") == 0
    assert wh.count_rows("contacts") == 2
