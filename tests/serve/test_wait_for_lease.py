"""`truth-forge sync --wait-for-lease SECONDS` waits for a DuckDB file another process has open.

Why it exists: DuckDB lets one process open a file for writing, so a second sync never reached the
writer lease it was told to wait for: the file lock refused it at once (issue 18, point 9). It must
wait for the file as it waits for the lease, say so while waiting, and refuse with the usual
"in use by another process" once the time is up.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.serve.conftest import wait_until
from truth_forge.twenty import TwentyClient
from truth_forge.warehouse import open_warehouse
from truth_forge.warehouse.sample_data import generate_sample_data

ROOT = Path(__file__).resolve().parents[2]
_FOREIGN_ENV = ("TRUTH_FORGE_", "TWENTY_", "GOOGLE_", "GCP_")
# Another process with the warehouse file open (a sync, a serve): it closes the file when told.
_HOLD_THE_FILE = """
import sys
from truth_forge.warehouse import open_warehouse
with open_warehouse(sys.argv[1]):
    print("open", flush=True)
    sys.stdin.readline()
"""


def sync_env(sandbox: Any, url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_FOREIGN_ENV)}
    env.update(TWENTY_BASE_URL=sandbox.base_url, TWENTY_API_KEY=sandbox.api_key, TRUTH_FORGE_WAREHOUSE_URL=url,
               TRUTH_FORGE_TWENTY_REQUESTS_PER_MINUTE="100000", PYTHONPATH=str(ROOT))
    return env


def hold_the_file(url: str) -> subprocess.Popen[str]:
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_THE_FILE, url], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
    return holder


def let_go(holder: subprocess.Popen[str]) -> None:
    assert holder.stdin is not None
    holder.stdin.write("\n")
    holder.stdin.close()
    holder.wait(30)


def test_a_sync_told_to_wait_waits_for_the_duckdb_file_and_proceeds_once_it_is_free(
        sandbox: Any, crm: TwentyClient, tmp_path: Path) -> None:
    url = f"duckdb:///{tmp_path / 'warehouse.duckdb'}"
    with open_warehouse(url) as warehouse:
        generate_sample_data(warehouse, 5, 1, seed=3)
    holder = hold_the_file(url)
    try:
        err = tmp_path / "sync.err"
        with open(err, "w") as stderr:
            waiting = subprocess.Popen([sys.executable, "-m", "truth_forge", "sync", "--wait-for-lease", "120"],
                                       env=sync_env(sandbox, url), cwd=tmp_path, stdout=subprocess.DEVNULL,
                                       stderr=stderr, text=True)
        wait_until(lambda: "waiting" in err.read_text() or waiting.poll() is not None,
                   "the sync to say it waits for the file", timeout=60)
        assert waiting.poll() is None, err.read_text()[-3000:]
        assert "is open in another process" in err.read_text()
    finally:
        let_go(holder)
    assert waiting.wait(120) == 0, err.read_text()[-3000:]
    with open_warehouse(url) as warehouse:
        assert warehouse.count_rows("crm_sync_state") == 6  # 5 contacts and their company: it ran


def test_a_sync_that_waited_long_enough_refuses_with_the_file_in_use(sandbox: Any, crm: TwentyClient,
                                                                      tmp_path: Path) -> None:
    url = f"duckdb:///{tmp_path / 'warehouse.duckdb'}"
    open_warehouse(url).close()
    holder = hold_the_file(url)
    try:
        # 3 s, not 1: on a busy machine the first attempt alone can take a second, and then the sync
        # refuses without having said that it waits.
        refused = subprocess.run([sys.executable, "-m", "truth_forge", "sync", "--wait-for-lease", "3"],
                                 env=sync_env(sandbox, url), cwd=tmp_path, capture_output=True, text=True,
                                 timeout=120)
    finally:
        let_go(holder)
    assert refused.returncode == 2, refused.stderr[-3000:]
    assert "waiting" in refused.stderr and "in use by another process" in refused.stderr
