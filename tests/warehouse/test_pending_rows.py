"""Pulled values staged beside contacts (BigQuery's way), on both engines: reads by key see them at
once, landing writes only what the warehouse still holds as the merge saw it (a warehouse edit made
in between is kept), a landing stopped half-way is done again harmlessly by a fresh process, and
nothing is MERGEd into contacts until the values land.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest

from truth_forge.core.crm_schema import CrmSchema
from truth_forge.sync import landing, views
from truth_forge.sync.objects import PERSON
from truth_forge.warehouse import Warehouse
from truth_forge.warehouse.pending_rows import STAGED_HASH
from truth_forge.warehouse.sample_data import generate_sample_data


@pytest.fixture
def staging(open_test_warehouse: Callable[..., Any]) -> Warehouse:
    wh = open_test_warehouse()
    wh.stage_pulled_rows = True
    wh.pending_fold_minutes = 1_000_000.0
    generate_sample_data(wh, contacts=6, businesses=2, seed=3)
    return wh


def table_row(wh: Warehouse, key: int) -> dict[str, Any]:
    [row] = wh._table_rows("person", [key])
    return row


def pull(wh: Warehouse, key: int, **values: Any) -> set[int]:
    """What the pull does: read the row, merge, hand the merged fields over with what it read."""
    current = {r["contact_id"]: r for r in wh.get_rows("person", [key])}
    staged = wh.land_pulled("person", [{"contact_id": key, **values}], current)
    wh.upsert_sync_state([{"object_type": "person", "record_key": str(key), "status": "synced",
                           "warehouse_hash": STAGED_HASH if key in staged else wh.row_hashes("person", [key])[key]}])
    return staged


def left_for_the_push(wh: Warehouse, key: int) -> bool:
    """Landed but not recorded as synced: no hash, and retried by the next push whatever its stamp."""
    state = wh.read_sync_state("person", [key])[str(key)]
    return state["warehouse_hash"] is None and state["status"] == "pending"


def check_as_the_sync_does(wh: Warehouse) -> None:
    wh.check_landed_rows_with(lambda object_type, rows, states: landing.as_merged(SCHEMA, object_type, rows, states))


def pull_narrow(wh: Warehouse, key: int, **values: Any) -> None:
    """The pull on BigQuery: the row read without its JSON; the state's base is the merged view."""
    [wide] = wh.get_rows("person", [key])
    [narrow] = wh.get_rows("person", [key], narrow=True)
    assert "row_hash" not in narrow and "ai_insights" not in narrow
    assert wh.land_pulled("person", [{"contact_id": key, **values}], {key: narrow}) == {key}
    base = views.warehouse_view(PERSON, SCHEMA, {**wide, **values})
    wh.upsert_sync_state([{"object_type": "person", "record_key": str(key), "status": "synced",
                           "warehouse_hash": STAGED_HASH, "base": base}])


SCHEMA = CrmSchema.load()


MERGE_INTO_CONTACTS = re.compile(r"^\s*MERGE\s+(INTO\s+)?\S*\bcontacts\b", re.IGNORECASE)


def merges_into_contacts(wh: Warehouse) -> list[str]:
    """Start listening: the MERGEs into contacts sent from now on."""
    sent: list[str] = []
    wh.statements.listeners.append(lambda s: sent.append(s.sql) if MERGE_INTO_CONTACTS.match(s.sql) else None)
    return sent


def test_staged_values_are_read_at_once_and_land_without_a_merge_before(staging: Warehouse) -> None:
    before = table_row(staging, 1)
    merges = merges_into_contacts(staging)
    assert pull(staging, 1, canonical_name="Staged Name", category_code="B") == {1}
    assert merges == []  # appended, not merged
    assert table_row(staging, 1)["canonical_name"] == before["canonical_name"]
    [seen] = staging.get_rows("person", [1])
    assert (seen["canonical_name"], seen["category_code"], seen["row_hash"]) == ("Staged Name", "B", STAGED_HASH)
    assert staging.row_hashes("person", [1, 2]) == {1: STAGED_HASH, 2: table_row(staging, 2)["row_hash"]}
    assert staging.fold_pending() == 0  # not due yet
    assert staging.fold_pending(force=True) == 1
    assert len(merges) == 1
    landed = table_row(staging, 1)
    assert (landed["canonical_name"], landed["category_code"]) == ("Staged Name", "B")
    assert staging.count_rows("crm_sync_pending") == 0
    # The state's hash is the landed row's, so the push does not send the row back.
    assert staging.read_sync_state("person", [1])["1"]["warehouse_hash"] == landed["row_hash"]


