"""The sync state's journal on both engines: saves are appended and read back at once, folded field by
field (a field a save leaves out is kept, one it sets to NULL is cleared), a fold stopped half-way is
simply done again, a save that lands after a later fold (a writer paused past its lease) never
overwrites the newer state, and a machine whose clock is behind still has its saves folded.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from truth_forge.warehouse import Warehouse, open_warehouse
from truth_forge.warehouse.binds import RowSet, plain_row
from truth_forge.warehouse.queries import source_select
from truth_forge.warehouse.sample_data import generate_sample_data
from truth_forge.warehouse.schema import INT64, STRING


def folded_state(wh: Warehouse, key: str) -> dict[str, Any]:
    rows, _ = wh._run("SELECT t.crm_id AS crm_id, t.status AS status, t.last_error AS last_error "
                      "FROM {crm_sync_state} AS t WHERE t.record_key = '" + key + "'", (), fetch=True)
    [row] = rows
    return row


def save(wh: Warehouse, key: str, **values: Any) -> None:
    wh.upsert_sync_state([{"object_type": "person", "record_key": key, **values}])


def test_saves_are_read_back_at_once_and_folded_field_by_field(warehouse: Warehouse) -> None:
    save(warehouse, "1", crm_id="a", status="failed", last_error="HTTP 500")
    save(warehouse, "1", status="synced", last_error=None)  # crm_id left out: kept
    assert warehouse.count_rows("crm_sync_state") == 0  # nothing folded yet...
    got = warehouse.read_sync_state("person", [1])["1"]
    assert (got["crm_id"], got["status"], got["last_error"]) == ("a", "synced", None)  # ...yet read back
    assert warehouse.fold_journal() == 2
    assert folded_state(warehouse, "1") == {"crm_id": "a", "status": "synced", "last_error": None}
    assert warehouse.count_rows("crm_sync_journal") == 0
    assert warehouse.fold_journal() == 0  # known empty: nothing sent
    before = warehouse.statements.statements
    warehouse.fold_journal()
    assert warehouse.statements.statements == before


def test_a_fold_stopped_before_its_entries_were_removed_is_done_again_the_same(warehouse: Warehouse) -> None:
    save(warehouse, "2", crm_id="b", status="synced")
    warehouse.fold_journal()
    # As if killed after the MERGE: the entries are still there (put back by hand) and fold again.
    warehouse._run("INSERT INTO {crm_sync_journal} (seq, fields, object_type, record_key, crm_id, status) "
                   "VALUES (1, ',crm_id,status,', 'person', '2', 'b', 'synced')", ())
    warehouse.fold_journal(forget=True)
    assert folded_state(warehouse, "2") == {"crm_id": "b", "status": "synced", "last_error": None}


def test_a_save_landing_after_a_later_fold_is_dropped_not_folded_over_newer_state(
        warehouse: Warehouse, caplog: pytest.LogCaptureFixture) -> None:
    save(warehouse, "3", crm_id="old", status="synced")
    late_seq = warehouse._journal.last_seq  # the paused writer's save had this place in the order
    save(warehouse, "3", crm_id="new", status="synced")  # the next holder's, later
    warehouse.fold_journal()
    # The paused writer's INSERT lands now, after that fold.
    columns = [("seq", INT64), ("fields", STRING), ("object_type", STRING), ("record_key", STRING), ("crm_id", STRING)]
    warehouse._run(f"INSERT INTO {{crm_sync_journal}} (seq, fields, object_type, record_key, crm_id) "
                   f"{source_select('rows', columns)}",
                   (RowSet("rows", columns, [{"seq": late_seq - 1, "fields": ",crm_id,", "object_type": "person",
                                              "record_key": "3", "crm_id": "stale"}]),))
    warehouse.fold_journal(forget=True)
    assert folded_state(warehouse, "3")["crm_id"] == "new"
    assert "Dropped 1 sync-state saves" in caplog.text
    assert warehouse.read_sync_state("person", [3])["3"]["crm_id"] == "new"


def test_a_machine_whose_clock_is_behind_still_has_its_saves_folded(warehouse: Warehouse) -> None:
    save(warehouse, "4", crm_id="first", status="synced")
    warehouse.fold_journal()
    # The last fold was made by a machine whose clock ran a day ahead.
    warehouse._run("UPDATE {crm_sync_kv} AS t SET value = CAST(CAST(t.value AS INT64) + 86400000000000 AS STRING) "
                   "WHERE t.key = 'journal-folded-upto'", ())
    warehouse.fold_journal(forget=True)  # a new run: what this process knows is dropped
    save(warehouse, "4", crm_id="second")
    warehouse.fold_journal()
    assert folded_state(warehouse, "4")["crm_id"] == "second"


def test_a_journal_kept_beside_the_state_settles_every_run_and_folds_only_when_forced(warehouse: Warehouse) -> None:
    """BigQuery's way (a fold bills the state table twice): entries stay in the journal, read beside
    the state; settling still keeps the retry lists and the records saved clean."""
    warehouse.journal_fold_share = 1_000_000.0  # never due by size, once the state has a row
    save(warehouse, "6", crm_id="f", status="synced")
    assert warehouse.fold_journal() == 1  # an empty state: folding costs nothing, so it is due
    save(warehouse, "5", crm_id="e", status="failed", last_error="HTTP 500")
    assert warehouse.fold_journal() == 0
    assert warehouse.count_rows("crm_sync_state") == 1 and warehouse.count_rows("crm_sync_journal") == 1
    assert "5" in (warehouse.retry_keys("person") or [])
    save(warehouse, "5", status="synced", last_error=None)
    assert warehouse.fold_journal() == 0
    assert "5" not in (warehouse.retry_keys("person") or [])
    keys, ids = warehouse.settled_since_forget()
    assert "5" in keys["person"] and "e" in ids
    warehouse.fold_journal(forget=True)  # the next run: nothing new, nothing folded, read back whole
    got = warehouse.read_sync_state("person", [5])["5"]
    assert (got["crm_id"], got["status"], got["last_error"]) == ("e", "synced", None)
    assert warehouse.read_sync_state_by_crm_id("person", ["e"])["e"]["record_key"] == "5"
    assert warehouse.count_rows("crm_sync_state") == 1
    assert warehouse.fold_journal(force=True) == 2  # before a reader of the state table alone
    assert folded_state(warehouse, "5") == {"crm_id": "e", "status": "synced", "last_error": None}
    assert warehouse.count_rows("crm_sync_journal") == 0
    # New saves order after the kept entries, whatever the clock: the marks say where they end.
    save(warehouse, "5", status="failed", last_error="HTTP 502")
    warehouse.fold_journal()
    assert warehouse.read_sync_state("person", [5])["5"]["last_error"] == "HTTP 502"
    assert "5" in (warehouse.retry_keys("person") or [])


def test_a_fold_in_windows_gives_what_one_fold_gives(warehouse: Warehouse) -> None:
    """An engine with little memory folds a long journal a window of entries at a time: a record
    whose saves fall into several windows still ends with each field's latest value."""
    warehouse.fold_window_rows = 2
    sent: list[Any] = []
    warehouse.statements.listeners.append(sent.append)
    save(warehouse, "7", crm_id="a", status="failed", last_error="HTTP 500")
    save(warehouse, "8", crm_id="c", status="synced")
    save(warehouse, "7", status="synced", last_error=None)
    save(warehouse, "7", crm_id="b")
    save(warehouse, "8", last_error="kept")
    assert warehouse.fold_journal(force=True) == 5
    assert folded_state(warehouse, "7") == {"crm_id": "b", "status": "synced", "last_error": None}
    assert folded_state(warehouse, "8") == {"crm_id": "c", "status": "synced", "last_error": "kept"}
    folds = [s for s in sent if s.sql.lstrip().startswith("MERGE") and "crm_sync_journal" in s.sql]
    assert len(folds) == 3  # windows of 2, 2 and 1 entries


