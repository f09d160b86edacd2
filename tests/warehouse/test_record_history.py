"""The record history and conflicts tables on both engines: appended with one INSERT, read by record,
trimmed by day (DuckDB file, then BigQuery on bqemulator)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from truth_forge.warehouse import open_warehouse
from truth_forge.warehouse.errors import HistoryNotKept
from truth_forge.warehouse.schema import CRM_SYNC_HISTORY

UTC = dt.UTC


def change(key: str, field: str, applied_at: dt.datetime, **values: Any) -> dict[str, Any]:
    return {"object_type": "person", "record_key": key, "crm_id": f"crm-{key}", "field": field,
            "old_value": '"a"', "new_value": '"b"', "side": "twenty", "actor": "Ada Lovelace",
            "changed_at": applied_at - dt.timedelta(seconds=5), "applied_at": applied_at, "run_id": "r1",
            "via": "sync", **values}


def test_history_is_appended_in_one_statement_and_read_by_record_newest_first(warehouse: Any) -> None:
    now = dt.datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
    sent = []
    warehouse.statements.listeners.append(lambda statement: sent.append(statement.sql))
    written = warehouse.append_history([change("42", "category_code", now - dt.timedelta(hours=1)),
                                        change("42", "canonical_name", now, side="warehouse", actor="warehouse"),
                                        change("7", "category_code", now)])
    assert written == 3 and len(sent) == 1 and sent[0].lstrip().upper().startswith("INSERT")
    rows = warehouse.history_of("person", record_key=42)
    assert [(r["field"], r["side"], r["actor"]) for r in rows] == [
        ("canonical_name", "warehouse", "warehouse"), ("category_code", "twenty", "Ada Lovelace")]
    assert rows[0]["applied_at"] == now and rows[1]["changed_at"] == now - dt.timedelta(hours=1, seconds=5)
    assert [r["record_key"] for r in warehouse.history_of(None, crm_id="crm-7")] == ["7"]
    assert warehouse.history_of("company", record_key=42) == []


def test_a_single_row_is_stored_whole_though_every_value_it_holds_is_shared(warehouse: Any) -> None:
    # insert_select binds a value every row holds once; with one row that is every value, and the
    # row's count still has to come from a list (this INSERT once failed to parse on DuckDB).
    now = dt.datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
    assert warehouse.append_history([change("5", "alone", now)]) == 1
    [row] = warehouse.history_of("person", record_key=5)
    assert {k: row[k] for k in ("record_key", "crm_id", "field", "old_value", "new_value", "side", "actor",
                                "changed_at", "applied_at", "run_id", "via")} == {
        "record_key": "5", "crm_id": "crm-5", "field": "alone", "old_value": '"a"', "new_value": '"b"',
        "side": "twenty", "actor": "Ada Lovelace", "changed_at": now - dt.timedelta(seconds=5), "applied_at": now,
        "run_id": "r1", "via": "sync"}


def test_retention_deletes_whole_days_before_the_cutoff_once_a_day(warehouse: Any) -> None:
    now = dt.datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
    warehouse.append_history([change("1", "old", now - dt.timedelta(days=40)),
                              change("1", "edge", dt.datetime(2026, 11, 3, 0, 0, tzinfo=UTC)),
                              change("1", "recent", now - dt.timedelta(days=2))])
    warehouse.history_retention_days = 30
    assert warehouse.expire_history_daily(now=now) == 1  # before 2026-11-03 00:00 UTC: the "old" day only
    assert sorted(r["field"] for r in warehouse.history_of("person", record_key=1)) == ["edge", "recent"]
    warehouse.append_history([change("1", "late", now - dt.timedelta(days=50))])
    assert warehouse.expire_history_daily(now=now + dt.timedelta(hours=3)) is None  # done today
    assert warehouse.expire_history_daily(now=now + dt.timedelta(days=1)) == 2  # the next day: "late" and "edge"
    warehouse.history_retention_days = 0
    assert warehouse.expire_history_daily(now=now + dt.timedelta(days=90)) is None  # kept forever


def test_conflicts_and_their_review_are_appended_never_updated(warehouse: Any) -> None:
    [first, second] = warehouse.append_conflicts([
        {"object_type": "person", "record_key": "9", "crm_id": "c9", "field": "category_code",
         "base_value": '"C"', "warehouse_value": '"H"', "twenty_value": '"A"', "winner": "twenty", "run_id": "r1"},
        {"object_type": "company", "record_key": "3", "crm_id": "c3", "field": "industry",
         "base_value": "null", "warehouse_value": '"x"', "twenty_value": '"y"', "winner": "twenty", "run_id": "r1"}])
    assert {c["conflict_id"] for c in warehouse.conflicts(open_only=True)} == {first, second}
    warehouse.append_conflicts([{"conflict_id": first, "kind": "review", "object_type": "person", "record_key": "9",
                                 "field": "category_code", "winner": "warehouse", "chosen_value": '"H"',
                                 "actor": "Grace"}])
    assert [c["conflict_id"] for c in warehouse.conflicts(open_only=True)] == [second]
    [reviewed] = warehouse.conflicts(conflict_id=first[:8])
    assert (reviewed["taken"], reviewed["chosen_value"], reviewed["resolved_by"]) == ("warehouse", '"H"', "Grace")
    assert reviewed["resolved_at"] is not None and reviewed["twenty_value"] == '"A"'
    assert warehouse.count_rows("crm_sync_conflicts") == 3


def test_the_history_table_is_partitioned_by_day_and_clustered_by_record_in_bigquery_ddl() -> None:
    ddl = CRM_SYNC_HISTORY.ddl("t", clustered=True)
    assert ddl.endswith("\nPARTITION BY DATE(applied_at)\nCLUSTER BY object_type, record_key")
    assert "PARTITION BY" not in CRM_SYNC_HISTORY.ddl("t")  # DuckDB has no such clause


def test_a_warehouse_without_the_tables_says_it_keeps_no_history(tmp_path: Path) -> None:
    """As a warehouse made by an older truth-forge looks, opened read-only (nothing creates the tables).
    DuckDB only: bqemulator answers a query of a deleted table with no rows (BigQuery: 404 Not found)."""
    url = f"duckdb:///{tmp_path / 'old.duckdb'}"
    with open_warehouse(url) as wh:
        wh._run("DROP TABLE {crm_sync_history}", ())
        wh._run("DROP TABLE {crm_sync_conflicts}", ())
    with open_warehouse(url, create=False, read_only=True) as wh:
        with pytest.raises(HistoryNotKept, match="crm_sync_history"):
            wh.history_of("person", record_key=1)
        with pytest.raises(HistoryNotKept, match="crm_sync_conflicts"):
            wh.conflicts()
