"""A pull of many Twenty edits merges them into the warehouse together: statements per run, not per
page (on BigQuery every MERGE into `contacts` bills the whole table)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from tests.fixtures.sandbox import as_person
from tests.sync.test_sync_sandbox import SCHEMA, people
from truth_forge.sync.runner import run_sync
from truth_forge.twenty import TwentyClient
from truth_forge.warehouse import open_warehouse
from truth_forge.warehouse.sample_data import generate_sample_data


def _merges_of_a_pull_of_450_edits(sandbox: Any, client: TwentyClient, tmp_path: Path,
                                    merge_records: int | None = None) -> int:
    """A first sync of 450 contacts, every person renamed in Twenty (three pages of the pull), then
    a pull: how many MERGEs into contacts it sent, every edit checked to have arrived."""
    with open_warehouse(f"duckdb:///{tmp_path / 'w.duckdb'}") as wh:
        assert wh.pull_merge_records == 2_000
        generate_sample_data(wh, 450, 5, seed=11)
        assert run_sync(wh, client, SCHEMA).status == "succeeded"
        with httpx.Client(base_url=sandbox.base_url, headers=as_person(sandbox), timeout=30) as http:
            for n, person in enumerate(people(client)):
                http.patch(f"/rest/people/{person['id']}",
                           json={"name": {"firstName": f"Edited{n}", "lastName": "Twice"}}).raise_for_status()
        if merge_records is not None:
            wh.pull_merge_records = merge_records
        sent: list[str] = []
        wh.statements.listeners.append(lambda s: sent.append(" ".join(s.sql.split())))
        result = run_sync(wh, client, SCHEMA, direction="pull")
        assert result.counts["pull_person"]["updated"] == 450
        assert {r["canonical_name"].split()[-1] for r in wh.get_rows("person", range(1, 451))} == {"Twice"}
        return len([s for s in sent if s.startswith("MERGE INTO") and "contacts" in s.split(" USING")[0]])


def test_edits_of_three_pages_are_merged_by_one_statement_per_table(
        sandbox: Any, client: TwentyClient, tmp_path: Path) -> None:
    assert _merges_of_a_pull_of_450_edits(sandbox, client, tmp_path) == 1


def test_the_warehouse_says_how_many_pulled_records_one_merge_takes(
        sandbox: Any, client: TwentyClient, tmp_path: Path) -> None:
    """`pull_merge_records` bounds a merge: 450 edits at 200 a merge are three."""
    assert _merges_of_a_pull_of_450_edits(sandbox, client, tmp_path, merge_records=200) == 3