def test_a_handle_that_only_looks_judges_rows_by_the_journal_it_may_not_fold(tmp_path: Path) -> None:
    """A dry run may not fold; with the journal kept beside the state (BigQuery's way), its audit
    must still read the journal's saves, or it would list records already synced as to be created."""
    url = f"duckdb:///{tmp_path / 'w.duckdb'}?journal_fold_share=1000000"
    with open_warehouse(url) as wh:
        generate_sample_data(wh, 8, 2, seed=4)
        save(wh, "99", crm_id="z", status="synced")
        wh.fold_journal()  # an empty state: folded; from now on the journal is kept
        rows = [r for batch in wh.changed_rows("person") for r in batch]
        wh.upsert_sync_state([{"object_type": "person", "record_key": str(r["contact_id"]), "crm_id": f"id-{r['contact_id']}",
                               "status": "synced", "warehouse_hash": r["row_hash"]} for r in rows[:5]])
        wh.fold_journal()
        assert wh.count_rows("crm_sync_journal") == 5  # kept, not folded
    with open_warehouse(url, read_only=True) as looking:
        left = [r["contact_id"] for batch in looking.changed_rows("person") for r in batch]
    assert sorted(left) == sorted(r["contact_id"] for r in rows[5:])


def test_a_saved_base_is_read_back_from_memory_as_it_was_given(warehouse: Warehouse) -> None:
    # The cache keeps a saved base as its stored text until a read needs it (issue 22): reads still
    # hand out the base decoded (aliases back to field names), parsed once.
    base = {"canonical_name": "Ann", "llm_context": "#0123456789abcdef", "additional_emails": ["a@b.c"],
            "business_id": 7, "not_aliased": {"nested": [1, None]}}
    save(warehouse, "9", status="pending")  # a state to begin with (a record with none is saved past the cache)
    assert warehouse.read_sync_state("person", [9])["9"]["status"] == "pending"  # remembered
    save(warehouse, "9", crm_id="x", status="synced", base=base)
    before = warehouse.statements.statements
    first = warehouse.read_sync_state("person", [9])["9"]
    second = warehouse.read_sync_state("person", [9])["9"]
    detected = warehouse._settle_detected("person", "9", None, keep=False)
    assert warehouse.statements.statements == before  # all three from memory
    assert first["base"] == base and second["base"] == base and detected is not None and detected["base"] == base
    assert (second["crm_id"], second["status"]) == ("x", "synced")


