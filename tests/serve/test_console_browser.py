"""`truth-forge console` in a real browser (headless Chromium from Debian's packages): the runs, the
budget chart, conflicts, a record's state and history, every value escaped; it never holds the
DuckDB file, and it refuses to listen beyond loopback without a token (issue 21, "A console").

TRUTH_FORGE_TEST_UPDATE_SCREENSHOTS=1 also copies the screenshots to docs/ (console-runs.png and
console-record.png, shown by docs/console.md).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fixtures.chromium import Chromium
from tests.serve.conftest import ServeProcess
from tests.serve.test_wait_for_lease import hold_the_file, let_go, sync_env
from truth_forge.twenty import TwentyClient
from truth_forge.warehouse import open_warehouse
from truth_forge.warehouse.sample_data import generate_sample_data

ROOT = Path(__file__).resolve().parents[2]
HOSTILE_KEY = 9001
HOSTILE_NAME = "<script>document.title='owned'</script><img src=x onerror=alert(1)> Mallory"
EDITED_IN_TWENTY = "<b>Eve</b>"


class ConsoleProcess(ServeProcess):
    """`python -m truth_forge.cli.main console --port 0` on 127.0.0.1, stopped with SIGTERM."""

    COMMAND = "console"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)
        self._reader.join(10)


def sync(sandbox: Any, url: str, cwd: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "truth_forge", "sync"], env=sync_env(sandbox, url), cwd=cwd,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode in (0, 1), done.stdout[-2000:] + done.stderr[-2000:]


@pytest.fixture
def synced(sandbox: Any, crm: TwentyClient, member_client: httpx.Client, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A DuckDB warehouse after two syncs, with a hostile name and a conflict on it."""
    url = f"duckdb:///{tmp_path / 'w.duckdb'}"
    with open_warehouse(url) as warehouse:
        generate_sample_data(warehouse, 5, 1, seed=3)
        warehouse.upsert_contacts([{"contact_id": HOSTILE_KEY, "canonical_name": HOSTILE_NAME}])
    sync(sandbox, url, tmp_path)
    with open_warehouse(url) as warehouse:
        crm_id = warehouse.read_sync_state("person", [HOSTILE_KEY])[str(HOSTILE_KEY)]["crm_id"]
        # The same field edited on both sides before the next run: a conflict, settled by policy.
        warehouse.upsert_contacts([{"contact_id": HOSTILE_KEY, "canonical_name": HOSTILE_NAME + " II"}])
    edited = member_client.patch(f"/rest/people/{crm_id}", json={"name": {"firstName": EDITED_IN_TWENTY, "lastName": ""}})
    assert edited.status_code == 200, edited.text
    sync(sandbox, url, tmp_path)
    with open_warehouse(url, read_only=True) as warehouse:
        runs = warehouse.recent_runs(10)
    yield {"url": url, "crm_id": crm_id, "runs": runs, "env": sync_env(sandbox, url)}


def test_the_console_shows_runs_budget_conflicts_and_a_record_escaped_in_a_real_browser(
        sandbox: Any, synced: dict[str, Any], chromium: Chromium, tmp_path: Path) -> None:
    # The console reads Twenty's real budget (100 a minute) for its chart; the syncs ran unthrottled.
    console = ConsoleProcess({**synced["env"], "TRUTH_FORGE_TWENTY_REQUESTS_PER_MINUTE": "100"}, tmp_path)
    try:
        front = chromium.dump_dom(console.url + "/")
        by_key = chromium.dump_dom(f"{console.url}/record?type=person&key={HOSTILE_KEY}")
        by_id = chromium.dump_dom(f"{console.url}/record?type=person&key={synced['crm_id']}")
        shots = {name: chromium.screenshot(console.url + path, tmp_path / name)
                 for name, path in (("console-runs.png", "/"),
                                    ("console-record.png", f"/record?type=person&key={HOSTILE_KEY}"))}
        # The console holds nothing between pages: a sync opens the file for writing meanwhile.
        sync(sandbox, synced["url"], tmp_path)
    finally:
        console.stop()

    runs = synced["runs"]
    assert len(runs) == 2 and all(r["status"] == "succeeded" for r in runs)
    runs_table = front.split('id="runs"', 1)[1].split("</table>", 1)[0]
    for run in runs:
        assert run["run_id"][:12] in runs_table
    assert runs_table.count("succeeded") == 2
    spent = sum(int(r["counts"]["requests"]) for r in runs)
    assert f"{spent} requests spent of 144000 a day" in front
    assert 'id="budget-chart"' in front and "<rect" in front
    conflicts = front.split('id="conflicts"', 1)[1].split("</table>", 1)[0]
    assert f"type=person&amp;key={HOSTILE_KEY}" in conflicts  # each conflict links to its record

    for page in (by_key, by_id):
        assert synced["crm_id"] in page and 'id="state"' in page and 'id="history"' in page
        assert 'id="record-errors"' in page and "conflict person" in page
        # Hostile values arrive as text: escaped, never as elements (no script ran: the title is ours).
        assert "&lt;script&gt;document.title='owned'&lt;/script&gt;" in page
        assert "<script" not in page.lower() and "<img" not in page.lower() and "<b>eve" not in page.lower()
        assert "<title>truth-forge: person" in page
    assert f">{HOSTILE_KEY}<" in by_id  # found by its Twenty id, it shows its warehouse key

    for shot in shots.values():
        assert shot.stat().st_size > 10_000  # a page was drawn, not an empty window
    if os.environ.get("TRUTH_FORGE_TEST_UPDATE_SCREENSHOTS") == "1":
        for name, shot in shots.items():
            shutil.copyfile(shot, ROOT / "docs" / name)


def test_while_another_process_writes_the_file_the_console_shows_its_snapshot(
        synced: dict[str, Any], tmp_path: Path) -> None:
    holder = hold_the_file(synced["url"])
    console = ConsoleProcess(synced["env"], tmp_path)
    try:
        front = httpx.get(console.url + "/", timeout=30).text
        record = httpx.get(f"{console.url}/record", params={"type": "person", "key": HOSTILE_KEY}, timeout=30).text
    finally:
        console.stop()
        let_go(holder)
    assert "in use by another process" in front
    assert synced["runs"][0]["run_id"][:12] in front
    assert 'id="unavailable"' in record and "conflict person" in record


def test_the_console_refuses_to_listen_beyond_loopback_without_a_token(synced: dict[str, Any], tmp_path: Path) -> None:
    refused = subprocess.run([sys.executable, "-m", "truth_forge", "console", "--host", "0.0.0.0", "--port", "0"],
                             env=synced["env"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2
    assert "TRUTH_FORGE_CONSOLE_TOKEN" in refused.stderr and "listening" not in refused.stdout
