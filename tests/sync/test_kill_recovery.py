"""A sync killed after any answered request recovers: the next run converges, nothing lost, nothing twice.

Method. The sandbox runs in this process and answers every request after a fixed latency; the sync runs
as a real `truth-forge sync` subprocess (its own DuckDB connection, its own HTTP client). A reference run
counts N, the record requests (reads and writes, not the schema check) a whole first sync is answered.
Then, for every k in 1..N, from a fresh workspace and a fresh warehouse: start the sync, poll the
sandbox's request log until it holds k answered record requests, SIGKILL the process at once. The
sandbox logs an answer just before its last byte leaves and sleeps the latency before it reads the
next request's body, so the kill lands after the k-th request took effect and before the (k+1)-th does:
a (k+1)-th request already sent finds its client gone when the latency is over and is not applied. Each
k is killed at two moments (KILL_MOMENTS): at once, when the sync has most likely not read the k-th
answer (the write landed, the sync never learnt it), and half a latency later, when it has read it and
saved what it learnt. Where the sync is inside its own work between two requests is not controlled, on
purpose. The test waits for the sandbox to go quiet, then runs the sync once more, without latency, to
its end. That run must exit 0, and both sides must agree (tests/soak/convergence.py): every contact in
Twenty once, under
its `contactId`; every person created in Twenty given a `contact_id` and the same `contactId` there; all
field values equal; no open errors. The first sync pulls three people made in Twenty (contact ids
allocated, keys written back), then pushes 4 companies and 16 contacts in batches of 3, so the kill
points cover the pull, the key write-back and every push batch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.soak.convergence import check_convergence, summarize
from tests.soak.harness import (
    PlainTwenty,
    SyncProcess,
    fresh_workspace,
    record_requests,
    run_sync,
    sync_env,
    wait_until_quiet,
)
from truth_forge.warehouse import open_warehouse
from truth_forge.warehouse.sample_data import generate_sample_data

CONTACTS, COMPANIES, SEED = 16, 4, 11
LATENCY_MS = 100
SETTINGS = {"twenty_batch_size": 3}
# How long after the k-th answer the kill comes: at once (the sync has most likely not read that answer
# yet), or half a latency later (it has read it and saved what it learnt, and its next request waits).
KILL_MOMENTS = {"answer unread": 0.0, "answer read": LATENCY_MS / 2000}
TWENTY_PEOPLE = [
    {"name": {"firstName": "Ada", "lastName": "Lovelace"}, "emails": {"primaryEmail": "ada@example.org"},
     "categoryCode": "E", "subcategoryCode": "E1_MENTORS"},
    {"name": {"firstName": "Alan", "lastName": "Turing"}, "emails": {"primaryEmail": "alan@example.org"},
     "phones": {"primaryPhoneNumber": "4155550123", "primaryPhoneCallingCode": "+1",
                "primaryPhoneCountryCode": "US"}},
    {"name": {"firstName": "Grace", "lastName": "Hopper"}, "relationshipCategory": "COLLEAGUE"},
]


def prepare(sandbox: Any, workdir: Path) -> Path:
    """A fresh workspace with three people typed into Twenty, and a fresh warehouse; returns the DuckDB file."""
    fresh_workspace(sandbox)
    with PlainTwenty(sandbox) as twenty:
        for person in TWENTY_PEOPLE:
            twenty.create("people", person)
    sandbox.clear_request_log()
    db_path = workdir / "warehouse.duckdb"
    with open_warehouse(f"duckdb:///{db_path}") as warehouse:
        generate_sample_data(warehouse, CONTACTS, COMPANIES, seed=SEED)
    return db_path


def converged(sandbox: Any, db_path: Path) -> list[Any]:
    with PlainTwenty(sandbox) as twenty:
        return check_convergence(db_path, twenty, live_people=CONTACTS + len(TWENTY_PEOPLE),
                                 live_companies=COMPANIES)


def kill_and_recover(sandbox: Any, workdir: Path, k: int, grace_s: float) -> str | None:
    """One kill point; a description of what went wrong, or None."""
    db_path = prepare(sandbox, workdir)
    sandbox.set_faults(latency_ms=LATENCY_MS)
    process = SyncProcess(sync_env(sandbox, db_path, **SETTINGS), workdir, "killed")
    killed = process.kill_after(sandbox, k, grace_s=grace_s)
    if killed.killed_after is None:
        return f"the sync finished ({killed.describe()}) before its {k}th answered request"
    wait_until_quiet(sandbox, quiet_s=3 * LATENCY_MS / 1000)
    sandbox.clear_faults()
    rerun = run_sync(sandbox, db_path, workdir, "rerun", **SETTINGS)
    if rerun.returncode != 0:
        return f"rerun {rerun.describe()}"
    found = converged(sandbox, db_path)
    return f"{len(found)} discrepancies:\n{summarize(found, 8)}" if found else None


@pytest.mark.slow
def test_a_sync_killed_after_any_answered_request_converges_on_the_next_run(sandbox: Any, tmp_path: Path) -> None:
    db_path = prepare(sandbox, tmp_path / "reference")
    sandbox.set_faults(latency_ms=LATENCY_MS)
    reference = run_sync(sandbox, db_path, tmp_path / "reference", "sync", **SETTINGS)
    answered = [f"{e.method} {e.path}" for e in record_requests(sandbox)]
    assert reference.returncode == 0, reference.describe()
    assert converged(sandbox, db_path) == []
    # The kill points must reach every phase: the pull, the key write-back, and several push batches.
    assert answered.count("POST /rest/batch/people") >= 6 and "POST /rest/batch/companies" in answered, answered

    failures = []
    for k in range(1, len(answered) + 1):
        for moment, grace_s in KILL_MOMENTS.items():
            problem = kill_and_recover(sandbox, tmp_path / f"k{k}-{grace_s}", k, grace_s)
            if problem:
                failures.append(f"- killed after request {k} ({answered[k - 1]}), {moment}: {problem}")
    assert not failures, f"{len(failures)} of {2 * len(answered)} kills did not recover:\n" + "\n".join(failures)
