"""`truth-forge console` on a BigQuery warehouse (bqemulator through the official client): the runs
with the bytes their jobs billed, and a record looked up by its key and by its Twenty id."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fixtures.bqemulator import BQEMU_PROJECT
from tests.ops.conftest import Cli, clean_env
from tests.serve.test_console_browser import ConsoleProcess
from truth_forge.core.crm_schema import CrmSchema, setup_schema
from truth_forge.twenty import TwentyClient
from truth_forge.warehouse import open_warehouse
from truth_forge.warehouse.sample_data import generate_sample_data


@pytest.fixture
def bigquery_cli(sandbox: Any, bqemulator_endpoint: str, bigquery_client: Any, tmp_path: Path) -> Iterator[Cli]:
    dataset = f"console_{uuid.uuid4().hex[:10]}"
    url = f"bigquery://{BQEMU_PROJECT}/{dataset}?endpoint={bqemulator_endpoint}"
    with open_warehouse(url) as wh:
        generate_sample_data(wh, 4, 1, seed=5)
    with TwentyClient(sandbox.base_url, sandbox.api_key, requests_per_minute=100_000, timeout=5) as api:
        setup_schema(api, CrmSchema.load())
    yield Cli(clean_env(TWENTY_API_KEY=sandbox.api_key, TWENTY_BASE_URL=sandbox.base_url,
                        TRUTH_FORGE_WAREHOUSE_URL=url, TRUTH_FORGE_TWENTY_REQUESTS_PER_MINUTE="100"), tmp_path)
    bigquery_client.delete_dataset(f"{BQEMU_PROJECT}.{dataset}", delete_contents=True, not_found_ok=True)


@pytest.mark.bigquery
def test_the_console_reads_a_bigquery_warehouse_with_its_bytes_billed(bigquery_cli: Cli, tmp_path: Path) -> None:
    assert bigquery_cli("sync", "--quiet", timeout=300).returncode == 0
    with open_warehouse(bigquery_cli.env["TRUTH_FORGE_WAREHOUSE_URL"], create=False) as wh:
        [run] = wh.recent_runs(5)
        state = wh.read_sync_state("person", [1])["1"]
    console = ConsoleProcess(bigquery_cli.env, tmp_path)
    try:
        front = httpx.get(console.url + "/", timeout=60).text
        by_key = httpx.get(console.url + "/record", params={"type": "person", "key": "1"}, timeout=60).text
        by_id = httpx.get(console.url + "/record", params={"type": "person", "key": state["crm_id"]}, timeout=60).text
    finally:
        console.stop()
    runs = front.split('id="runs"', 1)[1].split("</table>", 1)[0]
    assert "<th>billed</th>" in runs and "0 B" in runs  # bqemulator's jobs bill 0 bytes
    assert run["run_id"][:12] in runs
    for page in (by_key, by_id):
        assert state["crm_id"] in page and "synced" in page and 'id="base"' in page
