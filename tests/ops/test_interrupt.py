"""Ctrl-C (SIGINT) stops `truth-forge sync`, with or without `--every`, with exit 130; the run row is
closed as `interrupted` with no open error row (nothing needs fixing) and no blank "run failed:" line.

The same method as the SIGTERM tests (tests/sync/test_stop_signals.py): a slowed sandbox, the signal
sent once some people batches have landed, so it arrives in the middle of a run (at times in the middle
of a DuckDB statement, which DuckDB reports as its own "Query interrupted" error)."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest

from tests.soak.harness import SyncProcess, sync_env, wait_until_quiet
from tests.sync.test_stop_signals import LATENCY_MS, SETTINGS, WAIT_S, _runs, _wait_for_batches, prepare
from truth_forge.warehouse import open_warehouse


@pytest.mark.parametrize("batches", [1, 3])
@pytest.mark.parametrize("args", [(), ("--every", "1h")], ids=["once", "every"])
def test_ctrl_c_in_a_run_exits_130_and_marks_it_interrupted(sandbox: Any, tmp_path: Path,
                                                             args: tuple[str, ...], batches: int) -> None:
    db_path = prepare(sandbox, tmp_path)
    sandbox.set_faults(latency_ms=LATENCY_MS)
    try:
        process = SyncProcess(sync_env(sandbox, db_path, **SETTINGS), tmp_path, "interrupted",
                              ("--log-format", "text", *args))
        _wait_for_batches(sandbox, process.proc, batches)
        process.proc.send_signal(signal.SIGINT)
        ended = process.wait(WAIT_S)
        wait_until_quiet(sandbox, quiet_s=3 * LATENCY_MS / 1000)
    finally:
        sandbox.clear_faults()
    assert ended.returncode == 130, ended.describe()
    assert not ended.crashed, ended.stderr[-2000:]
    assert "failed: \n" not in ended.stderr + "\n" and "run   failed" not in ended.stderr, ended.stderr[-2000:]
    [run] = _runs(db_path)
    assert run["status"] == "interrupted" and run["finished_at"] is not None
    with open_warehouse(f"duckdb:///{db_path}") as warehouse:
        assert warehouse.open_errors() == []
