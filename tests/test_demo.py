"""`make demo` runs `truth-forge demo`: the whole loop must work, and say what it did."""

from __future__ import annotations

from pathlib import Path

import pytest

from truth_forge.cli.demo import MARKER, DemoFolderInUse, prepare_workdir, run_demo


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


def test_demo_refuses_a_folder_it_did_not_make_and_deletes_nothing(tmp_path: Path) -> None:
    """`--workdir .` in a project must not wipe the project: a non-empty folder without the demo's
    marker is refused through the real CLI, with the configuration exit code, and left as it was."""
    import subprocess
    import sys

    project = tmp_path / "project"
    project.mkdir()
    (project / "notes.txt").write_text("mine")
    (project / "warehouse.duckdb").write_text("my own warehouse, not the demo's")
    result = subprocess.run([sys.executable, "-m", "truth_forge.cli.main", "demo", "--workdir", str(project),
                             "--contacts", "5"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "not empty and was not made by `truth-forge demo`" in result.stderr
    assert "Traceback" not in result.stderr
    assert (project / "notes.txt").read_text() == "mine"
    assert (project / "warehouse.duckdb").read_text() == "my own warehouse, not the demo's"


def test_a_second_demo_replaces_only_its_own_files(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    run_demo(workdir, contacts=5, businesses=2, say=lambda line: None)
    assert (workdir / MARKER).exists()
    (workdir / "kept.txt").write_text("added by the user after the first demo")
    figures = run_demo(workdir, contacts=5, businesses=2, say=lambda line: None)
    assert figures["first_sync"]["push_person"]["upserted"] == 5  # a fresh warehouse, not the old one
    assert (workdir / "kept.txt").read_text() == "added by the user after the first demo"


def test_a_file_given_as_workdir_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "a-file"
    path.write_text("x")
    with pytest.raises(DemoFolderInUse):
        prepare_workdir(path)
    assert path.read_text() == "x"


def test_the_default_folder_an_older_demo_left_is_reused(tmp_path: Path) -> None:
    old = tmp_path / ".demo"
    old.mkdir()
    (old / "warehouse.duckdb").write_text("an older demo's warehouse")
    prepare_workdir(old)
    assert (old / MARKER).exists() and not (old / "warehouse.duckdb").exists()
    elsewhere = tmp_path / "mine"
    elsewhere.mkdir()
    (elsewhere / "warehouse.duckdb").write_text("somebody's warehouse")
    with pytest.raises(DemoFolderInUse):
        prepare_workdir(elsewhere)
    assert (elsewhere / "warehouse.duckdb").read_text() == "somebody's warehouse"
