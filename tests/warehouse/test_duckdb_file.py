"""DuckDB-only behaviour: the file lock between processes, URLs, persistence, read-only opens."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from truth_forge.core.config import Settings
from truth_forge.warehouse import (
    WarehouseConfigError,
    WarehouseLockedError,
    open_warehouse,
    parse_warehouse_url,
)

ROOT = Path(__file__).resolve().parents[2]

# A second process: opens the warehouse, writes, says READY, waits for a line on stdin, writes, exits.
HOLDER = textwrap.dedent(
    """
    import sys
    from truth_forge.warehouse import open_warehouse, WarehouseLockedError
    try:
        wh = open_warehouse(sys.argv[1])
    except WarehouseLockedError as exc:
        print("LOCKED", exc, flush=True)
        sys.exit(3)
    wh.upsert_contacts([{"contact_id": 100, "canonical_name": "from child"}])
    print("READY", flush=True)
    sys.stdin.readline()
    wh.upsert_contacts([{"contact_id": 101, "canonical_name": "child again"}])
    wh.close()
    print("DONE", flush=True)
    """
)


def _child(url: str) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    return subprocess.Popen(
        [sys.executable, "-c", HOLDER, url], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env=env,
    )


def test_second_process_is_refused_clearly_and_nothing_is_corrupted(tmp_path: Path) -> None:
    path = tmp_path / "shared.duckdb"
    url = f"duckdb:///{path}"
    with open_warehouse(url) as wh:
        wh.upsert_contacts([{"contact_id": 1, "canonical_name": "parent"}])
        child = _child(url)
        out, err = child.communicate(timeout=60)
        assert child.returncode == 3, (out, err)
        assert out.startswith("LOCKED") and str(path) in out and "another process" in out
        wh.upsert_contacts([{"contact_id": 2, "canonical_name": "parent again"}])

    # Now the other way round: the child holds the file, this process is refused.
    child = _child(url)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "READY"
        with pytest.raises(WarehouseLockedError) as info:
            open_warehouse(url)
        assert info.value.path == str(path) and "Wait for that process" in str(info.value)
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.flush()
        assert child.wait(timeout=60) == 0, child.stderr.read() if child.stderr else ""
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)

    with open_warehouse(url) as wh:
        names = {r["contact_id"]: r["canonical_name"] for r in wh.get_rows("person", [1, 2, 100, 101])}
        assert names == {1: "parent", 2: "parent again", 100: "from child", 101: "child again"}


def test_readers_share_a_file_read_only(tmp_path: Path) -> None:
    url = f"duckdb:///{tmp_path / 'r.duckdb'}"
    with open_warehouse(url) as wh:
        wh.upsert_contacts([{"contact_id": 1, "canonical_name": "x"}])
    with open_warehouse(url + "?read_only=true") as a, open_warehouse(url + "?read_only=true") as b:
        assert a.count_rows("contacts") == b.count_rows("contacts") == 1


def test_settings_choose_the_file_and_the_table_names(tmp_path: Path) -> None:
    settings = Settings(warehouse_url=f"duckdb:///{tmp_path / 'sub' / 's.duckdb'}",
                        warehouse_tables={"contacts": "people_master"})
    with open_warehouse(settings) as wh:
        wh.upsert_contacts([{"contact_id": 1}])
        assert "people_master" in wh._existing_columns()
    assert (tmp_path / "sub" / "s.duckdb").exists()


def test_in_memory_warehouse() -> None:
    with open_warehouse("duckdb:///:memory:") as wh:
        wh.upsert_contacts([{"contact_id": 1}])
        assert wh.count_rows("contacts") == 1


def test_an_existing_table_missing_columns_is_a_config_error(tmp_path: Path) -> None:
    import duckdb

    path = tmp_path / "theirs.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE people_master (contact_id BIGINT, full_name VARCHAR)")
    con.close()
    with pytest.raises(WarehouseConfigError, match=r"people_master.*lacks columns \['canonical_name'"):
        open_warehouse(f"duckdb:///{path}", tables={"contacts": "people_master"})


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("duckdb:///truth_forge.duckdb", ("duckdb", "truth_forge.duckdb", None, "")),
        ("duckdb:////var/data/w.duckdb", ("duckdb", "/var/data/w.duckdb", None, "")),
        ("duckdb:///:memory:", ("duckdb", ":memory:", None, "")),
        ("bigquery://my-project/crm", ("bigquery", "", "my-project", "crm")),
        ("bigquery:///crm?location=EU", ("bigquery", "", None, "crm")),
    ],
)
def test_url_parsing(url: str, expected: tuple[str, str, str | None, str]) -> None:
    parsed = parse_warehouse_url(url)
    assert (parsed.engine, parsed.path, parsed.project, parsed.dataset) == expected


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgres://x/y", "scheme must be duckdb:// or bigquery://"),
        ("duckdb://host/file.duckdb", "three slashes"),
        ("duckdb:///", "missing the file path"),
        ("bigquery://p/a/b", "bigquery://PROJECT/DATASET"),
        ("duckdb:///x.duckdb?readonly=1", "unknown options ['readonly']"),
    ],
)
def test_bad_urls_say_what_is_wrong(url: str, message: str) -> None:
    with pytest.raises(WarehouseConfigError) as info:
        parse_warehouse_url(url)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("tables", "message"),
    [
        ({"contactz": "x"}, "unknown tables ['contactz']"),
        ({"contacts": "people; DROP TABLE x"}, "not a plain table name"),
        ({"contacts": "businesses"}, "two tables to one name"),
    ],
)
def test_bad_renames_are_config_errors(tables: dict[str, str], message: str) -> None:
    with pytest.raises(WarehouseConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        open_warehouse("duckdb:///:memory:", tables=tables)
