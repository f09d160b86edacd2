"""A push killed right after a write landed, then an edit in the warehouse: the rerun sends the newer value.

Issue 18, point 1. The sync runs as a real `truth-forge sync` subprocess against a slowed sandbox. After
a first clean sync, every contact is renamed in the warehouse and a second sync is started; the test
watches the sandbox's request log and stops the process (SIGKILL, or SIGTERM) as soon as the first
people batch is answered, most likely before the sync has saved what that batch stored. Then every
contact is renamed again in the warehouse, and a third sync runs to its end.

The records of the landed batch now hold our first rename in Twenty while the sync state still holds
the name before it. Twenty stamps them `updatedBy` with our API key: that value is ours, not a
person's edit, so the rerun takes it as the merge base and sends the second rename. Taken for a
person's edit (the old behaviour), it met the warehouse's second rename as a conflict that Twenty
won, and those contacts ended with the first rename on both sides.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import duckdb
import pytest

from tests.soak.harness import (
    SYNC_TIMEOUT_S,
    PlainTwenty,
    SyncProcess,
    fresh_workspace,
    run_sync,
    sync_env,
    wait_until_quiet,
)
from truth_forge.warehouse import open_warehouse
from truth_forge.warehouse.sample_data import generate_sample_data

CONTACTS, COMPANIES, SEED = 90, 3, 18
LATENCY_MS = 150
SETTINGS = {"twenty_batch_size": 30}
PEOPLE_BATCH = ("POST", "/rest/batch/people")
POLL_S = 0.001
ATTEMPTS = 3  # scenarios tried until one kill lands between a batch's answer and its bookkeeping


def rename_all(db_path: Path, word: str) -> None:
    with open_warehouse(f"duckdb:///{db_path}") as warehouse:
        warehouse.upsert_contacts([{"contact_id": key, "canonical_name": f"Person{key} {word}"}
                                   for key in range(1, CONTACTS + 1)])


def stop_after_first_people_batch(sandbox: Any, process: SyncProcess, signum: int) -> bool:
    """Send `signum` the moment the first people batch is answered; False if the sync ended first."""
    deadline = time.monotonic() + SYNC_TIMEOUT_S
    while process.proc.poll() is None and time.monotonic() < deadline:
        if any((e.method, e.path) == PEOPLE_BATCH and e.status is not None for e in sandbox.request_log):
            process.proc.send_signal(signum)
            process.wait()
            return True
        time.sleep(POLL_S)
    process.wait()
    return False


def unsaved_landings(sandbox: Any, db_path: Path) -> int:
    """Records Twenty holds with the first rename while the sync state's base does not: the window hit."""
    with PlainTwenty(sandbox) as twenty:
        renamed = {p["id"] for p in twenty.records("people") if p["name"]["lastName"] == "Once"}
    with open_warehouse(f"duckdb:///{db_path}") as warehouse:
        states = warehouse.read_sync_state("person", range(1, CONTACTS + 1))
    return sum(1 for s in states.values() if s["crm_id"] in renamed
               and not str((s.get("base") or {}).get("canonical_name", "")).endswith("Once"))


def conflicts(db_path: Path) -> list[str]:
    with duckdb.connect(str(db_path), read_only=True) as con:
        rows = con.execute("SELECT error_message FROM crm_sync_errors WHERE operation = 'conflict'").fetchall()
    return [r[0] for r in rows]


def one_scenario(sandbox: Any, workdir: Path, signum: int, url_options: str) -> tuple[int, list[str]]:
    """Returns how many landed records were not saved when the sync stopped, and what went wrong."""
    fresh_workspace(sandbox)
    db_path = workdir / "warehouse.duckdb"
    workdir.mkdir(parents=True, exist_ok=True)
    with open_warehouse(f"duckdb:///{db_path}") as warehouse:
        generate_sample_data(warehouse, CONTACTS, COMPANIES, seed=SEED)
    first = run_sync(sandbox, db_path, workdir, "first", url_options, **SETTINGS)
    assert first.returncode == 0, first.describe()

    rename_all(db_path, "Once")
    sandbox.clear_request_log()
    sandbox.set_faults(latency_ms=LATENCY_MS)
    stopped = stop_after_first_people_batch(
        sandbox, SyncProcess(sync_env(sandbox, db_path, url_options, **SETTINGS), workdir, "stopped"), signum)
    assert stopped, "the sync finished before its first people batch was answered"
    wait_until_quiet(sandbox, quiet_s=3 * LATENCY_MS / 1000)
    sandbox.clear_faults()
    hit = unsaved_landings(sandbox, db_path)

    rename_all(db_path, "Twice")
    rerun = run_sync(sandbox, db_path, workdir, "rerun", url_options, **SETTINGS)
    problems = [] if rerun.returncode == 0 else [f"rerun {rerun.describe()}"]
    with PlainTwenty(sandbox) as twenty:
        names = {int(p["contactId"]): f"{p['name']['firstName']} {p['name']['lastName']}"
                 for p in twenty.records("people")}
    with open_warehouse(f"duckdb:///{db_path}") as warehouse:
        rows = {r["contact_id"]: r["canonical_name"] for r in warehouse.get_rows("person", range(1, CONTACTS + 1))}
    expected = {key: f"Person{key} Twice" for key in range(1, CONTACTS + 1)}
    stale_there = sorted(k for k in expected if names.get(k) != expected[k])
    stale_here = sorted(k for k in expected if rows.get(k) != expected[k])
    if stale_there or stale_here:
        problems.append(f"{len(stale_there)} Twenty and {len(stale_here)} warehouse names are not the newest "
                        f"(e.g. Twenty {[names.get(k) for k in stale_there[:3]]}, "
                        f"warehouse {[rows.get(k) for k in stale_here[:3]]})")
    found = conflicts(db_path)
    if found:
        problems.append(f"{len(found)} conflicts reported, e.g. {found[0]}")
    return hit, problems


@pytest.mark.slow
@pytest.mark.parametrize("signum,url_options", [
    (signal.SIGKILL, ""), (signal.SIGTERM, ""),
    # BigQuery's way: the first run's journal stays beside the state, the killed run adds to it, and
    # pulled values are staged beside contacts, landing at the end of a run's pull.
    (signal.SIGKILL, "?journal_fold_share=1000000&stage_pulled=true"),
], ids=["SIGKILL", "SIGTERM", "SIGKILL-journal-kept"])
def test_a_write_that_landed_before_a_kill_is_ours_and_the_newer_warehouse_value_wins(
        sandbox: Any, tmp_path: Path, signum: int, url_options: str) -> None:
    hits = 0
    for attempt in range(ATTEMPTS):
        hit, problems = one_scenario(sandbox, tmp_path / f"attempt{attempt}", signum, url_options)
        assert not problems, f"attempt {attempt} ({hit} landed records unsaved at the kill): " + "; ".join(problems)
        hits += hit > 0
        if hits:
            break
    # Otherwise every kill came after the bookkeeping, and the case this test is about never happened.
    # (A SIGTERM the sync handles, saving what it was answered before it stops, leaves no such window.)
    if signum == signal.SIGKILL:
        assert hits, f"in {ATTEMPTS} attempts no kill landed between a batch's answer and its bookkeeping"
