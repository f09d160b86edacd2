"""The benchmark harness's own arithmetic and file handling (fast; no sandbox, no timing)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from bench_support import (  # noqa: E402
    END_MARKER,
    START_MARKER,
    Sample,
    bucket_empty_from,
    efficiency,
    floor_seconds,
    late_rate,
    paced_rate,
    parse_base_url,
    replace_section,
    samples_of,
    steady_rate,
)


def test_section_appended_once_then_replaced_in_place() -> None:
    doc = "# Benchmarks\n\n## Other\n\nkept\n"
    first = replace_section(doc, "## Issue 11 scoreboard\n\nv1")
    assert first.startswith(doc.rstrip("\n"))
    assert first.count(START_MARKER) == 1 and "v1" in first
    second = replace_section(first + "\n## After\n\nalso kept\n", "## Issue 11 scoreboard\n\nv2")
    assert "v1" not in second and "v2" in second
    assert "also kept" in second and "## Other\n\nkept" in second
    assert second.count(START_MARKER) == 1 and second.count(END_MARKER) == 1


def test_section_without_end_marker_is_refused() -> None:
    with pytest.raises(ValueError):
        replace_section(f"x\n{START_MARKER}\nold\n", "new")


def test_steady_rate_leaves_out_the_burst() -> None:
    # 5 burst requests at t=0, then one 60-record write every 0.6 s: 100 requests a minute.
    samples = [Sample(0.0, 60) for _ in range(5)] + [Sample(0.6 * i, 60) for i in range(1, 21)]
    per_minute, requests, seconds = steady_rate(samples, skip=5)
    assert requests == 19 and seconds == pytest.approx(0.6 * 19)
    assert per_minute == pytest.approx(6000)
    assert efficiency(per_minute, 100, 60) == pytest.approx(1.0)


def test_steady_rate_needs_a_window() -> None:
    with pytest.raises(ValueError):
        steady_rate([Sample(0.0, 60)], skip=0)


def test_samples_count_records_of_successful_batch_writes_only() -> None:
    entries = [
        {"at": 1.0, "method": "POST", "path": "/rest/batch/people", "status": 201, "batch_size": 60},
        {"at": 2.0, "method": "POST", "path": "/rest/batch/people", "status": 429, "batch_size": 60},
        {"at": 3.0, "method": "GET", "path": "/rest/people", "status": 200, "batch_size": None},
        {"at": 4.0, "method": "POST", "path": "/rest/people", "status": 201, "batch_size": 1},
    ]
    assert [s.records for s in samples_of(entries)] == [60, 0, 0, 0]


def test_floor_and_late_rate() -> None:
    assert floor_seconds(100, 200) == pytest.approx(30.0)
    # Ten items in the first half, five in the second half of a 60 s run: 10 a minute late.
    times = [1.0 * i for i in range(10)] + [31.0 + i for i in range(5)]
    assert late_rate(times, 0.0, 60.0) == pytest.approx(10.0)


def test_base_url_from_the_sandbox_ready_message() -> None:
    assert parse_base_url("export TWENTY_BASE_URL=http://127.0.0.1:41234\n") == "http://127.0.0.1:41234"
    assert parse_base_url("Twenty sandbox listening on http://127.0.0.1:1") is None


def write(left: float, took: float = 0.5) -> dict[str, Any]:
    """A batch write of 60 as the sandbox logs it: arrived at `left`, answered `took` later."""
    return {"at": left + took, "duration_ms": took * 1000, "method": "POST", "path": "/rest/batch/people",
            "status": 201, "batch_size": 60}


def test_the_window_starts_where_the_clients_bucket_is_first_empty() -> None:
    # A bucket of 3 at 60 a minute (one token a second): three tokens taken at once spend it.
    taken = [0.0, 0.01, 0.02] + [1.02 + i for i in range(5)]
    assert bucket_empty_from(taken, capacity=3, per_minute=60) == 2
    # From there: 5 writes of 60 sent over 5 s, one a second: the limit, exactly.
    assert paced_rate(taken, [write(t) for t in taken], 2) == (3600.0, 5, 5.0)
    # Slow enough that a token is always back: the limit never set the pace.
    assert bucket_empty_from([2.0 * i for i in range(6)], capacity=3, per_minute=60) is None


def test_tokens_saved_during_a_slow_start_move_the_window_later() -> None:
    # The same three tokens, after a start so slow that each found the bucket full again.
    assert bucket_empty_from([0.0, 3.0, 6.0, 6.1, 6.2, 6.3, 8.0], capacity=3, per_minute=60) == 5
    # A token that left most of one in the bucket does not start the window.
    assert bucket_empty_from([0.0, 0.5, 0.6, 1.5], capacity=2, per_minute=60) == 2


def test_a_busy_sandbox_catching_up_does_not_lift_the_rate() -> None:
    # Tokens taken once a second; the sandbox got to the last three in a rush after a stall.
    taken = [float(i) for i in range(6)]
    arrivals = [0.0, 1.0, 2.0, 4.9, 4.95, 5.0]
    assert paced_rate(taken, [write(t) for t in arrivals], 0) == (3600.0, 5, 5.0)
