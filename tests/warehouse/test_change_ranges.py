"""Change detection in key ranges: the same rows, in the same order, as the one whole-table query
it replaced, on every engine; and a sync writing while it iterates never skips or repeats a row.

Ranges are forced down to a few rows (`change_range_rows`), so every test crosses many range
boundaries; the keys have gaps, negatives and a very large one.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from tests.warehouse.test_contract import contact, mark_synced
from truth_forge.warehouse import Warehouse, WarehouseConfigError
from truth_forge.warehouse import base as warehouse_base
from truth_forge.warehouse import queries as q
from truth_forge.warehouse.base import Scalar
from truth_forge.warehouse.schema import STRING

UTC = dt.UTC
# Gaps everywhere: a negative key, 0, runs, holes of one and of thousands, a key near 2**53.
KEYS = [-7, 0, 1, 2, 3, 5, 8, 13, 14, 15, 16, 100, 101, 5000, 5001, 5003, 2**53 - 1]
BUSINESS_KEYS = [1, 2, 4, 9, 10, 11, 500, 501, 9999]


def old_changed_select(object_type: str) -> str:
    """The single whole-table query change detection was before key ranges (the oracle)."""
    ctes, cols, key = (
        (q.contact_view_ctes("all"), q.CONTACT_VIEW_COLUMNS, "contact_id") if object_type == "person"
        else (q.business_view_ctes("all"), q.BUSINESS_VIEW_COLUMNS, "business_id"))
    return f"""WITH {ctes}
SELECT {q._output_columns('h', cols)}, h.updated_at AS updated_at, h.row_hash AS row_hash, h.copies AS copies,
  s.crm_id AS crm_id, s.status AS sync_status, s.warehouse_hash AS synced_hash
FROM h
LEFT JOIN {{crm_sync_state}} AS s
  ON s.object_type = @object_type AND s.record_key = CAST(h.{key} AS STRING)
WHERE (s.record_key IS NULL AND h.deleted_at IS NULL)
   OR (s.record_key IS NOT NULL AND (
        s.warehouse_hash IS NULL OR s.warehouse_hash != h.row_hash
        OR s.status IN ('failed', 'pending')))
