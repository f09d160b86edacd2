"""The BigQuery on-demand cost model: its rules as a table, sizes measured on a real engine, and
statements recorded from the BigQuery engine (on bqemulator) priced without error."""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from truth_forge.warehouse import queries as q
from truth_forge.warehouse.accounting import MIB, Statement
from truth_forge.warehouse.base import KeySet, RowSet, Scalar
from truth_forge.warehouse.bigquery import render
from truth_forge.warehouse.cost_model import (
    PRICE_PER_TIB_USD,
    TIB,
    CostModel,
    SampleProfile,
    TableSize,
    TableSizes,
    measure_table,
    physical_names,
    shape_of,
    sizes_for_contacts,
    value_bytes,
)
from truth_forge.warehouse.schema import BOOL, INT64, JSON, STRING, TABLES, TIMESTAMP

ROWS = 1_000_000
# Average bytes per row of every column: 10 bytes for each, so a column of ROWS rows is 10 MB.
EACH = 10.0


def _sizes(clustering: dict[str, tuple[str, ...]] | None = None, changed: float = 0.0,
           tiny: tuple[str, ...] = ("crm_sync_kv", "crm_sync_leases")) -> TableSizes:
    tables = {name: TableSize(1000 if name in tiny else ROWS, {c: EACH for c in t.column_names})
              for name, t in TABLES.items()}
    return TableSizes(tables=tables, clustering=clustering or {}, changed_fraction=changed,
                      shares={("crm_sync_state", "object_type"): {"person": 0.5, "company": 0.5}},
                      block_bytes=BLOCK)


def _sql(template: str, *binds: Any) -> str:
    """A template rendered as the BigQuery engine renders it (`project.dataset.table` refs)."""
    return render(template, {name: f"`proj.ds.{name}`" for name in TABLES}, binds)


def _price(template: str, *binds: Any, sizes: TableSizes | None = None) -> Any:
    return CostModel(sizes or _sizes()).price(Statement(_sql(template, *binds), binds))


COLUMN = ROWS * EACH  # bytes of one whole column
BLOCK = 10 * MIB  # the tests' block size


