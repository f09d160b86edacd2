"""A dataset made by an older truth-forge (no journal, no clustering) is migrated in place when opened:
the journal table is added, BigQuery's clustering is set through the API, nothing stored is lost,
and the first detection audits (no watermark yet) before later ones go incremental.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import duckdb
import pytest

from tests.fixtures.bqemulator import BQEMU_PROJECT
from truth_forge.warehouse import open_warehouse
from truth_forge.warehouse.detection import DetectionPolicy
from truth_forge.warehouse.duckdb import to_duckdb_sql
from truth_forge.warehouse.schema import TABLES

OLD_TABLES = [t for name, t in TABLES.items() if name != "crm_sync_journal"]
INSERT_OLD_ROWS = [
    "INSERT INTO {contacts} (contact_id, canonical_name, category_code, updated_at) "
    "VALUES (1, 'Ada Old', 'B', CURRENT_TIMESTAMP())",
    "INSERT INTO {crm_sync_state} (object_type, record_key, crm_id, warehouse_hash, status) "
    "VALUES ('person', '1', 'crm-1', 'stale-hash', 'synced')",
    "INSERT INTO {crm_sync_state} (object_type, record_key, crm_id, warehouse_hash, status) "
    "VALUES ('person', '2', 'crm-2', 'whatever', 'failed')",
]


def check_migrated(wh: Any) -> None:
    assert wh.count_rows("crm_sync_journal") == 0
    assert wh.read_sync_state("person", [1])["1"]["crm_id"] == "crm-1"  # kept
    assert wh.retry_keys("person") == ["2"]  # read from the old state once, then kept as a list
    first = wh.detect_changes("person", policy=DetectionPolicy(audit_every=None))
    assert first.mode == "audit" and [r["contact_id"] for b in first for r in b] == [1]
    first.commit()
    assert wh.detect_changes("person", policy=DetectionPolicy(audit_every=None)).mode == "incremental"


def test_an_old_duckdb_file_gets_the_journal_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "old.duckdb"
    con = duckdb.connect(str(path))
    for table in OLD_TABLES:
        con.execute(to_duckdb_sql(table.ddl(table.name)))
    for statement in INSERT_OLD_ROWS:
        con.execute(to_duckdb_sql(statement.format(contacts="contacts", crm_sync_state="crm_sync_state")))
    con.close()
    with open_warehouse(f"duckdb:///{path}") as wh:
        check_migrated(wh)


@pytest.mark.bigquery
def test_an_old_bigquery_dataset_is_clustered_through_the_api_and_keeps_its_rows(bigquery_client: Any) -> None:
    dataset = f"old_{uuid.uuid4().hex[:10]}"
    refs = {name: f"`{BQEMU_PROJECT}.{dataset}.{name}`" for name in ("contacts", "crm_sync_state")}
    bigquery_client.create_dataset(f"{BQEMU_PROJECT}.{dataset}")
    try:
        for table in OLD_TABLES:
            bigquery_client.query_and_wait(table.ddl(f"`{BQEMU_PROJECT}.{dataset}.{table.name}`"))
        for statement in INSERT_OLD_ROWS:
            bigquery_client.query_and_wait(statement.format(**refs))
        before = bigquery_client.get_table(f"{BQEMU_PROJECT}.{dataset}.contacts").clustering_fields
        assert not before  # the old layout: no clustering
        with open_warehouse(f"bigquery://{BQEMU_PROJECT}/{dataset}", client=bigquery_client) as wh:
            for name, table in TABLES.items():
                got = bigquery_client.get_table(f"{BQEMU_PROJECT}.{dataset}.{name}").clustering_fields
                assert list(got or []) == list(table.cluster_by), name
            assert wh.ensure_layout() == []  # done once: opening again changes nothing
            check_migrated(wh)
    finally:
        bigquery_client.delete_dataset(f"{BQEMU_PROJECT}.{dataset}", delete_contents=True, not_found_ok=True)