def test_a_shed_read_cache_reads_saves_not_folded_yet_through_the_store(warehouse: Warehouse) -> None:
    # A run's end drops the cache before its closing fold (runner.py) where reads are free: they
    # still see every save, from the journal, and a row carried from before those saves is not
    # taken at its word. On BigQuery (reads bill; serve's webhooks read what a run left) it stays.
    base = {"canonical_name": "Ann"}
    save(warehouse, "9", status="pending")  # a state to begin with (a record with none is saved past the cache)
    assert warehouse.read_sync_state("person", [9])["9"]["status"] == "pending"  # remembered
    save(warehouse, "9", crm_id="x", status="synced", base=base)
    warehouse.shed_read_cache()
    before = warehouse.statements.statements
    again = warehouse.read_sync_state("person", [9])["9"]
    reads_are_free = warehouse.journal_fold_share <= 0
    assert (warehouse.statements.statements > before) == reads_are_free  # read through only where free
    assert (again["crm_id"], again["status"], again["base"]) == ("x", "synced", base)
    warehouse.shed_read_cache()
    stale = {"object_type": "person", "record_key": "9", "crm_id": None, "status": None}  # as a query before the save read it
    detected = warehouse._settle_detected("person", "9", stale, keep=False)
    assert detected is not None and detected["crm_id"] == "x"
    warehouse.fold_journal(force=True)
    assert folded_state(warehouse, "9") == {"crm_id": "x", "status": "synced", "last_error": None}


