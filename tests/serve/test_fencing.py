"""A writer paused past its lease writes nothing more: two real `truth-forge sync` processes on one
BigQuery warehouse (bqemulator), the first stopped with SIGSTOP in the middle of its push until the
second has taken the lease over and finished, then resumed with SIGCONT.

Why it exists: BigQuery has no lock of its own, so the writer lease is all that keeps two writers
apart, and a lease alone cannot stop a holder that was paused while another took over (issue 18,
point 4: the resumed writer logged "taken over" and wrote 600 rows beside the new one). The
resumed process must stop before its next Twenty write and its next bookkeeping write, end its run
"aborted" with an error row, and exit non-zero.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.bqemulator import BQEMU_PROJECT
from tests.serve.conftest import wait_until
from tests.soak.harness import wait_until_quiet
from truth_forge.twenty import TwentyClient
from truth_forge.warehouse import open_warehouse
from truth_forge.warehouse.sample_data import generate_sample_data

pytestmark = pytest.mark.bigquery

CONTACTS, COMPANIES = 60, 6
TTL_SECONDS = 3
HELD_MS = 300  # how long the sandbox holds each of the first writer's people creates before refusing it
WRITES = ("POST", "PATCH", "DELETE", "PUT")
_FOREIGN_ENV = ("TRUTH_FORGE_", "TWENTY_", "GOOGLE_", "GCP_")


def twenty_writes(sandbox: Any) -> list[str]:
    return [f"{e.method} {e.path}" for e in sandbox.request_log
            if e.method in WRITES and not e.path.startswith("/rest/metadata")]


def bookkeeping(warehouse: Any) -> dict[str, Any]:
    """What a sync writes besides its run log: sync state, its journal, watermarks, and the contacts."""
    state = {obj: warehouse.read_sync_state(obj, [str(k) for k in range(1, CONTACTS + 1)])
             for obj in ("person", "company")}
    return {"state": state, **{table: warehouse.count_rows(table)
                               for table in ("crm_sync_state", "crm_sync_journal", "crm_sync_kv", "contacts")}}


def people_created(sandbox: Any) -> int:
    return sum(1 for e in sandbox.request_log if e.path == "/rest/batch/people" and 200 <= (e.status or 0) < 300)


def people_refused(sandbox: Any) -> int:
    return sum(1 for e in sandbox.request_log if e.path == "/rest/batch/people" and e.fault == "db_error")


def companies_created(sandbox: Any) -> int:
    return sum(1 for e in sandbox.request_log if e.path == "/rest/batch/companies" and 200 <= (e.status or 0) < 300)


def start_sync(env: dict[str, str], cwd: Path, name: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "truth_forge", "sync", "--json", *args], env=env, cwd=cwd,
                            stdout=open(cwd / f"{name}.out", "w"), stderr=open(cwd / f"{name}.err", "w"), text=True)


def test_a_writer_paused_past_its_lease_stops_before_its_next_write_and_ends_aborted(
        sandbox: Any, crm: TwentyClient, bqemulator_endpoint: str, bigquery_client: Any, tmp_path: Path) -> None:
    dataset = f"t_{uuid.uuid4().hex[:12]}"
    url = f"bigquery://{BQEMU_PROJECT}/{dataset}?endpoint={bqemulator_endpoint}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(_FOREIGN_ENV)}
    env.update(TWENTY_BASE_URL=sandbox.base_url, TWENTY_API_KEY=sandbox.api_key, TRUTH_FORGE_WAREHOUSE_URL=url,
               TRUTH_FORGE_TWENTY_REQUESTS_PER_MINUTE="100000", TRUTH_FORGE_TWENTY_BATCH_SIZE="4",
               TRUTH_FORGE_LEASE_TTL_SECONDS=str(TTL_SECONDS), PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    try:
        with open_warehouse(url) as warehouse:
            generate_sample_data(warehouse, CONTACTS, COMPANIES, seed=5)
        sandbox.clear_request_log()
        # The people's creates are held a while, then refused with a database error (nothing applied),
        # so the first writer is stopped in its pause before sending them again: not between a check
        # and its write (a write already on its way when the pause begins is not fenced; the next is).
        sandbox.set_faults(latency_ms=HELD_MS, db_error_rate=1.0, path_prefix="/rest/batch/people")

        paused = start_sync(env, tmp_path, "paused")
        try:
            wait_until(lambda: paused.poll() is not None or people_refused(sandbox) > 0,
                       "the first sync's people creates to be refused once", timeout=120)
            paused.send_signal(signal.SIGSTOP)
            assert paused.poll() is None, (tmp_path / "paused.err").read_text()[-3000:]
            wait_until_quiet(sandbox, quiet_s=2 * HELD_MS / 1000)  # what it sent before the pause is answered
            sandbox.clear_faults()
            assert people_created(sandbox) == 0 and companies_created(sandbox) > 0
            with open_warehouse(url) as warehouse:  # the sync took TRUTH_FORGE_LEASE_TTL_SECONDS
                held = warehouse.read_lease("writer")
                assert held["expires_at"] - held["renewed_at"] == dt.timedelta(seconds=TTL_SECONDS), held

            # The second writer waits for the stopped one's lease to expire, takes it over and finishes.
            taker = start_sync(env, tmp_path, "taker", "--wait-for-lease", "120")
            assert taker.wait(180) == 0, (tmp_path / "taker.err").read_text()[-3000:]
            wait_until_quiet(sandbox, quiet_s=0.3)
            writes_before = twenty_writes(sandbox)
            with open_warehouse(url) as warehouse:
                before = bookkeeping(warehouse)
        finally:
            paused.send_signal(signal.SIGCONT)
        code = paused.wait(120)
        said = (tmp_path / "paused.err").read_text()
        assert code == 2, said[-3000:]

        wait_until_quiet(sandbox, quiet_s=0.3)  # a request sent on resuming would be answered by now
        assert twenty_writes(sandbox)[len(writes_before):] == []
        with open_warehouse(url) as warehouse:
            after = bookkeeping(warehouse)
            changed = {obj: {key: {c: (was.get(c), row[c]) for c in row if was.get(c) != row[c]}
                             for key, row in after["state"][obj].items()
                             if (was := before["state"][obj].get(key, {})) != row}
                       for obj in ("person", "company")}
            assert after == before, changed
            result = json.loads((tmp_path / "paused.out").read_text())
            assert result["status"] == "aborted"
            assert warehouse.get_run(result["run_id"])["status"] == "aborted"
            lost = [e for e in warehouse.open_errors() if e["run_id"] == result["run_id"]]
            assert [e["error_class"] for e in lost] == ["LeaseLost"], lost
        assert "taken over" in said
    finally:
        sandbox.clear_faults()
        bigquery_client.delete_dataset(f"{BQEMU_PROJECT}.{dataset}", delete_contents=True, not_found_ok=True)