def test_a_warehouse_edit_made_before_landing_is_kept_and_the_rest_lands(staging: Warehouse) -> None:
    pull(staging, 2, canonical_name="From Twenty", category_code="D")
    # A pipeline writes the same row meanwhile: one field the pull changed, nothing else.
    staging.upsert_contacts([{"contact_id": 2, "category_code": "H"}])
    [seen] = staging.get_rows("person", [2])  # the row changed since: everything pending lands first
    assert staging.count_rows("crm_sync_pending") == 0
    assert (seen["canonical_name"], seen["category_code"]) == ("From Twenty", "H")
    assert seen["row_hash"] != STAGED_HASH
    # Not recorded as synced: the warehouse's newer category still has to go out.
    assert left_for_the_push(staging, 2)


def test_a_landing_stopped_half_way_is_finished_by_a_fresh_process_without_overwriting(
        staging: Warehouse, open_test_warehouse: Callable[..., Any]) -> None:
    pull(staging, 3, canonical_name="Landed Once", category_code="E")
    pull(staging, 4, canonical_name="Not Yet")
    # As if killed after the MERGE: the values are in contacts, the pending rows still there.
    entries = dict(staging._pending_entries())
    staging._land("person", {k: e for (_, k), e in entries.items()})
    assert staging.count_rows("crm_sync_pending") == 2
    staging.upsert_contacts([{"contact_id": 3, "canonical_name": "Edited After"}])
    fresh = open_test_warehouse()
    fresh.stage_pulled_rows = True
    [seen] = fresh.get_rows("person", [3])  # loads the pending rows: changed since, so they land now
    assert seen["canonical_name"] == "Edited After" and seen["category_code"] == "E"
    assert fresh.count_rows("crm_sync_pending") == 0
    assert table_row(fresh, 4)["canonical_name"] == "Not Yet"


def test_a_person_created_in_twenty_is_inserted_at_once_without_a_merge(staging: Warehouse) -> None:
    """A key allocated for a new record is never left free in the table (another writer numbering
    by MAX + 1 would take it); an INSERT bills nothing on BigQuery."""
    merges = merges_into_contacts(staging)
    [key] = staging.allocate_ids("person", 1)
    staged = staging.land_pulled("person", [{"contact_id": key, "canonical_name": "New One", "category_code": "A",
                                             "primary_email": "new@example.org", "additional_emails": [],
                                             "business_id": 1}], {})
    assert staged == set() and merges == [] and staging.pending_keys("person", [key]) == []
    row = table_row(staging, key)
    assert (row["canonical_name"], row["primary_email"], row["business_id"]) == ("New One", "new@example.org", 1)


def test_a_warehouse_edit_to_another_field_before_landing_still_goes_out(staging: Warehouse) -> None:
    """Landing records the row as synced only if nothing else changed it since the merge read it."""
    staging.detect_changes("person").commit()
    pull(staging, 5, canonical_name="From Twenty")
    staging.upsert_contacts([{"contact_id": 5, "category_code": "G"}])  # nothing reads row 5 before landing
    assert staging.fold_pending(force=True) == 1
    assert (table_row(staging, 5)["canonical_name"], table_row(staging, 5)["category_code"]) == ("From Twenty", "G")
    assert left_for_the_push(staging, 5)
    rows = [r for batch in staging.detect_changes("person") for r in batch if r["contact_id"] == 5]
    assert [r["category_code"] for r in rows] == ["G"]  # handed to the push, which sends what differs


def test_staged_rows_are_read_again_after_another_writer_held_the_lease(
        staging: Warehouse, open_test_warehouse: Callable[..., Any]) -> None:
    staging._pending_entries()  # loaded: nothing staged yet
    other = open_test_warehouse()
    other.stage_pulled_rows = True
    current = {r["contact_id"]: r for r in other.get_rows("person", [4])}
    other.land_pulled("person", [{"contact_id": 4, "canonical_name": "Staged Elsewhere"}], current)
    assert staging.get_rows("person", [4])[0]["canonical_name"] != "Staged Elsewhere"  # what it loaded
    staging.forget_pending()
    assert staging.get_rows("person", [4])[0]["canonical_name"] == "Staged Elsewhere"


def test_a_bad_value_is_refused_before_anything_is_staged(staging: Warehouse) -> None:
    from truth_forge.warehouse.errors import WarehouseDataError

    with pytest.raises(WarehouseDataError, match="category_code"):
        staging.land_pulled("person", [{"contact_id": 5, "category_code": 7}], {})
    assert staging.count_rows("crm_sync_pending") == 0 and staging.pending_keys("person", [5]) == []


def test_a_candidate_with_staged_values_is_judged_as_it_will_be(staging: Warehouse) -> None:
    """Change detection reads the table; a row both staged and edited in the warehouse is handed to
    the push with the staged values laid over it, so the push never sends the older value back."""
    staging.detect_changes("person").commit()  # the first detection (an audit) sets the mark
    staging.upsert_contacts([{"contact_id": 6, "ai_insights": {"score": 9}}])  # stamped: a candidate
    pull(staging, 6, category_code="F")  # merged after that edit, which still has to go out:
    staging.upsert_sync_state([{"object_type": "person", "record_key": "6", "warehouse_hash": None}])
    rows = [r for batch in staging.detect_changes("person") for r in batch if r["contact_id"] == 6]
    assert [(r["category_code"], r["ai_insights"]) for r in rows] == [("F", {"score": 9})]