def test_the_records_saved_clean_are_kept_by_their_latest_fold_and_read_back_among_given_ones(
        warehouse: Warehouse, monkeypatch: pytest.MonkeyPatch) -> None:
    """What `close_settled_errors` looks up: keys as whole numbers or as any text, Twenty ids as
    UUIDs or not, the latest fold's word winning; settled in batches smaller than the fold."""
    import truth_forge.warehouse.state_journal as journal

    monkeypatch.setattr(journal, "STATUS_CHUNK", 2)  # three batches for five records
    uuid_a, uuid_b = "0b9d4c3e-52f1-4a7e-9d1b-2f6c8e0a7b11", "7f3e2a10-1c4d-4e5f-8a9b-0c1d2e3f4a5b"
    save(warehouse, "10", crm_id=uuid_a, status="synced", last_error=None)
    save(warehouse, "011", crm_id="not-a-uuid", status="synced", last_error=None)  # not a plain number
    save(warehouse, "12", crm_id=uuid_b, status="failed", last_error="HTTP 500")
    save(warehouse, "13", crm_id="c13", status="deleted", last_error=None)
    save(warehouse, "14", crm_id="c14", status="synced", last_error="synced without a value: x")
    warehouse.fold_journal()
    keys, ids = warehouse.settled_since_forget()
    assert keys["person"] == {"10", "011", "13"} and ids == {uuid_a, "not-a-uuid", "c13"}
    assert sorted(warehouse.retry_keys("person") or []) == ["12"]
    save(warehouse, "10", status="failed", last_error="HTTP 502")  # clean no more
    save(warehouse, "12", status="synced", last_error=None)  # clean now
    warehouse.fold_journal()
    keys, ids = warehouse.settled_since_forget()
    assert keys["person"] == {"011", "12", "13"} and {uuid_a, uuid_b} <= ids  # an id stays once clean
    assert sorted(warehouse.retry_keys("person") or []) == ["10"]
    assert warehouse.settled_since_forget({"person": ["12", "10", "99", "011"]}, [uuid_b, "c13", "zz"]) == (
        {"person": {"12", "011"}, "company": set()}, {uuid_b, "c13"})
    warehouse.fold_journal(forget=True)
    assert warehouse.settled_since_forget() == ({"person": set(), "company": set()}, set())


def test_a_save_stores_each_entry_as_given_whether_its_values_are_shared_or_not(warehouse: Warehouse) -> None:
    # Values every entry of a save shares go to the engine once (queries.insert_select): the stored
    # entries are the same as when every value went with its own entry. Timestamps too (a push's
    # answer is taken in at one time), a shared NULL among them.
    at = dt.datetime(2026, 12, 4, 18, 5, 6, 123456, tzinfo=dt.UTC)
    later = at + dt.timedelta(microseconds=1)
    warehouse.upsert_sync_state([
        {"object_type": "person", "record_key": "11", "crm_id": "a", "status": "synced", "attempts": 0, "last_error": None,
         "last_synced_at": at, "crm_updated_at": None},
        {"object_type": "person", "record_key": "12", "crm_id": "b", "status": "synced", "attempts": 0, "last_error": None,
         "last_synced_at": at.astimezone(dt.timezone(dt.timedelta(hours=2))), "crm_updated_at": None},
    ])
    warehouse.upsert_sync_state([  # no value shared but the field set and the object type
        {"object_type": "person", "record_key": "13", "crm_id": "c", "status": "failed", "attempts": 2, "last_error": "x",
         "last_synced_at": at, "crm_updated_at": later},
        {"object_type": "person", "record_key": "14", "crm_id": None, "status": "synced", "attempts": 0, "last_error": None,
         "last_synced_at": later, "crm_updated_at": None},
    ])
    rows, _ = warehouse._run("SELECT j.record_key AS record_key, j.fields AS fields, j.crm_id AS crm_id, "
                             "j.status AS status, j.attempts AS attempts, j.last_error AS last_error, "
                             "j.last_synced_at AS last_synced_at, j.crm_updated_at AS crm_updated_at "
                             "FROM {crm_sync_journal} AS j ORDER BY j.seq", (), fetch=True)
    fields = ",attempts,crm_id,crm_updated_at,last_error,last_synced_at,status,"
    assert [plain_row(r) for r in rows] == [
        {"record_key": "11", "fields": fields, "crm_id": "a", "status": "synced", "attempts": 0, "last_error": None,
         "last_synced_at": at, "crm_updated_at": None},
        {"record_key": "12", "fields": fields, "crm_id": "b", "status": "synced", "attempts": 0, "last_error": None,
         "last_synced_at": at, "crm_updated_at": None},
        {"record_key": "13", "fields": fields, "crm_id": "c", "status": "failed", "attempts": 2, "last_error": "x",
         "last_synced_at": at, "crm_updated_at": later},
        {"record_key": "14", "fields": fields, "crm_id": None, "status": "synced", "attempts": 0, "last_error": None,
         "last_synced_at": later, "crm_updated_at": None},
    ]
    warehouse.fold_journal(force=True)
    assert folded_state(warehouse, "13") == {"crm_id": "c", "status": "failed", "last_error": "x"}
    assert folded_state(warehouse, "14") == {"crm_id": None, "status": "synced", "last_error": None}


