"""`truth-forge status` as a health check while `serve` runs: its writer process holds the DuckDB file
(DuckDB then lets nobody else open it), so status shows what the writer last wrote beside the file
and says so, instead of failing exactly when someone looks (issue 20, point 2)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.serve.conftest import ServeHarness, wait_until
from tests.serve.test_wait_for_lease import sync_env
from truth_forge.operations.snapshot import snapshot_path
from truth_forge.twenty import TwentyClient
from truth_forge.warehouse import open_warehouse
from truth_forge.warehouse.sample_data import generate_sample_data


def test_status_reads_what_serve_wrote_while_serve_holds_the_file(
        sandbox: Any, crm: TwentyClient, make_harness: Callable[..., ServeHarness], tmp_path: Path) -> None:
    url = f"duckdb:///{tmp_path / 'w.duckdb'}"
    with open_warehouse(url) as warehouse:
        generate_sample_data(warehouse, 5, 1, seed=3)
    harness = make_harness(sync_on_start=True)
    harness.wait_ready()
    written = snapshot_path(url)
    assert written is not None
    wait_until(lambda: harness.status()["writer"].get("syncs", 0) >= 1 and written.is_file(),
               "serve's first sync and its snapshot", timeout=60)
    status = subprocess.run([sys.executable, "-m", "truth_forge", "status", "--offline", "--json"],
                            env=sync_env(sandbox, url), cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert status.returncode == 0, status.stdout + status.stderr
    report = json.loads(status.stdout)
    assert report["runs"][0]["status"] == "succeeded" and report["synced"]["person"]["synced"] == 5
    assert "in use by another process" in status.stderr
