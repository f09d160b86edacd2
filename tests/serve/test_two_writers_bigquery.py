"""Two writers on one BigQuery warehouse (bqemulator), as separate processes: while `serve` holds
the writer lease, `truth-forge sync` refuses; once serve is SIGKILLed, its lease expires and a
waiting sync proceeds."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.warehouse import BQEMU_PROJECT
from tests.serve.conftest import ServeProcess, serve_env, wait_until
from truth_forge.twenty import TwentyClient

pytestmark = pytest.mark.bigquery


def sync_cli(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "truth_forge.cli", "sync", *args], env=env, cwd=cwd,
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

        waited = sync_cli(env, tmp_path, "--wait-for-lease", "60", "--json")
        assert waited.returncode == 0, waited.stdout + waited.stderr
        # It waited for the dead server's lease, or found at once that its holder (serve or its writer
        # child, on this machine) no longer runs: which one depends on when the kill is reaped.
        said = waited.stderr.lower()
        assert "waiting" in said or "no longer running on this machine" in said, waited.stderr
    finally:
        bigquery_client.delete_dataset(f"{BQEMU_PROJECT}.{dataset}", delete_contents=True, not_found_ok=True)