@pytest.mark.parametrize("crm_id", [
    "755b3887-8f9a-4c1c-b223-69a724104c29", "00000000-0000-0000-0000-000000000000",
    "755B3887-8F9A-4C1C-B223-69A724104C29", "755b38878f9a4c1cb22369a724104c29", "{755b3887-8f9a-4c1c-b223-69a724104c29}",
    "urn:uuid:755b3887-8f9a-4c1c-b223-69a724104c29", "755b3887-8f9a-4c1c-b223-69a724104c2\n", "755b3887_8f9a-4c1c-b223-69a724104c29",
    "755b3887-8f9a-4c1c-b223-69a724104c2g", "", "x" * 36,
])
def test_a_twenty_id_is_kept_as_16_bytes_exactly_when_it_is_a_lowercase_uuid(crm_id: str) -> None:
    import uuid

    from truth_forge.warehouse.state_journal import _uuid_bytes

    try:
        parsed = uuid.UUID(crm_id)
        expected = parsed.bytes if str(parsed) == crm_id else None
    except ValueError:
        expected = None
    assert _uuid_bytes(crm_id) == expected


def test_a_push_waiting_for_answers_folds_only_where_a_fold_is_always_due(warehouse: Warehouse) -> None:
    """While a push waits for its last answers its saves so far are folded where a fold is a free scan
    (a share of 0: DuckDB's way); with a share (BigQuery's way) nothing is sent: the entries wait for it."""
    warehouse.journal_fold_share = 0.0
    save(warehouse, "7", crm_id="g", status="synced")
    warehouse.fold_journal_while_idle()
    assert warehouse.count_rows("crm_sync_journal") == 0
    assert folded_state(warehouse, "7") == {"crm_id": "g", "status": "synced", "last_error": None}
    before = warehouse.statements.statements
    warehouse.fold_journal_while_idle()  # nothing new saved: nothing sent
    assert warehouse.statements.statements == before
    warehouse.journal_fold_share = 0.1
    save(warehouse, "8", crm_id="h", status="synced")
    before = warehouse.statements.statements
    warehouse.fold_journal_while_idle()
    assert warehouse.statements.statements == before
    assert warehouse.count_rows("crm_sync_journal") == 1


def test_more_than_a_fold_window_saved_is_left_for_the_end_of_the_push(warehouse: Warehouse) -> None:
    """A fold while a push waits takes in at most a fold window of saves: a bigger one (a first push
    of a million records) would fill DuckDB's pool while the push still holds its rows; it waits for
    the run's fold, after the push has ended and freed them."""
    warehouse.journal_fold_share = 0.0
    warehouse.fold_window_rows = 2
    for key in ("1", "2", "3"):
        save(warehouse, key, crm_id=f"id-{key}", status="synced")
    warehouse.fold_journal_while_idle()
    assert warehouse.count_rows("crm_sync_journal") == 3  # three saves, a window of two: not folded now
    warehouse.fold_journal()
    assert warehouse.count_rows("crm_sync_journal") == 0
    save(warehouse, "4", crm_id="id-4", status="synced")
    warehouse.fold_journal_while_idle()  # counted from the last fold: one save, within the window
    assert warehouse.count_rows("crm_sync_journal") == 0
    assert folded_state(warehouse, "4") == {"crm_id": "id-4", "status": "synced", "last_error": None}


