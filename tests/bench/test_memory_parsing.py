"""Row 7 reads bench_memory.py's per-size JSON comments; its cell states what was measured."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from scoreboard import memory_cell, memory_details  # noqa: E402

OUTPUT = """# x86_64, 2 cores
| contacts | sync status |
|---:|---|
| 10,000 | succeeded |

<!-- 10,000: {"contacts": 10000, "rss_peak_mib": 180.5, "growth_mib_per_1k": 0.01} -->

<!-- 1,000,000: {"contacts": 1000000, "rss_peak_mib": 400.0, "growth_mib_per_1k": 0.002} -->
"""


def test_details_by_size() -> None:
    details = memory_details(OUTPUT)
    assert sorted(details) == [10_000, 1_000_000]
    assert details[10_000]["rss_peak_mib"] == 180.5


def test_cell_judges_only_a_measured_million() -> None:
    cell, ok = memory_cell({"sizes": memory_details(OUTPUT)})
    assert "400 MiB at 1,000,000" in cell and ok is True
    small = {n: d for n, d in memory_details(OUTPUT).items() if n < 1_000_000}
    cell, ok = memory_cell({"sizes": small})
    assert ok is None and "1M not run" in cell
    assert memory_cell({"sizes": {}}) == ("see the table below", None)
