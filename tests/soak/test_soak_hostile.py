"""The bad-input corpus against a real sync: each kind alone, then all of them in one workspace.

A run must never crash or stop early on bad data (exit 0 or 1; exit 2 only means Twenty is down,
and here it is not); each case converges or fails alone with one open error naming why; every record
without bad data converges. Run by `make soak` only.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.hostile_data import CASES, KINDS, MAX_KEY, TWENTY_PEOPLE, HostileCase
from tests.soak import hostile
from tests.soak.harness import PlainTwenty, SyncRun, fresh_workspace, run_sync
from tests.soak.tally import TALLY
from truth_forge.warehouse import open_warehouse
from truth_forge.warehouse.sample_data import generate_sample_data

pytestmark = [pytest.mark.soak, pytest.mark.slow]
SETTINGS = {"twenty_batch_size": 7}


def cases_for(kind: str) -> list[HostileCase]:
    """The case of this kind, with the others of its group; the largest key comes with a person made in Twenty."""
    [case] = [c for c in CASES if c.kind == kind]
    together = [c for c in CASES if c.group and c.group == case.group] if case.group else [case]
    if case is MAX_KEY:
        together.append(TWENTY_PEOPLE[0])  # the next id allocated for it must not overflow
    return together


def sync_and_judge(sandbox: Any, workdir: Path, cases: Sequence[HostileCase], *, control: tuple[int, int],
                   runs: int) -> list[str]:
    fresh_workspace(sandbox)
    db_path = workdir / "warehouse.duckdb"
    with open_warehouse(f"duckdb:///{db_path}") as warehouse:
        generate_sample_data(warehouse, *control, seed=5)  # records with nothing wrong in them
    found: list[str] = []
    with PlainTwenty(sandbox) as twenty:
        crm_ids = hostile.load(db_path, twenty, cases)
        for n in range(1, runs + 1):
            run = run_sync(sandbox, db_path, workdir, f"run{n}", **SETTINGS)
            found += run_problems(run, n)
            verdicts, unexplained, checked = hostile.judge(db_path, twenty, cases, crm_ids)
            wrong = hostile.problems(verdicts, unexplained)
            found += [f"after run {n}: {w}" for w in wrong]
            TALLY.trial("hostile", records=checked, discrepancies=len(wrong))
    return found


def run_problems(run: SyncRun, n: int) -> list[str]:
    if run.crashed or run.returncode not in (0, 1):
        return [f"run {n} must finish (exit 0 or 1) whatever the data: {run.describe()}"]
    return []


@pytest.mark.parametrize("kind", KINDS)
def test_one_kind_of_bad_input_alone(sandbox: Any, tmp_path: Path, kind: str) -> None:
    found = sync_and_judge(sandbox, tmp_path, cases_for(kind), control=(4, 2), runs=1)
    assert not found, "\n".join(found)


def test_the_whole_corpus_at_once_twice(sandbox: Any, tmp_path: Path) -> None:
    """All of it in one workspace, synced twice: the second run must leave exactly one open error per refused record."""
    found = sync_and_judge(sandbox, tmp_path, CASES, control=(12, 3), runs=2)
    assert not found, "\n".join(found)
