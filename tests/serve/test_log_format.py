"""`serve --log-format json`: every line the server and its writer process log is one JSON object, with
the time to the millisecond and its zone, and the lines of a sync run carry that run's id."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from tests.serve.conftest import ServeProcess, serve_env, wait_until
from truth_forge.twenty.client import TwentyClient
from truth_forge.warehouse import open_warehouse

TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00$")


def test_serve_logs_json_lines_with_run_ids(sandbox: Any, crm: TwentyClient, tmp_path: Path) -> None:
    url = f"duckdb:///{tmp_path / 'w.duckdb'}"
    server = ServeProcess(serve_env(sandbox, url, tmp_path), tmp_path, "--log-format", "json")
    try:
        wait_until(lambda: (server.get("/status").json().get("writer") or {}).get("syncs", 0) >= 1,
                   "the first scheduled sync", timeout=60)
    finally:
        assert server.terminate(), server.output()[-3000:]
    lines = [line for line in server.output().splitlines() if line.strip()]
    logged = [line for line in lines if "listening on" not in line]  # the one line serve prints for people
    parsed = [json.loads(line) for line in logged]  # fails on any line that is not JSON
    assert all(TIME.match(entry["time"]) for entry in parsed), parsed[:3]
    with open_warehouse(url, read_only=True) as warehouse:
        runs = {run["run_id"] for run in warehouse.recent_runs(10)}
    tagged = {entry["run_id"] for entry in parsed if "run_id" in entry}
    assert tagged and tagged <= runs, (tagged, runs)
    assert any(entry["logger"].startswith("truth_forge.realtime.writer") or entry["logger"] == "truth_forge.core.lease"
               for entry in parsed if "run_id" in entry)