def test_a_record_known_to_have_no_state_is_saved_into_the_state_directly_where_folds_are_always_due(
        warehouse: Warehouse) -> None:
    """DuckDB (a fold always due): a synced save of a record this process found without state goes
    into crm_sync_state at once, as its fold would have put it (fields left out NULL), read back
    and noted clean like a folded one. Anything else is journalled: a record not looked up, a
    failed or pending save, a record with state, and every save where the journal waits for its
    share of the state (BigQuery)."""
    direct = warehouse.journal_fold_share <= 0 and warehouse.one_writing_process
    assert warehouse.read_sync_state("person", ["20", "21", "22", "23"]) == {}  # looked up: none has state
    uuid = "0b9d4c3e-52f1-4a7e-9d1b-2f6c8e0a7b11"
    save(warehouse, "20", crm_id=uuid, status="synced", last_error=None)
    save(warehouse, "21", crm_id="c21", status="failed", last_error="HTTP 500")
    save(warehouse, "22", crm_id="c22", status="pending", last_error=None)
    save(warehouse, "23", crm_id="c23", status="synced", last_error="synced without a value: phone")
    save(warehouse, "24", crm_id="c24", status="synced", last_error=None)  # never looked up
    assert warehouse.count_rows("crm_sync_state") == (2 if direct else 0)
    assert warehouse.count_rows("crm_sync_journal") == (3 if direct else 5)
    if direct:
        assert folded_state(warehouse, "20") == {"crm_id": uuid, "status": "synced", "last_error": None}
        rows, _ = warehouse._run("SELECT t.warehouse_hash AS h, t.base AS base FROM {crm_sync_state} AS t "
                                 "WHERE t.record_key = '20'", (), fetch=True)
        assert rows == [{"h": None, "base": None}]  # left out: NULL, as a fold of its one entry gives
    save(warehouse, "20", status="failed", last_error="HTTP 502")  # has state now: journalled
    assert warehouse.count_rows("crm_sync_journal") == (4 if direct else 6)
    got = warehouse.read_sync_state("person", ["20", "23"])
    assert (got["20"]["crm_id"], got["20"]["status"], got["23"]["last_error"]) == (
        uuid, "failed", "synced without a value: phone")
    warehouse.fold_journal()
    assert folded_state(warehouse, "20") == {"crm_id": uuid, "status": "failed", "last_error": "HTTP 502"}
    assert folded_state(warehouse, "23")["last_error"] == "synced without a value: phone"
    keys, ids = warehouse.settled_since_forget()
    assert keys["person"] == {"24"} and ids == {"c24"}  # 20 failed at last; 23 holds an error
    assert sorted(warehouse.retry_keys("person") or []) == ["20", "21", "22"]
    warehouse.fold_journal(forget=True)
    assert warehouse.read_sync_state("person", ["20"])["20"]["status"] == "failed"  # from the store alone


def test_a_record_saved_into_the_state_directly_has_its_open_errors_closed(warehouse: Warehouse) -> None:
    """A direct save notes as clean the records with open errors (read at the run's first direct
    save, and every error recorded since): their errors close at the run's end, like a folded
    record's. Records with no open error are not noted (a first push of a million would keep a
    million notes)."""
    warehouse.record_errors([{"run_id": "r0", "object_type": "person", "record_key": "30", "operation": "push",
                              "error_message": "HTTP 500"},
                             {"run_id": "r0", "object_type": "person", "crm_id": "c32", "operation": "pull",
                              "error_message": "could not apply"}])
    warehouse.fold_journal(forget=True)  # a run's start
    assert warehouse.read_sync_state("person", ["30", "31", "32", "33"]) == {}
    save(warehouse, "33", crm_id="c33", status="synced", last_error=None)  # reads the open errors
    warehouse.record_errors([{"run_id": "r1", "object_type": "person", "record_key": "31", "operation": "push",
                              "error_message": "HTTP 502"}])  # recorded after they were read
    save(warehouse, "30", crm_id="c30", status="synced", last_error=None)
    save(warehouse, "31", crm_id="c31", status="synced", last_error=None)
    save(warehouse, "32", crm_id="c32", status="synced", last_error=None)  # claimed: its error is by id
    direct = warehouse.journal_fold_share <= 0 and warehouse.one_writing_process
    assert warehouse.count_rows("crm_sync_journal") == (0 if direct else 4)
    assert warehouse.close_settled_errors(run_id="r1", run_succeeded=True) == 3
    assert warehouse.open_errors() == []
    keys, ids = warehouse.settled_since_forget()
    assert keys["person"] >= {"30", "31", "32"} and ids >= {"c30", "c31", "c32"}
    assert ("33" in keys["person"]) is not direct  # a fold notes every record; a direct save only those with errors
