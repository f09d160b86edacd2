"""Run rows left `running` by a process that died are closed by the next writer, on both engines."""

from __future__ import annotations

import datetime as dt

from truth_forge.warehouse.base import Warehouse

T0 = dt.datetime(2026, 5, 1, 12, 0, tzinfo=dt.UTC)


def test_running_rows_started_before_the_lease_was_sought_are_closed_as_aborted(warehouse: Warehouse) -> None:
    dead = warehouse.start_run("dead", started_at=T0)
    finished = warehouse.start_run("finished", started_at=T0)
    warehouse.finish_run(finished, "succeeded", {"errors": 0})
    current = warehouse.start_run("current", started_at=T0 + dt.timedelta(minutes=5))

    closed = warehouse.close_stale_runs(before=T0 + dt.timedelta(minutes=1), closed_by=current)

    assert closed == 1
    dead_row, finished_row, current_row = (warehouse.get_run(r) for r in (dead, finished, current))
    assert dead_row is not None and dead_row["status"] == "aborted" and dead_row["finished_at"] is not None
    assert dead_row["counts"]["closed_by_run"] == "current"
    assert finished_row is not None and finished_row["status"] == "succeeded"  # a closed run stays as it was
    assert current_row is not None and current_row["status"] == "running"  # ours, started after: untouched
    assert warehouse.close_stale_runs(before=T0 + dt.timedelta(minutes=1), closed_by=current) == 0
