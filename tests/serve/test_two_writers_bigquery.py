"""Two writers on one BigQuery warehouse (bqemulator), as separate processes: while `serve` holds
the writer lease, `truth-forge sync` refuses; once serve is SIGKILLed, its lease expires (or its
holder is found gone) and a waiting sync proceeds, never before."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.bqemulator import BQEMU_PROJECT
from tests.serve.conftest import ServeProcess, serve_env, wait_until
from truth_forge.twenty import TwentyClient
from truth_forge.warehouse import open_warehouse

pytestmark = pytest.mark.bigquery


def sync_cli(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "truth_forge.cli.main", "sync", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def test_sync_refuses_while_serve_writes_and_proceeds_after_a_killed_serves_lease_expires(
        sandbox: Any, crm: TwentyClient, bqemulator_endpoint: str, bigquery_client: Any, tmp_path: Path) -> None:
    dataset = f"t_{uuid.uuid4().hex[:12]}"
    url = f"bigquery://{BQEMU_PROJECT}/{dataset}?endpoint={bqemulator_endpoint}"
    env = serve_env(sandbox, url, tmp_path)
    try:
        server = ServeProcess(env, tmp_path, "--no-sync-on-start")
        try:
            wait_until(lambda: server.get("/readyz").status_code == 200, "serve to hold the lease", timeout=60)

            refused = sync_cli(env, tmp_path)
            assert refused.returncode == 2, refused.stdout + refused.stderr
            assert f"being written by 'serve (server pid {server.proc.pid}) on" in refused.stderr
        finally:
            server.kill()
        with open_warehouse(url) as warehouse:
            left = warehouse.read_lease("writer")
        # The kill left the lease held: nobody released it (SIGKILL reaches serve and its writer at once).
        assert left is not None and f"serve (server pid {server.proc.pid})" in str(left["owner"]), left

        waited = sync_cli(env, tmp_path, "--wait-for-lease", "60", "--json")
        assert waited.returncode == 0, waited.stdout + waited.stderr
        with open_warehouse(url) as warehouse:
            run = warehouse.get_run(json.loads(waited.stdout)["run_id"])
        # How the sync got the lease depends on timing a test cannot hold still: the lease expired before
        # it looked or while it waited, or the dead holder's process was found gone (once reaped). Each
        # is right; what must hold either way is that the sync did not start before the lease was over.
        assert run is not None and run["status"] == "succeeded"
        assert run["started_at"] >= left["expires_at"] \
            or "no longer running on this machine" in waited.stderr.lower(), (left, run, waited.stderr)
    finally:
        bigquery_client.delete_dataset(f"{BQEMU_PROJECT}.{dataset}", delete_contents=True, not_found_ok=True)
