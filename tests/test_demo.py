"""`make demo` runs `truth-forge demo`: the whole loop must work, and say what it did."""

from __future__ import annotations

from pathlib import Path

from truth_forge.demo import run_demo


def test_demo_runs_the_whole_loop(tmp_path: Path) -> None:
    lines: list[str] = []
    figures = run_demo(tmp_path / "demo", contacts=30, businesses=5, say=lines.append)
    assert figures["first_sync"]["push_person"]["upserted"] == 30
    assert figures["first_sync"]["push_company"]["upserted"] == 5
    assert figures["second_sync"]["pull_person"]["updated"] == 1
    assert figures["second_sync"]["pull_person"]["created"] == 1
    assert figures["third_sync"]["push_person"]["upserted"] == 0
    assert figures["open_errors"] == 0
    assert any("as 'Grace Hopper', category A" in line for line in lines)
    assert (tmp_path / "demo" / "warehouse.duckdb").exists()