def blocks(table: str) -> int:
    """Blocks of a test table: all its columns, whole, in blocks of 10 MiB."""
    return -(-int(len(TABLES[table].columns) * COLUMN) // BLOCK)

KEYS = KeySet("keys", INT64, [3, 70_000, 912_345])
CLUSTERED = {"contact_identifiers": ("contact_id",), "crm_sync_state": ("object_type", "record_key"),
             "contacts": ("updated_at", "contact_id")}


# (rule, template, binds, clustering, expected bytes processed)
RULES: list[tuple[str, str, tuple[Any, ...], dict[str, tuple[str, ...]], float]] = [
    ("a SELECT of two columns bills those two columns, whole",
     "SELECT c.contact_id, c.canonical_name FROM {contacts} AS c", (), {}, 2 * COLUMN),
    ("unqualified columns are found in the table of their SELECT",
     "SELECT contact_id FROM {contacts} WHERE deleted_at IS NULL", (), {}, 2 * COLUMN),
    ("SELECT * bills every column",
     "SELECT * FROM {contacts}", (), {}, len(TABLES["contacts"].columns) * COLUMN),
    ("COUNT(*) reads no column",
     "SELECT COUNT(*) AS n FROM {contacts}", (), {}, 0),
    ("a constant filter on an unclustered table prunes nothing",
     "SELECT i.value FROM {contact_identifiers} AS i WHERE i.contact_id IN {keys_keys}", (KEYS,), {},
     2 * COLUMN),
    ("a key list on the first clustering column reads one block per key",
     "SELECT i.value FROM {contact_identifiers} AS i WHERE i.contact_id IN {keys_keys}", (KEYS,), CLUSTERED,
     2 * COLUMN * 3 / blocks("contact_identifiers")),
    ("a CAST of the clustering column does not prune",
     "SELECT i.value FROM {contact_identifiers} AS i WHERE CAST(i.contact_id AS STRING) IN ('3', '4')", (),
     CLUSTERED, 2 * COLUMN),
    ("a subquery filter does not prune",
     "SELECT i.value FROM {contact_identifiers} AS i WHERE i.contact_id IN "
     "(SELECT c.contact_id FROM {contacts} AS c WHERE c.category_code = 'A')", (), CLUSTERED,
     2 * COLUMN + 2 * COLUMN),
    ("the second clustering column alone does not prune",
     "SELECT c.canonical_name FROM {contacts} AS c WHERE c.contact_id IN {keys_keys}", (KEYS,), CLUSTERED,
     2 * COLUMN),
    ("a time range on the first clustering column reads the changed share plus its edge block",
     "SELECT c.contact_id FROM {contacts} AS c WHERE c.updated_at >= @since",
     (Scalar("since", TIMESTAMP, None),), CLUSTERED,
     2 * COLUMN * (math.ceil(0.05 * blocks("contacts")) + 1) / blocks("contacts")),
    ("a low-cardinality first column narrows to its value's share, then keys prune within it",
     "SELECT s.crm_id FROM {crm_sync_state} AS s WHERE s.object_type = @object_type AND s.record_key IN {keys_keys}",
     (Scalar("object_type", STRING, "person"), KeySet("keys", STRING, ["1", "2"])), CLUSTERED,
     3 * COLUMN * 2 / blocks("crm_sync_state")),
    ("INSERT ... VALUES reads no table", "INSERT INTO {crm_sync_kv} (key, value) VALUES ('a', 'b')", (), {}, 0),
    ("INSERT from UNNEST of a parameter reads no table",
     "INSERT INTO {crm_sync_kv} (key, value) SELECT r.key AS key, r.value AS value FROM {rows_rows} AS r",
     (RowSet("rows", [("key", STRING), ("value", STRING)], [{"key": "a", "value": "b"}]),), {}, 0),
    ("INSERT ... SELECT bills what the SELECT reads",
     "INSERT INTO {crm_sync_kv} (key, value) SELECT CAST(c.contact_id AS STRING) AS key, c.canonical_name AS value "
     "FROM {contacts} AS c", (), {}, 2 * COLUMN),
    ("UPDATE bills the columns it reads plus the whole target",
     "UPDATE {contacts} AS t SET canonical_name = 'x' WHERE t.contact_id = 1", (), {},
     COLUMN + len(TABLES["contacts"].columns) * COLUMN),
    ("DELETE bills the columns it reads plus the whole target, pruned or not",
     "DELETE FROM {contact_identifiers} AS t WHERE t.contact_id IN {keys_keys}", (KEYS,), CLUSTERED,
     COLUMN * 3 / blocks("contact_identifiers") + 6 * COLUMN),
    ("an INSERT-only MERGE bills its reads only",
     "MERGE {contacts} AS t USING (SELECT r.contact_id AS contact_id FROM {rows_rows} AS r) AS s "
     "ON t.contact_id = s.contact_id WHEN NOT MATCHED THEN INSERT (contact_id) VALUES (s.contact_id)",
     (RowSet("rows", [("contact_id", INT64)], [{"contact_id": 1}]),), {}, COLUMN),
    ("a MERGE whose only other clause is NOT MATCHED BY SOURCE ... DELETE bills the whole target",
     q.identifiers_merge(["email"]),
     (RowSet("ids", [("contact_id", INT64)], []), KeySet("batch", INT64, [1])), {},
     3 * COLUMN + 6 * COLUMN),  # q: contact_id, kind, value (ON, WHEN); SET and INSERT lists are written
    ("DDL reads nothing", "CREATE TABLE IF NOT EXISTS {crm_sync_kv} (key STRING)", (), {}, 0),
]


@pytest.mark.parametrize(("rule", "template", "binds", "clustering", "expected"), RULES, ids=[r[0] for r in RULES])
def test_the_billing_rules(rule: str, template: str, binds: tuple[Any, ...], clustering: dict[str, tuple[str, ...]],
                           expected: float) -> None:
    cost = _price(template, *binds, sizes=_sizes(clustering, changed=0.05))
    assert cost.bytes_processed == pytest.approx(expected, rel=1e-6, abs=1), rule


def test_a_merge_with_an_update_clause_bills_reads_plus_the_whole_target() -> None:
    rows = RowSet("rows", [("contact_id", INT64), ("canonical_name", STRING)], [{"contact_id": 1, "canonical_name": "A"}])
    cost = _price(q.upsert_merge("contacts", ["contact_id"], [("contact_id", INT64), ("canonical_name", STRING)],
                                 touch_updated_at=True), rows)
    assert cost.kind == "MERGE" and cost.target == "contacts"
    # q: contact_id (the ON clause); t: all 13 columns, whatever the SET list names.
    assert cost.bytes_processed == pytest.approx(COLUMN + 13 * COLUMN, abs=1)


def test_the_identifier_merge_deletes_so_it_bills_the_whole_target() -> None:
    cost = _price(q.identifiers_merge(["email"]), RowSet("ids", [("contact_id", INT64)], []), KeySet("batch", INT64, [1]))
    assert cost.kind == "MERGE" and cost.target == "contact_identifiers"
    assert {r.table: set(r.columns) for r in cost.reads} == {"contact_identifiers": {"contact_id", "kind", "value"}}


def test_ten_mb_minimum_per_table_and_per_query_and_none_without_a_table() -> None:
    one_tiny = _price("SELECT k.value FROM {crm_sync_kv} AS k WHERE k.key = 'x'")
    assert one_tiny.bytes_processed == 2 * 1000 * EACH and one_tiny.bytes_billed == 10 * MIB
    two_tiny = _price("SELECT k.value, l.owner FROM {crm_sync_kv} AS k CROSS JOIN {crm_sync_leases} AS l")
    assert two_tiny.bytes_billed == 20 * MIB
    assert _price("SELECT 1 AS one").bytes_billed == 0
    big = _price("SELECT c.canonical_name FROM {contacts} AS c")
    assert big.bytes_billed == -(-int(COLUMN) // MIB) * MIB  # rounded up to the MB
    assert big.dollars == pytest.approx(big.bytes_billed / TIB * PRICE_PER_TIB_USD)


def test_data_sizes_follow_bigquerys_rules() -> None:
    assert value_bytes(INT64, 7) == 8 and value_bytes(TIMESTAMP, "2026-01-01") == 8
    assert value_bytes(BOOL, True) == 1
    assert value_bytes(STRING, "abc") == 5 and value_bytes(STRING, "é") == 4
    assert value_bytes(JSON, {"a": 1}) == len('{"a":1}') and value_bytes(JSON, '[1, 2]') == 6
    assert all(value_bytes(t, None) == 0 for t in (INT64, BOOL, STRING, JSON, TIMESTAMP))


def test_physical_names_are_mapped_back_to_logical_ones() -> None:
    class Renamed:
        from truth_forge.warehouse.schema import TableNames
        tables = TableNames({"contacts": "people_v2"})

    names = physical_names(Renamed())
    model = CostModel(_sizes(), names)
    cost = model.price("SELECT p.canonical_name FROM `proj.ds.people_v2` AS p")
    assert [r.table for r in cost.reads] == ["contacts"] and cost.bytes_processed == COLUMN
    assert shape_of("SELECT 1 FROM `p.d1.people_v2` LIMIT 60", names) == shape_of(
        "SELECT 7 FROM `p.d2.people_v2` LIMIT 200", names) == "SELECT N FROM {contacts} LIMIT N"


def test_change_detection_today_reads_whole_tables_every_range() -> None:
    binds = (Scalar("object_type", STRING, "person"), Scalar("range_lo", INT64, 1), Scalar("range_hi", INT64, 10))
    cost = _price(q.changed_select("person"), *binds, sizes=_sizes(CLUSTERED))
    tables = {r.table: r for r in cost.reads}
    assert set(tables) == {"contacts", "contact_identifiers", "contact_businesses", "crm_sync_state"}
    # A key range prunes nothing on tables clustered by time; SAFE_CAST(record_key) prunes nothing
    # either: the state is cut to the object type's share only.
    assert [tables[t].fraction for t in ("contacts", "contact_identifiers", "contact_businesses")] == [1.0] * 3
    assert tables["crm_sync_state"].fraction == pytest.approx(0.5, abs=0.1)
    assert "base" not in tables["crm_sync_state"].columns
    assert set(TABLES["contacts"].column_names) - tables["contacts"].columns == set()


def test_sizes_for_contacts_scale_the_contact_json_to_three_kb() -> None:
    profile = SampleProfile(
        column_bytes={"contacts": {"contact_id": 8, "llm_context": 100, "ai_insights": 50},
                      "crm_sync_state": {"record_key": 6, "base": 400}},
        rows_per_contact={"businesses": 0.05, "contact_identifiers": 2.2},
        base_bytes={"person": 420, "company": 200})
    sizes = sizes_for_contacts(1_000_000, profile)
    contacts = sizes.tables["contacts"]
    assert contacts.rows == 1_000_000 and sizes.tables["contact_identifiers"].rows == 2_200_000
    assert contacts.column_bytes["llm_context"] + contacts.column_bytes["ai_insights"] == pytest.approx(3072)
    assert contacts.column_bytes["llm_context"] == pytest.approx(2048)
    state = sizes.tables["crm_sync_state"]
    assert state.rows == 1_050_000
    assert state.column_bytes["base"] == pytest.approx((1_000_000 * (420 + 3072 - 150) + 50_000 * 200) / 1_050_000)


# --- on real engines ---------------------------------------------------------------------------


def test_column_sizes_are_measured_by_bigquerys_rules_on_a_real_engine(tmp_path: Any) -> None:
    from truth_forge.warehouse import open_warehouse

    with open_warehouse(f"duckdb:///{tmp_path / 'sizes.duckdb'}") as wh:
        wh.upsert_contacts([
            {"contact_id": 1, "canonical_name": "Ana", "llm_context": {"a": 1}, "category_code": None},
            {"contact_id": 2, "canonical_name": "Zoë", "llm_context": None, "category_code": None},
        ])
        n_rows, row = measure_table(wh, "contacts")
    assert n_rows == 2
    assert row["contact_id"] == 8 and row["category_code"] == 0
    assert row["canonical_name"] == pytest.approx(((2 + 3) + (2 + 4)) / 2)
    assert row["llm_context"] == pytest.approx(len('{"a":1}') / 2)


@pytest.fixture
def bigquery_warehouse(bigquery_client: Any) -> Iterator[Any]:
    from truth_forge.warehouse.bigquery import BigQueryWarehouse

    dataset = f"t_{uuid.uuid4().hex[:12]}"
    wh = BigQueryWarehouse(bigquery_client.project, dataset, client=bigquery_client)
    try:
        yield wh
    finally:
        wh.close()
        bigquery_client.delete_dataset(f"{bigquery_client.project}.{dataset}", delete_contents=True, not_found_ok=True)


@pytest.mark.bigquery
def test_statements_recorded_from_the_bigquery_engine_are_priced(bigquery_warehouse: Any) -> None:
    from truth_forge.warehouse.sample_data import generate_sample_data

    wh = bigquery_warehouse
    recorded: list[Statement] = []
    wh.statements.listeners.append(recorded.append)
    generate_sample_data(wh, 30, 3, seed=5)
    wh.upsert_contacts([{"contact_id": 1, "canonical_name": "Ada Changed"}])
    list(wh.changed_rows("person", batch_size=10))
    wh.read_sync_state("person", ["1", "2"])
    profile = SampleProfile(column_bytes={"contacts": {"contact_id": 8, "llm_context": 300}},
                            rows_per_contact={"businesses": 0.05})
    model = CostModel(sizes_for_contacts(1_000_000, profile), physical_names(wh))
    kinds = set()
    assert len(recorded) > 5
    for statement in recorded:
        assert "`" in statement.sql  # the BigQuery engine's rendering, not a template
        cost = model.price(statement)
        kinds.add(cost.kind)
        assert cost.bytes_billed >= 0
    assert {"SELECT", "INSERT", "MERGE"} <= kinds
    changed = [model.price(s) for s in recorded if "row_hash" in s.sql and "range_lo" in s.sql]
    assert changed and all({r.table for r in c.reads} >= {"contacts", "crm_sync_state"} for c in changed)


def test_an_alias_reused_in_another_subquery_names_its_own_table() -> None:
    cost = _price("SELECT t.canonical_name FROM {contacts} AS t WHERE t.contact_id IN "
                  "(SELECT t.contact_id FROM {contact_identifiers} AS t WHERE t.kind = 'email')")
    read = {r.table: set(r.columns) for r in cost.reads}
    assert read == {"contacts": {"canonical_name", "contact_id"}, "contact_identifiers": {"contact_id", "kind"}}