ORDER BY h.{key}"""


def oracle(wh: Warehouse, object_type: str) -> list[dict[str, Any]]:
    wh.fold_journal(force=True)  # the oracle reads crm_sync_state itself, without the journal's overlay
    rows, _ = wh._run(old_changed_select(object_type), (Scalar("object_type", STRING, object_type),), fetch=True)
    out = [warehouse_base._view_row(r) for r in rows]
    # A person with a company also carries that company's sync state (the push links by its Twenty id).
    for row in out:
        if object_type == "person" and row["business_id"] is not None:
            state = wh.read_sync_state("company", [row["business_id"]]).get(str(row["business_id"]))
            row["company_state"] = state and {"crm_id": state["crm_id"], "status": state["status"]}
    return out


def streamed(wh: Warehouse, object_type: str, batch_size: int = 500) -> list[dict[str, Any]]:
    return [r for batch in wh.changed_rows(object_type, batch_size=batch_size) for r in batch]  # type: ignore[arg-type]


def key_of(object_type: str) -> str:
    return "contact_id" if object_type == "person" else "business_id"


@pytest.fixture
def mixed(warehouse: Warehouse) -> Warehouse:
    """Contacts and businesses in every state change detection tells apart."""
    warehouse.upsert_businesses([{"business_id": b, "business_name": f"Biz {b}", "industry": "Software"}
                                 for b in BUSINESS_KEYS])
    warehouse.upsert_contacts([
        contact(k, business_id=BUSINESS_KEYS[i % len(BUSINESS_KEYS)] if i % 3 else None,
                additional_emails=[f"x{k}@b.example", f"x{k}@a.example"] if i % 2 else [],
                additional_phones=["+442071838750"] if i % 4 == 1 else [])
        for i, k in enumerate(KEYS)
    ])
    # Synced and unchanged, then edited, failed, pending, deleted after syncing, deleted never synced.
    mark_synced(warehouse, "person", KEYS[::2])
    mark_synced(warehouse, "company", BUSINESS_KEYS[::2])
    warehouse.upsert_contacts([{"contact_id": 0, "canonical_name": "Edited"}])
    warehouse.upsert_contacts([{"contact_id": 5000, "category_code": "C"}])
    warehouse.upsert_businesses([{"business_id": 10, "industry": "Energy"}])
    warehouse.upsert_sync_state([
        {"object_type": "person", "record_key": "13", "status": "failed", "last_error": "HTTP 500"},
        {"object_type": "person", "record_key": "101", "status": "pending", "last_error": None},
        {"object_type": "company", "record_key": "500", "status": "failed", "last_error": "HTTP 502"},
    ])
    warehouse.soft_delete("person", [3, 8, 16])  # synced: the CRM must delete them
    warehouse.soft_delete("person", [2, 5003])  # never synced: nothing to delete in the CRM
    warehouse.soft_delete("company", [11])
    return warehouse


@pytest.mark.parametrize("object_type", ["person", "company"])
@pytest.mark.parametrize("range_rows", [1, 3, 50_000])
def test_ranges_return_exactly_what_the_single_query_returned(mixed: Warehouse, object_type: str,
                                                              range_rows: int) -> None:
    expected = oracle(mixed, object_type)
    assert len(expected) >= 5  # the fixture really has changed, unchanged and skipped rows
    mixed.change_range_rows = range_rows
    assert streamed(mixed, object_type) == expected


@pytest.mark.parametrize("batch_size", [1, 2, 4, 500])
def test_batches_are_full_across_range_boundaries(mixed: Warehouse, batch_size: int) -> None:
    expected = oracle(mixed, "person")
    mixed.change_range_rows = 3
    batches = list(mixed.changed_rows("person", batch_size=batch_size))
    assert [r for b in batches for r in b] == expected
    # Every list is full but the last: the consumer's write batches are not cut at range edges.
    assert all(len(b) == batch_size for b in batches[:-1]) and 1 <= len(batches[-1]) <= batch_size


def test_every_range_is_bounded_and_together_they_cover_every_key(mixed: Warehouse) -> None:
    mixed.change_range_rows = 4
    ranges = mixed._key_ranges("person")
    assert ranges[0][0] == -(2**63) and ranges[-1][1] == 2**63 - 1
    assert all(hi + 1 == next_lo for (_, hi), (next_lo, _) in zip(ranges, ranges[1:]))
    per_range = [sum(lo <= k <= hi for k in KEYS) for lo, hi in ranges]
    assert per_range == [4, 4, 4, 4, 1]  # 17 keys in ranges of 4; the rest in the open last one


def test_the_sync_writing_state_while_it_iterates_never_repeats_or_skips_a_row(mixed: Warehouse) -> None:
    expected = oracle(mixed, "person")
    mixed.change_range_rows = 2
    seen: list[int] = []
    for batch in mixed.changed_rows("person", batch_size=1):
        for row in batch:
            seen.append(row["contact_id"])
            # As the push does after each write; "failed" keeps the row changed, so a range read
            # again would bring it back.
            status = "failed" if row["contact_id"] % 2 else "synced"
            mixed.upsert_sync_state([{"object_type": "person", "record_key": str(row["contact_id"]),
                                      "crm_id": f"new-{row['contact_id']}", "status": status,
                                      "warehouse_hash": row["row_hash"]}])
    assert seen == [r["contact_id"] for r in expected]
    # And the writes landed: only the failed ones are changed now.
    assert [r["contact_id"] for r in streamed(mixed, "person")] == [k for k in seen if k % 2]


def test_edits_during_iteration_are_seen_by_ranges_not_read_yet_and_never_repeat_a_row(mixed: Warehouse) -> None:
    mixed.change_range_rows = 3
    before = [r["contact_id"] for r in oracle(mixed, "person")]
    stream = mixed.changed_rows("person", batch_size=1)
    [[first]] = [next(stream)]
    assert first["contact_id"] == before[0]
    mark_synced(mixed, "person", [7_000])  # a key no contact has: harmless
    # Behind the cursor: an edit of the row just read, a new contact in the first range.
    mixed.upsert_contacts([{"contact_id": first["contact_id"], "canonical_name": "Edited again"}])
    mixed.upsert_contacts([contact(-100)])
    # Ahead of it: an edit, a soft delete of a never-synced row, a soft delete of a synced row,
    # a new contact in a gap, one past the largest key, and a synced row now unchanged.
    mixed.upsert_contacts([{"contact_id": 14, "canonical_name": "Fourteen"}])
    mixed.upsert_contacts([contact(4000), contact(2**60)])
    mixed.soft_delete("person", [15, 5001])
    mark_synced(mixed, "person", [5000])
    rest = [r for batch in stream for r in batch]
    got = [first["contact_id"]] + [r["contact_id"] for r in rest]
    assert len(got) == len(set(got)), got  # no row twice
    assert got == sorted(got)
    after = {r["contact_id"]: r for r in oracle(mixed, "person")}
    # Every row ahead of the first is what a fresh single query now says; -100 is behind: next run.
    assert [r["contact_id"] for r in rest] == [k for k in after if k > first["contact_id"]]
    assert rest == [after[r["contact_id"]] for r in rest]
    by_key = {r["contact_id"]: r for r in rest}
    assert by_key[14]["canonical_name"] == "Fourteen" and 4000 in by_key and 2**60 in by_key
    assert 15 not in by_key and by_key[5001]["deleted_at"] is not None and 5000 not in by_key
    assert -100 not in by_key and -100 in after


def test_a_stream_closed_early_leaves_the_warehouse_usable(mixed: Warehouse) -> None:
    mixed.change_range_rows = 2
    stream = mixed.changed_rows("person", batch_size=1)
    next(stream)
    stream.close()  # as the push does when it stops early
    mixed.checkpoint()  # DuckDB refuses to checkpoint while a read is still open
    mixed.upsert_contacts([{"contact_id": 1, "canonical_name": "After close"}])
    assert streamed(mixed, "person") == oracle(mixed, "person")


def test_an_empty_warehouse_yields_nothing(warehouse: Warehouse) -> None:
    warehouse.change_range_rows = 1
    assert list(warehouse.changed_rows("person")) == [] and list(warehouse.changed_rows("company")) == []


def test_range_rows_come_from_the_url(warehouse_backend: tuple[str, str, object]) -> None:
    from truth_forge.warehouse import open_warehouse

    _name, url, client = warehouse_backend
    sep = "&" if "?" in url else "?"
    with open_warehouse(f"{url}{sep}change_range_rows=3", client=client) as wh:
        assert wh.change_range_rows == 3
        wh.upsert_contacts([contact(k) for k in KEYS])
        assert len(wh._key_ranges("person")) == len(KEYS) // 3 + 1
        assert [r["contact_id"] for r in streamed(wh, "person")] == sorted(KEYS)
    for bad in ("0", "-1", "many"):
        with pytest.raises(WarehouseConfigError, match="change_range_rows"):
            open_warehouse(f"{url}{sep}change_range_rows={bad}", client=client)
