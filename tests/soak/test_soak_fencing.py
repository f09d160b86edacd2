"""Seeded fencing trials: a writer frozen past its lease while a second one takes over; run by `make soak` only.

Why it exists: the lease is all that keeps two writers apart, and a lease alone cannot stop a holder
that was frozen (SIGSTOP, a paused VM, a long GC) while another took it over. Each trial starts sync
A, freezes it mid-run, lets sync B wait out A's lease (`TRUTH_FORGE_LEASE_TTL_SECONDS=3`), take it
over and finish, then resumes A. A must end aborted (non-zero exit, status "aborted") without a
Twenty write of its own after resuming (counted in the sandbox's request log), save those already
under way when it froze; one clean run afterwards must converge.

"Under way": the fence (truth_forge/core/lease.py) is checked by each request worker just before its
request leaves, so a worker frozen between its check and its send sends that one request on waking.
No client-side fence can stop it (only a store that checks the token could); each of A's workers can
have at most one, so more late writes than workers mean the fence let a new write through. The ones
seen are tallied (`fencing-writes-under-way`) so the figure shows.

The trials run on the BigQuery emulator, not DuckDB: a DuckDB file admits one writing process, so B
would wait on the file lock, never reaching the lease this trial is about. Two ways to freeze A, a
seeded choice per trial: after a random number of answered requests (some of its writes may be on
the wire, and are answered while it is frozen), or while the sandbox holds its people creates and
refuses them (so A is frozen just before sending them again).
"""

from __future__ import annotations

import json
import random
import signal
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.bigquery_convergence import check_bigquery_convergence
from tests.fixtures.bqemulator import BQEMU_PROJECT
from tests.soak.convergence import summarize
from tests.soak.harness import PlainTwenty, SyncProcess, fresh_workspace, record_requests, sync_env, wait_until_quiet
from tests.soak.tally import TALLY
from truth_forge.twenty.transport import in_flight_for
from truth_forge.warehouse import open_warehouse
from truth_forge.warehouse.sample_data import generate_sample_data

pytestmark = [pytest.mark.soak, pytest.mark.slow, pytest.mark.bigquery]
FENCING_SEEDS = (611, 622, 633)
TTL_SECONDS = 3
RESUMED_EXIT_S = 60.0  # a resumed writer that lost its lease must be gone within this
WRITES = ("POST", "PATCH", "DELETE", "PUT")
POLL_S = 0.01
FREEZE_WAIT_S = 120.0


def twenty_writes(sandbox: Any) -> list[str]:
    return [f"{e.method} {e.path}" for e in sandbox.request_log
            if e.method in WRITES and not e.path.startswith("/rest/metadata")]


def freeze_when(process: SyncProcess, ready: Callable[[], bool], what: str) -> bool:
    """SIGSTOP the process once `ready()`; False when it finished first (the trial then proves nothing)."""
    deadline = time.monotonic() + FREEZE_WAIT_S
    while process.proc.poll() is None:
        if ready():
            process.proc.send_signal(signal.SIGSTOP)
            return True
        if time.monotonic() > deadline:
            raise AssertionError(f"sync A never reached {what}")
        time.sleep(POLL_S)
    return False


@pytest.mark.parametrize("seed", FENCING_SEEDS)
def test_a_writer_frozen_past_its_lease_ends_aborted_without_writing(
        sandbox: Any, bqemulator_endpoint: str, bigquery_client: Any, tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    contacts, companies = rng.randint(30, 60), rng.randint(3, 6)
    dataset = f"soak_{uuid.uuid4().hex[:12]}"
    url = f"bigquery://{BQEMU_PROJECT}/{dataset}?endpoint={bqemulator_endpoint}"

    def start(name: str, *args: str) -> SyncProcess:
        env = sync_env(sandbox, tmp_path / "unused.duckdb", twenty_batch_size=rng.choice((3, 4, 5)),
                       lease_ttl_seconds=TTL_SECONDS)
        env.update(TRUTH_FORGE_WAREHOUSE_URL=url, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
        return SyncProcess(env, tmp_path, name, args)

    fresh_workspace(sandbox)
    try:
        with open_warehouse(url) as warehouse:
            generate_sample_data(warehouse, contacts, companies, seed=seed)
        how = rng.choice(("after-answers", "refused-creates"))
        if how == "refused-creates":
            # People creates held 300 ms, then refused (nothing applied): A is frozen before sending them again.
            sandbox.set_faults(latency_ms=300, db_error_rate=1.0, path_prefix="/rest/batch/people", seed=seed)
            answers = 0

            def ready() -> bool:
                return any(e.fault == "db_error" for e in sandbox.request_log)
        else:
            sandbox.set_faults(latency_ms=rng.choice((30, 60)), seed=seed)
            answers = rng.randint(2, 8)

            def ready() -> bool:
                return len(record_requests(sandbox)) >= answers

        a = start("a", "--json")
        frozen = freeze_when(a, ready, f"{how} ({answers} answers)")
        if not frozen:
            TALLY.trial("fencing-too-late", records=0)
            pytest.fail(f"seed {seed}: sync A finished before it could be frozen ({how}); "
                        f"{a.wait().describe()}")
        try:
            wait_until_quiet(sandbox, quiet_s=0.5)  # what A sent before the freeze is answered by now
            sandbox.clear_faults()
            b = start("b", "--wait-for-lease", "120").wait()
            assert b.returncode == 0, f"seed {seed} ({how}): sync B {b.describe()}"
            wait_until_quiet(sandbox, quiet_s=0.3)
            writes_before = len(twenty_writes(sandbox))
        finally:
            a.proc.send_signal(signal.SIGCONT)
        resumed = a.wait(RESUMED_EXIT_S)
        wait_until_quiet(sandbox, quiet_s=0.5)  # a request sent on resuming would be answered by now
        late_writes = twenty_writes(sandbox)[writes_before:]
        where = f"seed {seed} ({how}, frozen at {answers} answers)"
        assert resumed.returncode != 0 and not resumed.crashed, f"{where}: resumed A {resumed.describe()}"
        assert json.loads(resumed.stdout)["status"] == "aborted", f"{where}: resumed A {resumed.describe()}"
        # At most what may be on the wire (the harness runs syncs at 100,000 requests a minute).
        assert len(late_writes) <= in_flight_for(100_000), \
            f"{where}: resumed A wrote to Twenty after B had taken over, beyond its writes under way: {late_writes}"
        TALLY.count("fencing-writes-under-way", len(late_writes))

        clean = start("clean").wait()
        with PlainTwenty(sandbox) as twenty:
            found = check_bigquery_convergence(bigquery_client, f"{BQEMU_PROJECT}.{dataset}", twenty,
                                               live_people=contacts, live_companies=companies)
        TALLY.trial(f"fencing:{how}", faults=2, records=contacts + companies, discrepancies=len(found))
        assert clean.returncode == 0 and not found, (f"{where}: clean run {clean.describe()}\n"
                                                     f"{len(found)} discrepancies:\n{summarize(found, 12)}")
    finally:
        sandbox.clear_faults()
        bigquery_client.delete_dataset(f"{BQEMU_PROJECT}.{dataset}", delete_contents=True, not_found_ok=True)
