"""Sample data: realistic, deterministic by seed, identical on both engines, refuses to clobber."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

import phonenumbers
import pytest
import typer
from typer.testing import CliRunner

from truth_forge.cli.main import explained
from truth_forge.warehouse import Warehouse, WarehouseConfigError, open_warehouse
from truth_forge.warehouse.cli import sample_data_command
from truth_forge.warehouse.sample_data import generate_sample_data

EMAIL = re.compile(r"^[^@\s]+@[a-z0-9.-]+\.[a-z]+$")
SUBCATEGORY = re.compile(r"^[A-HX][0-9]_[A-Z_]+$")


def all_contacts(wh: Warehouse, n: int) -> list[dict[str, Any]]:
    return wh.get_rows("person", range(1, n + 1))


def test_sample_data_is_realistic(warehouse: Warehouse) -> None:
    report = generate_sample_data(warehouse, contacts=300, businesses=30, seed=7)
    assert (report.contacts, report.businesses) == (300, 30)
    assert report.identifiers >= 300 and 0 < report.links < 300
    rows = all_contacts(warehouse, 300)
    assert len({r["canonical_name"] for r in rows}) > 100
    assert len({r["primary_email"] for r in rows}) == 300 and all(EMAIL.match(r["primary_email"]) for r in rows)
    phones = [p for r in rows for p in [r["primary_phone"], *r["additional_phones"]] if p]
    assert len(phones) > 200
    for phone in phones:
        assert phonenumbers.is_valid_number(phonenumbers.parse(phone)), phone
    assert {phonenumbers.region_code_for_number(phonenumbers.parse(p)) for p in phones} >= {"US", "GB", "DE", "FR"}
    categories = Counter(r["category_code"] for r in rows)
    assert set(categories) <= set("ABCDEFGHX") and len(categories) >= 8
    for r in rows:
        assert SUBCATEGORY.match(r["subcategory_code"]) and r["subcategory_code"][0] == r["category_code"]
        assert r["relationship_category"] in {"FAMILY", "FRIEND", "COLLEAGUE", "BUSINESS", "MENTOR", "COMMUNITY",
                                              "SERVICE", "ACQUAINTANCE", "OTHER"}
        assert isinstance(r["llm_context"]["interests"], list)
        assert isinstance(r["communication_stats"]["channels"][0]["count"], int)
        assert r["business_id"] is None or 1 <= r["business_id"] <= 30
    [biz] = warehouse.get_rows("company", [1])
    assert biz["business_name"] and biz["website"].startswith("https://") and biz["business_data"]["employees"] > 0
    # Everything is new to the sync.
    assert sum(len(b) for b in warehouse.changed_rows("person")) == 300


def test_same_seed_same_data_and_other_seed_other_data(tmp_path: Path) -> None:
    # On DuckDB only: the engines' agreement is test_identical_on_every_engine's job.
    warehouse = open_warehouse(f"duckdb:///{tmp_path / 'seeded.duckdb'}")
    generate_sample_data(warehouse, contacts=50, businesses=5, seed=1)
    first = warehouse.row_hashes("person", range(1, 51))
    with pytest.raises(WarehouseConfigError, match="already holds"):
        generate_sample_data(warehouse, contacts=50, businesses=5, seed=1)
    generate_sample_data(warehouse, contacts=50, businesses=5, seed=1, replace=True)
    assert warehouse.row_hashes("person", range(1, 51)) == first
    generate_sample_data(warehouse, contacts=50, businesses=5, seed=2, replace=True)
    assert warehouse.count_rows("contacts") == 50
    other = warehouse.row_hashes("person", range(1, 51))
    assert sum(first[k] != other[k] for k in first) > 40
    warehouse.close()


# The same seed gives the same rows on DuckDB and BigQuery (both engines run the same SQL):
# these hashes were produced by DuckDB and must match on every backend.
@pytest.mark.parametrize("seed", [809, 7000, 2**31 + 5])
def test_large_seeds_work(tmp_path: Path, seed: int) -> None:
    # The seed once multiplied as a 32-bit integer inside the engine and overflowed from 809 on.
    with open_warehouse(f"duckdb:///{tmp_path / 'seed.duckdb'}") as wh:
        wh.ensure_tables()
        assert generate_sample_data(wh, 5, 2, seed=seed).contacts == 5
        assert all(EMAIL.match(r["primary_email"]) for r in all_contacts(wh, 5))


def test_identical_on_every_engine(warehouse: Warehouse, tmp_path: Path) -> None:
    generate_sample_data(warehouse, contacts=20, businesses=3, seed=42)
    with open_warehouse(f"duckdb:///{tmp_path / 'reference.duckdb'}") as reference:
        generate_sample_data(reference, contacts=20, businesses=3, seed=42)
        expected = {k: {n: v for n, v in r.items() if n not in {"updated_at"}} for k, r in
                    ((r["contact_id"], r) for r in all_contacts(reference, 20))}
    got = {r["contact_id"]: {n: v for n, v in r.items() if n not in {"updated_at"}} for r in all_contacts(warehouse, 20)}
    assert got == expected


def test_cli_command(tmp_path: Path) -> None:
    app = typer.Typer()
    app.command("sample-data")(explained(sample_data_command))
    app.command("noop")(lambda: None)  # two commands, so Typer dispatches by name as truth-forge does
    url = f"duckdb:///{tmp_path / 'cli.duckdb'}"
    runner = CliRunner()
    result = runner.invoke(app, ["sample-data", "--contacts", "100", "--businesses", "10", "--warehouse-url", url])
    assert result.exit_code == 0, result.output
    assert "wrote 100 contacts" in result.output and "10 businesses" in result.output
    again = runner.invoke(app, ["sample-data", "--contacts", "5", "--businesses", "1", "--warehouse-url", url])
    assert again.exit_code == 2 and "--replace" in again.output  # could not run: the warehouse is not empty
    with open_warehouse(url) as wh:
        assert wh.count_rows("contacts") == 100
