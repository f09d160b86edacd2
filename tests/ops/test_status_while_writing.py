"""`status`, `runs` and `errors` while another process writes the DuckDB file (a `serve`, a sync):
DuckDB lets nobody else open it then, so they show what the writer last wrote beside it, say so, and
exit as they would have; without such a snapshot they say the file is in use (exit 2)."""

from __future__ import annotations

import json

from tests.ops.conftest import Cli
from tests.ops.test_status import bad_phone
from truth_forge.operations.snapshot import snapshot_path
from truth_forge.warehouse import open_warehouse


def test_the_commands_read_the_writers_snapshot_while_the_file_is_in_use(ready_cli: Cli, warehouse_url: str) -> None:
    bad_phone(warehouse_url)
    assert ready_cli("sync", "--quiet").returncode == 1  # one record refused: an open error
    written = snapshot_path(warehouse_url)
    assert written is not None and written.is_file()
    with open_warehouse(warehouse_url):  # another process now holds the file for writing
        status = ready_cli("status", "--offline", "--json")
        assert status.returncode == 1, status.stderr  # unhealthy, as the warehouse itself would say
        assert json.loads(status.stdout)["open_errors"] == 1
        assert "in use by another process" in status.stderr and "showing what it wrote at" in status.stderr
        runs = ready_cli("runs", "--json")
        assert runs.returncode == 0 and [r["status"] for r in json.loads(runs.stdout)] == ["partial"]
        errors = ready_cli("errors", "--open", "--json")
        assert errors.returncode == 0 and [e["record_key"] for e in json.loads(errors.stdout)] == ["4"]
        assert "push person" in ready_cli("errors", "--open").stdout  # the table, too
        written.unlink()
        locked = ready_cli("status", "--offline")
        assert locked.returncode == 2 and "in use by another process" in locked.stdout + locked.stderr
    # Once the writer is gone the warehouse itself is read again.
    assert ready_cli("status", "--offline", "--json").returncode == 1
