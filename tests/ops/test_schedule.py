"""`sync --every`: runs start an interval apart, never overlap, never faster than the request budget
allows, and a run that cannot run does not end the schedule."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from tests.ops.conftest import Cli
from truth_forge.operations.failures import CommandFailed
from truth_forge.operations.schedule import (
    SyncAlreadyRunning,
    check_interval,
    exclusive_run,
    minimum_interval,
    parse_interval,
    run_every,
)


class FakeTime:
    """A clock the test moves: each run takes `run_seconds`, each sleep passes as asked."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []
        self.starts: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def run(self, run_seconds: float, code: int = 0):  # type: ignore[no-untyped-def]
        def once() -> int:
            self.starts.append(self.now)
            self.now += run_seconds
            return code
        return once


def test_intervals_are_read_with_their_unit() -> None:
    assert [parse_interval(t) for t in ("90s", "5m", "1.5h", "1d")] == [90, 300, 5400, 86400]
    with pytest.raises(CommandFailed, match="--every '5'"):
        parse_interval("5")


def test_the_budget_sets_the_shortest_interval() -> None:
    assert minimum_interval(100) == 60  # never more often than once a minute
    assert minimum_interval(1) == 720  # a run with nothing to do spends ~6 requests: half the budget at most
    with pytest.raises(CommandFailed, match="TRUTH_FORGE_TWENTY_REQUESTS_PER_MINUTE"):
        check_interval(30, 100)
    check_interval(60, 100)


def test_runs_start_an_interval_apart_from_start_to_start() -> None:
    time = FakeTime()
    code = run_every(300, time.run(40), max_runs=3, clock=time.clock, sleep=time.sleep)
    assert code == 0 and time.starts == [0, 300, 600] and time.sleeps == [260, 260]


def test_a_run_longer_than_the_interval_is_followed_at_once_never_doubled() -> None:
    time = FakeTime()
    run_every(60, time.run(150), max_runs=3, clock=time.clock, sleep=time.sleep)
    assert time.starts == [0, 150, 300] and time.sleeps == []


def test_the_last_runs_exit_code_is_the_schedules_and_failures_do_not_stop_it() -> None:
    time = FakeTime()
    codes = iter([2, 1, 0])

    def once() -> int:
        time.now += 1
        return next(codes)

    assert run_every(60, once, max_runs=3, clock=time.clock, sleep=time.sleep) == 0


def test_a_second_sync_in_the_same_process_is_refused_while_one_runs() -> None:
    inside, release = threading.Event(), threading.Event()
    refused: list[BaseException] = []

    def first() -> None:
        with exclusive_run():
            inside.set()
            release.wait(10)

    holder = threading.Thread(target=first)
    holder.start()
    try:
        assert inside.wait(10)
        with pytest.raises(SyncAlreadyRunning, match="never overlap"):
            with exclusive_run():
                refused.append(RuntimeError("entered"))
    finally:
        release.set()
        holder.join(10)
    assert refused == []
    with exclusive_run():  # free again once the first is done
        pass


def test_every_refuses_an_interval_the_budget_cannot_carry(ready_cli: Cli) -> None:
    done = ready_cli("sync", "--every", "10s", TRUTH_FORGE_TWENTY_REQUESTS_PER_MINUTE="100")
    assert done.returncode == 2
    assert "shorter than 60s" in done.stderr and "TRUTH_FORGE_TWENTY_REQUESTS_PER_MINUTE" in done.stderr


def test_every_runs_the_sync_and_exits_with_its_code(ready_cli: Cli) -> None:
    done = ready_cli("sync", "--every", "5m", "--max-runs", "1", "--quiet")
    assert done.returncode == 0 and done.stdout == "" and done.stderr == ""


def test_a_scheduled_run_that_cannot_run_is_logged_not_raised(ready_cli: Cli, tmp_path: Path) -> None:
    done = ready_cli("sync", "--every", "1m", "--max-runs", "1", "--log-format", "json",
                     TRUTH_FORGE_WAREHOUSE_URL=f"duckdb:///{tmp_path / 'missing.duckdb'}")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "This run could not run: the DuckDB warehouse file" in done.stderr
