"""What a run billed: every statement's job statistics summed into the run's row, shown by `runs`.

BigQuery through the official client against bqemulator, which reports 0 bytes for every job: the
figure is the engine's own, so a run on the emulator bills "0 B", and one on DuckDB shows no column.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.fixtures.bqemulator import BQEMU_PROJECT
from tests.ops.conftest import Cli, clean_env
from truth_forge.core.crm_schema import CrmSchema, setup_schema
from truth_forge.twenty import TwentyClient
from truth_forge.warehouse import open_warehouse
from truth_forge.warehouse.accounting import MIB, billed_from_processed, format_bytes
from truth_forge.warehouse.sample_data import generate_sample_data


@pytest.mark.parametrize(("processed", "billed"), [
    (None, None), (0, 0), (1, 10 * MIB), (10 * MIB, 10 * MIB), (10 * MIB + 1, 11 * MIB), (3 * 1024 * MIB, 3 * 1024 * MIB),
])
def test_billed_bytes_follow_the_on_demand_rounding(processed: int | None, billed: int | None) -> None:
    assert billed_from_processed(processed) == billed


@pytest.mark.parametrize(("n", "shown"), [
    (None, ""), (0, "0 B"), (1023, "1023 B"), (10 * MIB, "10.0 MB"), (int(2.5 * 1024**3), "2.5 GB"),
])
def test_bytes_read_as_people_read_them(n: int | None, shown: str) -> None:
    assert format_bytes(n) == shown


@pytest.fixture
def bigquery_cli(sandbox: Any, bqemulator_endpoint: str, bigquery_client: Any, tmp_path: Any) -> Iterator[Cli]:
    dataset = f"bill_{uuid.uuid4().hex[:10]}"
    url = f"bigquery://{BQEMU_PROJECT}/{dataset}?endpoint={bqemulator_endpoint}"
    with open_warehouse(url) as wh:
        generate_sample_data(wh, 12, 3, seed=4)
    with TwentyClient(sandbox.base_url, sandbox.api_key, requests_per_minute=100_000, timeout=5) as api:
        setup_schema(api, CrmSchema.load())
    yield Cli(clean_env(TWENTY_API_KEY=sandbox.api_key, TWENTY_BASE_URL=sandbox.base_url,
                        TRUTH_FORGE_WAREHOUSE_URL=url, TRUTH_FORGE_TWENTY_REQUESTS_PER_MINUTE="100000"), tmp_path)
    bigquery_client.delete_dataset(f"{BQEMU_PROJECT}.{dataset}", delete_contents=True, not_found_ok=True)


@pytest.mark.bigquery
def test_a_bigquery_run_records_its_statements_and_the_bytes_its_jobs_billed(bigquery_cli: Cli) -> None:
    assert bigquery_cli("sync", "--quiet", timeout=300).returncode == 0
    done = bigquery_cli("runs", "--json")
    assert done.returncode == 0, done.stderr
    [run] = json.loads(done.stdout)
    assert run["counts"]["bytes_billed"] == 0  # bqemulator's job statistics say 0 for every job
    assert run["counts"]["warehouse_statements"] > 10
    table = bigquery_cli("runs")
    assert "billed" in table.stdout and "0 B" in table.stdout
    # Before a run, the dry run says what its reads billed and what a fold of the bookkeeping would.
    dry = bigquery_cli("sync", "--dry-run", "--json", timeout=300)
    assert dry.returncode == 0, dry.stderr
    forecast = json.loads(dry.stdout)["warehouse"]
    assert forecast["bytes_billed"] == 0 and forecast["statements"] > 3 and forecast["fold_bytes"] is not None
    text = bigquery_cli("sync", "--dry-run", "--log-format", "text", timeout=300)
    assert "Warehouse: these reads billed 0 B in " in text.stdout and "bills the state table" in text.stdout


def test_a_duckdb_run_counts_statements_and_shows_no_bill(ready_cli: Cli) -> None:
    assert ready_cli("sync", "--quiet").returncode == 0
    [run] = json.loads(ready_cli("runs", "--json").stdout)
    assert "bytes_billed" not in run["counts"] and run["counts"]["warehouse_statements"] > 10
    assert "billed" not in ready_cli("runs").stdout
