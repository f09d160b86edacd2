"""A run closes the run rows a killed run left `running`, on both engines (sandbox over loopback)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from tests.sync.conftest import SCHEMA
from truth_forge.sync.objects import now_utc
from truth_forge.sync.runner import run_sync
from truth_forge.twenty import TwentyClient


def test_the_next_run_closes_a_killed_runs_row_and_only_that(warehouse: Any, client: TwentyClient) -> None:
    warehouse.ensure_tables()
    killed = warehouse.start_run("killed-run", started_at=now_utc() - dt.timedelta(minutes=10))
    done = warehouse.start_run("finished-run", started_at=now_utc() - dt.timedelta(minutes=20))
    warehouse.finish_run(done, "partial", {"errors": 1})

    result = run_sync(warehouse, client, SCHEMA)

    assert result.status == "succeeded"
    closed = warehouse.get_run(killed)
    assert closed["status"] == "aborted" and closed["finished_at"] is not None
    assert closed["counts"]["closed_by_run"] == result.run_id
    assert warehouse.get_run(done)["status"] == "partial"
    assert warehouse.get_run(result.run_id)["status"] == "succeeded"
