"""A warehouse on a full disk: `truth-forge sync` ends with one line and exit 2, not a traceback.

The DuckDB file lives on a tmpfs of a few megabytes (mounted for the test; skipped where mounting is
not permitted), filled by the sample data until a sync's bookkeeping cannot fit: DuckDB fails a
checkpoint and then refuses every statement ("database has been invalidated").
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.soak.harness import fresh_workspace, sync_env
from truth_forge.operations.failures import EXIT_COULD_NOT_RUN, explain
from truth_forge.sandbox import SandboxServer
from truth_forge.warehouse import open_warehouse
from truth_forge.warehouse.sample_data import generate_sample_data

TMPFS_SIZE = "4M"
CONTACTS = 2000  # about 1.8 MB of DuckDB file: the sync's state rows do not fit in what is left


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE}", "tmpfs", str(mount_point)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a {TMPFS_SIZE} tmpfs here (needs root and mount permission): "
                    f"{mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=True)


def test_sync_on_a_full_disk_ends_in_one_line_and_exit_2(sandbox: SandboxServer, small_disk: Path) -> None:
    db_path = small_disk / "warehouse.duckdb"
    with open_warehouse(f"duckdb:///{db_path}", create=True) as warehouse:
        generate_sample_data(warehouse, CONTACTS, 10, seed=1)
    fresh_workspace(sandbox)

    done = subprocess.run([sys.executable, "-m", "truth_forge", "sync", "--log-format", "text"],
                          env=sync_env(sandbox, db_path), cwd=small_disk, capture_output=True, text=True, timeout=300)

    lines = done.stderr.strip().splitlines()
    assert done.returncode == EXIT_COULD_NOT_RUN, done.stderr[-3000:]
    assert "Traceback" not in done.stderr and "│" not in done.stderr, done.stderr[-3000:]
    assert lines[-1].startswith("error: ") and "No space left on device" in lines[-1], lines[-1]
    assert "TRUTH_FORGE_WAREHOUSE_URL" in lines[-1]


def test_os_level_write_failures_are_explained_as_exit_2() -> None:
    import errno

    explained = explain(OSError(errno.ENOSPC, "No space left on device", "/data/w.duckdb"))
    assert explained is not None and explained.exit_code == EXIT_COULD_NOT_RUN
    assert explain(OSError(errno.ENOENT, "No such file")) is None  # not a storage failure: still a bug's traceback
