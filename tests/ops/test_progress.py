"""Watching a sync: the time left in requests at the budget, bars on a terminal, JSON lines in a
pipe, a summary table, and silence for cron."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from rich.console import Console

from tests.ops.conftest import Cli
from truth_forge.core.crm_schema import CrmSchema
from truth_forge.operations.progress import ProgressModel, RichProgress, Task, estimate_push, eta_seconds
from truth_forge.sync.context import SyncEvent
from truth_forge.sync.runner import run_sync
from truth_forge.twenty import TwentyClient
from truth_forge.warehouse import open_warehouse


def test_time_left_is_requests_at_the_budget_or_slower_when_twenty_is_slower() -> None:
    assert eta_seconds(50, 100) == pytest.approx(30.0)  # 50 requests at 100 a minute
    assert eta_seconds(50, 100, observed_per_second=0.5) == pytest.approx(100.0)  # Twenty answers slower
    assert eta_seconds(50, 100, observed_per_second=10.0) == pytest.approx(30.0)  # never faster than the budget


def test_a_pull_bar_counts_pages_from_twentys_total_then_its_own_cost() -> None:
    model = ProgressModel(requests_per_minute=60, clock=lambda: 0.0)
    model.apply(SyncEvent("run_started", requests=10))
    task = model.apply(SyncEvent("page_read", phase="pull", object_type="person", count=200, total=1000, requests=11))
    assert task is not None and (task.done, task.total, task.requests) == (200, 1000, 1)
    assert task.remaining_requests(batch_size=60) == 4  # 800 records at one request per 200
    assert model.eta(task) == pytest.approx(4.0)  # at 60 a minute


def test_a_push_bar_starts_from_the_estimate_and_grows_past_it() -> None:
    model = ProgressModel(requests_per_minute=100, batch_size=60, push_estimates={"person": 120}, clock=lambda: 0.0)
    model.apply(SyncEvent("run_started"))
    started = model.apply(SyncEvent("phase_started", phase="push", object_type="person"))
    assert started is not None and started.total == 120
    assert started.remaining_requests(60) == 3  # two writes and at most one read-back of 200, before any is seen
    model.apply(SyncEvent("batch_written", phase="push", object_type="person", count=60, requests=1))
    task = model.apply(SyncEvent("batch_written", phase="push", object_type="person", count=60, requests=2))
    edited = model.apply(SyncEvent("records_failed", phase="push", object_type="person", count=5, requests=3))
    # Past the estimate: rows edited since their last sync, found by change detection; no guess at the rest.
    assert task is edited and (edited.done, edited.failed, edited.total) == (120, 5, None)
    assert model.eta(edited) is None
    finished = model.apply(SyncEvent("phase_finished", phase="push", object_type="person", requests=3))
    assert finished is not None and finished.finished and finished.total == 125
    assert finished.remaining_requests(60) == 0


def test_the_cost_seen_so_far_sets_the_rest_of_the_estimate() -> None:
    task = Task("push", "person", done=120, total=600, requests=2)  # creates: one request per batch of 60
    assert task.remaining_requests(batch_size=60) == 8


def test_the_push_estimate_is_every_row_on_a_first_sync_and_none_after(sandbox: Any, client: TwentyClient,
                                                                        store: Any) -> None:
    assert estimate_push(store) == {"person": 40, "company": 8}
    run_sync(store, client, CrmSchema.load())
    assert estimate_push(store) == {"person": 0, "company": 0}


def sync_on_a_terminal(client: TwentyClient, store: Any) -> tuple[Any, str]:
    """A sync with its progress bars drawn on a 140-column terminal: the result and the screen."""
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=140, color_system=None)
    model = ProgressModel(requests_per_minute=100_000, batch_size=client.records.batch_size,
                          push_estimates=estimate_push(store))
    with RichProgress(model, console) as bars:
        result = run_sync(store, client, CrmSchema.load(), on_event=bars)
    return result, screen.getvalue()


def test_bars_on_a_terminal_show_each_phase_its_records_and_requests(sandbox: Any, client: TwentyClient,
                                                                      store: Any) -> None:
    result, shown = sync_on_a_terminal(client, store)
    assert result.status == "succeeded"
    for label in ("pull company", "pull person", "push company", "push person"):
        assert label in shown
    assert "40/40" in shown and "8/8" in shown and "requests" in shown


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_a_pipe_gets_json_lines_ending_with_the_summary(ready_cli: Cli) -> None:
    done = ready_cli("sync")  # stdout is a pipe: JSON lines without being asked
    assert done.returncode == 0, done.stderr
    events = json_lines(done.stdout)
    kinds = [e["event"] for e in events]
    assert kinds[0] == "run_started" and kinds[-2:] == ["run_finished", "summary"]
    pages = [e for e in events if e["event"] == "page_read" and e["object_type"] == "person"]
    assert pages and all("total" in e and "eta_seconds" in e for e in pages)
    written = [e for e in events if e["event"] == "batch_written" and e["object_type"] == "person"]
    assert sum(e["count"] for e in written) == 30 and written[-1]["done"] == 30
    assert events[-1]["status"] == "succeeded" and events[-1]["counts"]["push_person"]["upserted"] == 30
    assert all(json.loads(line) for line in done.stderr.splitlines())  # the logs are JSON lines too


def test_text_output_ends_with_a_summary_table_not_a_dict(ready_cli: Cli) -> None:
    done = ready_cli("sync", "--log-format", "text")
    assert done.returncode == 0, done.stderr
    assert "succeeded" in done.stdout and "push person" in done.stdout and "upserted" in done.stdout
    assert "{'" not in done.stdout + done.stderr  # no Python dict anywhere


def test_quiet_says_nothing_when_all_synced_and_one_line_when_not(ready_cli: Cli, warehouse_url: str) -> None:
    done = ready_cli("sync", "--quiet")
    assert done.returncode == 0 and done.stdout == "" and done.stderr == ""
    with open_warehouse(warehouse_url) as wh:
        wh.upsert_contacts([{"contact_id": 4, "primary_phone": "12", "additional_phones": []}])
    partial = ready_cli("sync", "--quiet")
    assert partial.returncode == 1 and partial.stdout == ""
    [line] = partial.stderr.splitlines()
    assert line.startswith("sync partial: 1 errors") and "truth-forge errors --run" in line


def test_an_estimate_of_no_new_rows_is_an_unknown_total_not_zero() -> None:
    model = ProgressModel(requests_per_minute=100, push_estimates={"person": 0}, clock=lambda: 0.0)
    model.apply(SyncEvent("run_started"))
    started = model.apply(SyncEvent("phase_started", phase="push", object_type="person"))
    assert started is not None and started.total is None


def test_an_update_run_counts_detections_candidates_as_its_total() -> None:
    model = ProgressModel(requests_per_minute=60, batch_size=60, push_estimates={"person": 0}, clock=lambda: 0.0)
    model.apply(SyncEvent("run_started"))
    model.apply(SyncEvent("phase_started", phase="push", object_type="person"))
    found = model.apply(SyncEvent("changes_found", phase="push", object_type="person", total=720))
    assert found is not None and found.total == 720 and model.eta(found) is not None
    model.apply(SyncEvent("records_unchanged", phase="push", object_type="person", count=120))
    task = model.apply(SyncEvent("batch_written", phase="push", object_type="person", count=60, requests=2))
    assert task is not None and (task.seen, task.total) == (180, 720)
    assert task.remaining_requests(60) == 18  # 540 left at the 2 requests per 60 seen so far
    assert model.eta(task) == pytest.approx(18.0)


def test_an_update_run_has_a_total_and_time_left_in_its_json_lines(ready_cli: Cli, warehouse_url: str) -> None:
    assert ready_cli("sync", "--quiet").returncode == 0
    with open_warehouse(warehouse_url) as wh:
        wh.upsert_contacts([{"contact_id": key, "canonical_name": f"Renamed {key}"} for key in range(1, 11)])
        # Stamped again without a change: candidates that need no write.
        same = wh.get_rows("person", range(11, 16))
        wh.upsert_contacts([{"contact_id": r["contact_id"], "category_code": r["category_code"]} for r in same])

    done = ready_cli("sync")

    assert done.returncode == 0, done.stderr
    push = [e for e in json_lines(done.stdout) if e.get("phase") == "push" and e.get("object_type") == "person"]
    [found] = [e for e in push if e["event"] == "changes_found"]
    written = [e for e in push if e["event"] == "batch_written"]
    unchanged = sum(e["count"] for e in push if e["event"] == "records_unchanged")
    assert sum(e["count"] for e in written) == 10 and unchanged >= 5
    assert found["total"] == 10 + unchanged  # every candidate is written or found unchanged
    assert all(e["total"] == found["total"] and e["eta_seconds"] is not None for e in written)


def test_an_update_runs_bar_shows_the_candidates_not_a_total_of_zero(sandbox: Any, client: TwentyClient,
                                                                    store: Any) -> None:
    run_sync(store, client, CrmSchema.load())
    store.upsert_contacts([{"contact_id": key, "canonical_name": f"Renamed {key}"} for key in range(1, 6)])
    result, screen = sync_on_a_terminal(client, store)
    assert result.status == "succeeded" and result.counts["push_person"]["upserted"] == 5
    push = [line for line in screen.splitlines() if "push person" in line]
    assert push and not any("/0 " in line or "counting" in line for line in push)
    assert "5/5" in push[-1]
