"""SIGTERM stops a real `truth-forge sync` process cleanly; a SIGKILLed run's row is closed by the next run.

Method: the sandbox answers every request after a fixed latency, so a sync of a few batches is slow
enough to be caught in the middle. The test watches the sandbox's request log until some people
batches have landed, then sends the signal. After SIGTERM the process must exit 143 (docs/operating.md's
exit-code table) with one line, its run row closed as `aborted` with an error row naming the signal,
and every person that landed in Twenty with a `contactId` recorded in the sync state (the answers of
the requests on the wire were read and saved). The rerun, without latency, converges with nothing
lost and nothing twice.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.soak.convergence import check_convergence, summarize
from tests.soak.harness import PlainTwenty, SyncProcess, SyncRun, fresh_workspace, run_sync, sync_env, wait_until_quiet
from truth_forge.warehouse import open_warehouse
from truth_forge.warehouse.sample_data import generate_sample_data

# 120 contacts in batches of 3: 40 people batches, far more than the requests on the wire at once.
CONTACTS, COMPANIES, SEED = 120, 4, 5
LATENCY_MS = 100
SETTINGS = {"twenty_batch_size": 3}
POLL_S = 0.005
WAIT_S = 120.0  # a bound, never a measurement: a process that does not stop fails the test


def prepare(sandbox: Any, workdir: Path) -> Path:
    fresh_workspace(sandbox)
    workdir.mkdir(parents=True, exist_ok=True)
    db_path = workdir / "warehouse.duckdb"
    with open_warehouse(f"duckdb:///{db_path}") as warehouse:
        generate_sample_data(warehouse, CONTACTS, COMPANIES, seed=SEED)
    return db_path


def converged(sandbox: Any, db_path: Path) -> list[Any]:
    with PlainTwenty(sandbox) as twenty:
        return check_convergence(db_path, twenty, live_people=CONTACTS, live_companies=COMPANIES)


def _people_batches(sandbox: Any) -> int:
    return sum(1 for e in sandbox.request_log
               if e.method == "POST" and e.path.startswith("/rest/batch/people") and e.status is not None and e.status < 300)


def _wait_for_batches(sandbox: Any, proc: subprocess.Popen[bytes], count: int) -> None:
    deadline = time.monotonic() + WAIT_S
    while _people_batches(sandbox) < count:
        assert proc.poll() is None, "the sync finished before it could be stopped"
        assert time.monotonic() < deadline, "the sync never wrote people"
        time.sleep(POLL_S)


def _signal_after_batches(sandbox: Any, db_path: Path, workdir: Path, name: str, batches: int,
                          signum: signal.Signals) -> SyncRun:
    """A sync on a slowed sandbox, sent `signum` once `batches` people batches landed; how it ended,
    once the sandbox went quiet (faults cleared for what follows)."""
    sandbox.set_faults(latency_ms=LATENCY_MS)
    process = SyncProcess(sync_env(sandbox, db_path, **SETTINGS), workdir, name)
    _wait_for_batches(sandbox, process.proc, batches)
    process.proc.send_signal(signum)
    ended = process.wait(WAIT_S)
    wait_until_quiet(sandbox, quiet_s=3 * LATENCY_MS / 1000)
    sandbox.clear_faults()
    return ended


def _runs(db_path: Path) -> list[dict[str, Any]]:
    with open_warehouse(f"duckdb:///{db_path}") as warehouse:
        return warehouse.recent_runs(50)


def _open_run_errors(db_path: Path, run_id: str) -> list[dict[str, Any]]:
    with open_warehouse(f"duckdb:///{db_path}") as warehouse:
        return warehouse.error_lifecycles(run_id=run_id)


def test_sigterm_stops_a_sync_with_its_writes_recorded_and_the_rerun_converges(sandbox: Any, tmp_path: Path) -> None:
    db_path = prepare(sandbox, tmp_path)
    stopped = _signal_after_batches(sandbox, db_path, tmp_path, "stopped", 2, signal.SIGTERM)

    assert stopped.returncode == 143, stopped.describe()
    assert not stopped.crashed, stopped.stderr[-2000:]
    assert "SIGTERM" in stopped.stderr
    [run] = _runs(db_path)
    assert run["status"] == "aborted" and run["finished_at"] is not None
    assert any("SIGTERM" in (e["error_message"] or "") for e in _open_run_errors(db_path, run["run_id"]))

    # Every person the stopped run put in Twenty is in the sync state: nothing was left to be guessed.
    with PlainTwenty(sandbox) as twenty:
        landed = [p["id"] for p in twenty.records("people") if p.get("contactId") is not None]
    assert landed
    with open_warehouse(f"duckdb:///{db_path}") as warehouse:
        known = warehouse.read_sync_state_by_crm_id("person", landed)
    assert sorted(set(landed) - set(known)) == []

    rerun = run_sync(sandbox, db_path, tmp_path, "rerun", **SETTINGS)
    assert rerun.returncode == 0, rerun.describe()
    found = converged(sandbox, db_path)
    assert found == [], summarize(found, 8)


def test_a_sigkilled_runs_row_is_closed_by_the_next_run(sandbox: Any, tmp_path: Path) -> None:
    db_path = prepare(sandbox, tmp_path)
    _signal_after_batches(sandbox, db_path, tmp_path, "killed", 1, signal.SIGKILL)
    [killed] = _runs(db_path)
    assert killed["status"] == "running"  # nothing of the killed process could close it

    rerun = run_sync(sandbox, db_path, tmp_path, "rerun", **SETTINGS)
    assert rerun.returncode == 0, rerun.describe()
    runs = {r["run_id"]: r for r in _runs(db_path)}
    assert runs[killed["run_id"]]["status"] == "aborted"
    assert runs[killed["run_id"]]["finished_at"] is not None
    assert [r["status"] for r in runs.values()].count("running") == 0
    assert converged(sandbox, db_path) == []


@contextlib.contextmanager
def _sync_every(sandbox: Any, db_path: Path, workdir: Path, interval: str) -> Iterator[subprocess.Popen[bytes]]:
    """`truth-forge sync --every INTERVAL` (JSON events in every.out), killed if the test leaves it running."""
    with open(workdir / "every.out", "w") as stdout, open(workdir / "every.err", "w") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "truth_forge", "sync", "--every", interval, "--log-format", "json"],
                                env=sync_env(sandbox, db_path, **SETTINGS), cwd=workdir, stdout=stdout, stderr=stderr)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_sigterm_ends_a_sync_every_loop_between_runs(sandbox: Any, tmp_path: Path) -> None:
    db_path = prepare(sandbox, tmp_path)
    out = tmp_path / "every.out"
    with _sync_every(sandbox, db_path, tmp_path, "1h") as proc:
        deadline = time.monotonic() + WAIT_S
        while '"event": "summary"' not in out.read_text():  # the first run is over; the loop waits an hour
            assert proc.poll() is None, (tmp_path / "every.err").read_text()[-2000:]
            assert time.monotonic() < deadline, "the first scheduled run never finished"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(WAIT_S)
    assert code == 143, (tmp_path / "every.err").read_text()[-2000:]
    assert [r["status"] for r in _runs(db_path)] == ["succeeded"]


def test_sigterm_during_a_scheduled_run_closes_it_and_starts_no_other(sandbox: Any, tmp_path: Path) -> None:
    db_path = prepare(sandbox, tmp_path)
    sandbox.set_faults(latency_ms=LATENCY_MS)
    with _sync_every(sandbox, db_path, tmp_path, "60s") as proc:
        _wait_for_batches(sandbox, proc, 1)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(WAIT_S)
    sandbox.clear_faults()
    assert code == 143, (tmp_path / "every.err").read_text()[-2000:]
    assert [r["status"] for r in _runs(db_path)] == ["aborted"]