def test_a_dry_run_on_a_store_from_before_staging_reads_rows_as_they_are(tmp_path: Any) -> None:
    from truth_forge.warehouse import open_warehouse

    url = f"duckdb:///{tmp_path / 'old.duckdb'}"
    with open_warehouse(url) as wh:
        generate_sample_data(wh, contacts=2, businesses=1, seed=3)
        wh._run("DROP TABLE {crm_sync_pending}", ())  # the layout of an older truth-forge
    with open_warehouse(url, read_only=True) as dry:
        assert [r["contact_id"] for r in dry.get_rows("person", [1, 2])] == [1, 2]
        assert dry.fold_pending(force=True) == 0


def test_a_deletion_pulled_from_twenty_is_staged_too(staging: Warehouse) -> None:
    writes: list[str] = []
    staging.statements.listeners.append(
        lambda s: writes.append(s.sql) if re.match(r"^\s*(UPDATE|MERGE)\s+(INTO\s+)?\S*\bcontacts\b", s.sql, re.I)
        else None)
    assert staging.soft_delete("person", [2, 3], pulled=True) == 2
    assert writes == []
    assert [r["deleted_at"] is not None for r in staging.get_rows("person", [2, 3])] == [True, True]
    assert staging.soft_delete("person", [2], pulled=True) == 0  # already deleted, as it will be
    staging.fold_pending(force=True)
    assert table_row(staging, 2)["deleted_at"] is not None and table_row(staging, 4)["deleted_at"] is None


def test_values_merged_from_a_narrow_read_land_checked_against_the_merge_base(staging: Warehouse) -> None:
    """A merge that read no JSON stages its values; landing reads the landed row whole and records it
    as synced only once its every field, JSON included, is what the merge base says."""
    check_as_the_sync_does(staging)
    pull_narrow(staging, 1, canonical_name="Narrow One", category_code="B")
    [seen] = staging.get_rows("person", [1], narrow=True)
    assert (seen["canonical_name"], seen["row_hash"]) == ("Narrow One", STAGED_HASH)  # laid over the narrow row
    assert staging.fold_pending(force=True) == 1
    landed = table_row(staging, 1)
    assert staging.read_sync_state("person", [1])["1"]["warehouse_hash"] == landed["row_hash"]


def test_a_json_edit_made_without_a_stamp_before_landing_still_goes_out(staging: Warehouse) -> None:
    """The narrow merge could not see it, and the landed row's hash would cover it: landing finds
    it against the merge base and leaves the row to the push."""
    check_as_the_sync_does(staging)
    staging.detect_changes("person").commit()
    pull_narrow(staging, 5, canonical_name="From Twenty")
    staging._run("UPDATE {contacts} AS t SET ai_insights = NULL WHERE t.contact_id = 5", ())  # no new stamp
    assert staging.fold_pending(force=True) == 1
    assert left_for_the_push(staging, 5)
    rows = [r for batch in staging.detect_changes("person") for r in batch if r["contact_id"] == 5]
    assert [(r["canonical_name"], r["ai_insights"]) for r in rows] == [("From Twenty", None)]


def test_without_a_landing_check_narrow_values_are_left_to_the_push(staging: Warehouse) -> None:
    pull_narrow(staging, 3, category_code="C")
    assert staging.fold_pending(force=True) == 1
    assert left_for_the_push(staging, 3)


def test_a_backlog_lands_in_parts_and_its_state_in_several_saves(
        staging: Warehouse, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows go to BigQuery as query parameters (a request is limited to 10 MB): a large staged
    backlog lands in MERGEs of `landing_records`, and its state in journal INSERTs of
    JOURNAL_INSERT_ROWS, every value landing and every state recorded."""
    from truth_forge.warehouse import state_journal

    monkeypatch.setattr(state_journal, "JOURNAL_INSERT_ROWS", 2)
    staging.landing_records = 2
    for key in range(1, 6):
        pull(staging, key, canonical_name=f"Backlog {key}")
    merges = merges_into_contacts(staging)
    saves: list[str] = []
    staging.statements.listeners.append(
        lambda s: saves.append(s.sql) if s.sql.lstrip().upper().startswith("INSERT INTO") and "journal" in s.sql else None)
    assert staging.fold_pending(force=True) == 5
    assert len(merges) == 3  # 2 + 2 + 1
    assert len(saves) >= 3  # the landed states, two entries an INSERT
    states = staging.read_sync_state("person", range(1, 6))
    for key in range(1, 6):
        landed = table_row(staging, key)
        assert landed["canonical_name"] == f"Backlog {key}"
        assert states[str(key)]["warehouse_hash"] == landed["row_hash"]
    assert staging.count_rows("crm_sync_pending") == 0
