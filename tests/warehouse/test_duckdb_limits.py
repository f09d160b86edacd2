"""DuckDB's memory limit, spill folder and threads: set by the project on every connection, read
back from DuckDB itself, overridable in the URL, and change detection still right under a tight limit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import pytest

from truth_forge.warehouse import Warehouse, WarehouseConfigError, open_warehouse
from truth_forge.warehouse import duckdb as duckdb_engine
from truth_forge.warehouse.duckdb import DEFAULT_MEMORY_LIMIT, DEFAULT_THREADS, ROW_GROUP_ROWS
from truth_forge.warehouse.sample_data import generate_sample_data


def settings(wh: Warehouse) -> dict[str, Any]:
    rows, _ = wh._run("SELECT current_setting('memory_limit') AS memory_limit, current_setting('threads') AS threads, "
                      "current_setting('temp_directory') AS temp_directory", (), fetch=True)
    return rows[0]


def duckdb_says(memory_limit: str) -> str:
    """How DuckDB itself reports a limit (it prints 256MB as '244.1 MiB')."""
    con = duckdb.connect()
    try:
        con.execute(f"SET memory_limit = '{memory_limit}'")
        return str(con.execute("SELECT current_setting('memory_limit')").fetchone()[0])  # type: ignore[index]
    finally:
        con.close()


def test_every_connection_gets_the_projects_limits(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    machine_default = duckdb.connect().execute("SELECT current_setting('memory_limit')").fetchone()[0]  # type: ignore[index]
    with open_warehouse(f"duckdb:///{path}") as wh:
        got = settings(wh)
        assert got["memory_limit"] == duckdb_says(DEFAULT_MEMORY_LIMIT) != machine_default
        assert got["threads"] == DEFAULT_THREADS
        assert got["temp_directory"] == f"{path}.tmp"
        # The second connection a writer thread gets shares the database and its limits.
        assert settings(wh.for_another_thread()) == got
    with open_warehouse(f"duckdb:///{path}?read_only=true") as reader:
        assert settings(reader)["memory_limit"] == duckdb_says(DEFAULT_MEMORY_LIMIT)


def test_the_url_overrides_the_limits(tmp_path: Path) -> None:
    spill = tmp_path / "spill"
    url = f"duckdb:///{tmp_path / 'w.duckdb'}?memory_limit=1GB&threads=1&temp_directory={spill}"
    with open_warehouse(url) as wh:
        assert settings(wh) == {"memory_limit": duckdb_says("1GB"), "threads": 1, "temp_directory": str(spill)}


def test_in_memory_warehouses_spill_to_a_folder_of_their_own() -> None:
    with open_warehouse("duckdb:///:memory:") as a, open_warehouse("duckdb:///:memory:") as b:
        first, second = settings(a)["temp_directory"], settings(b)["temp_directory"]
        assert first != second and "truth_forge_duckdb_" in first
        assert not Path(first).is_relative_to(Path.cwd())  # not a .tmp folder wherever the user stands


@pytest.mark.parametrize(("option", "message"), [
    ("memory_limit=lots", "memory_limit 'lots'"),
    ("memory_limit=256MB;DROP", "memory_limit"),
    ("threads=0", "threads must be a whole number"),
    ("threads=two", "threads must be a whole number"),
])
def test_bad_limits_are_config_errors(tmp_path: Path, option: str, message: str) -> None:
    with pytest.raises(WarehouseConfigError, match=message):
        open_warehouse(f"duckdb:///{tmp_path / 'w.duckdb'}?{option}")


def test_change_detection_is_right_under_a_tight_limit(tmp_path: Path) -> None:
    # 32 MB, one thread, ranges of 500: the answer must not depend on the limit.
    with open_warehouse(f"duckdb:///{tmp_path / 'w.duckdb'}") as roomy:
        generate_sample_data(roomy, contacts=3000, businesses=150, seed=3)
        roomy.change_range_rows = 10**9
        expected = [r for b in roomy.changed_rows("person", batch_size=1000) for r in b]
    with open_warehouse(f"duckdb:///{tmp_path / 'w.duckdb'}?memory_limit=32MB&threads=1&change_range_rows=500") as tight:
        assert settings(tight)["memory_limit"] == duckdb_says("32MB")
        got = [r for b in tight.changed_rows("person", batch_size=1000) for r in b]
    assert len(got) == 3000 and got == expected


@pytest.mark.slow
def test_a_first_audit_of_sixty_thousand_contacts_fits_the_default_memory(tmp_path: Path) -> None:
    """Ranges of 50,000 rows ran out of 160 MB here; the default range fits the default limit."""
    with open_warehouse(f"duckdb:///{tmp_path / 'w.duckdb'}") as wh:
        generate_sample_data(wh, contacts=60_000, businesses=3_000, seed=1)
        seen = sum(len(batch) for batch in wh.detect_changes("person", batch_size=2_000))
    assert seen == 60_000


def test_a_second_handle_closes_while_another_transaction_is_open(tmp_path: Path) -> None:
    """The push's read-ahead handle closes while the lease renewal may hold a transaction open: a
    checkpoint there would fail and abort a push that had finished."""
    with open_warehouse(f"duckdb:///{tmp_path / 'w.duckdb'}") as wh:
        twin = wh.for_another_thread()
        with wh._atomic():
            wh.set_bookkeeping("k", "v")
            twin.close()
        assert wh.get_bookkeeping("k") == "v"


def _row_groups(wh: Warehouse, table: str) -> int:
    rows, _ = wh._run(f"SELECT COUNT(DISTINCT row_group_id) AS n FROM pragma_storage_info('{table}')", (), fetch=True)
    return int(rows[0]["n"])


def test_a_files_tables_are_written_in_small_row_groups_every_time_it_is_opened(tmp_path: Path) -> None:
    """A checkpoint reloads the partly filled row group it appends to: with DuckDB's 122,880 rows a
    group, that was the sync journal's whole memory limit. DuckDB does not keep the size in the file,
    so a reopened file must get it again (opened without it, the next checkpoint merges them back)."""
    url = f"duckdb:///{tmp_path / 'w.duckdb'}"
    rows = 2 * ROW_GROUP_ROWS + 1
    for opened in (1, 2):
        with open_warehouse(url) as wh:
            wh._run("CREATE TABLE IF NOT EXISTS probe (i BIGINT)", ())
            wh._run(f"INSERT INTO probe SELECT range AS i FROM range({rows})", ())
            wh.checkpoint()
            assert _row_groups(wh, "probe") == -(-opened * rows // ROW_GROUP_ROWS)
    with open_warehouse(url) as wh, open_warehouse(url) as second:  # one file, two handles, one process
        wh.upsert_contacts([{"contact_id": 1, "canonical_name": "seen by both"}])
        assert second.count_rows("contacts") == 1


def test_a_checkpoint_during_another_handles_update_is_left_for_later(tmp_path: Path) -> None:
    """A run checkpoints when it ends, and the lease renewal (an UPDATE) or serve's writer may have a
    transaction open on another handle then: DuckDB refuses that CHECKPOINT, and a run that had
    stored everything failed for it. What is committed is in the WAL either way."""
    url = f"duckdb:///{tmp_path / 'w.duckdb'}"
    with open_warehouse(url) as wh:
        wh.set_bookkeeping("k", "v1")
        twin = wh.for_another_thread()
        assert twin is not wh
        try:
            with twin._atomic():
                twin.set_bookkeeping("k", "v2")  # an UPDATE of the row, its transaction open
                wh.checkpoint()
        finally:
            twin.close()
        assert wh.get_bookkeeping("k") == "v2"
        wh.checkpoint()  # nothing open now: this one is done
    with open_warehouse(url) as reopened:
        assert reopened.get_bookkeeping("k") == "v2"


def _wide_entries(wh: Warehouse, count: int, width: int) -> None:
    """`count` sync states whose merge bases hold `width` characters that do not compress, saved with a
    checkpoint after each request's worth (as the push's checkpoints between ranges do)."""
    import random
    import string

    rnd = random.Random(7)
    for start in range(0, count, 200):
        wh.upsert_sync_state([{"object_type": "person", "record_key": str(i), "crm_id": f"c{i}", "status": "synced",
                               "base": {"canonical_name": "".join(rnd.choices(string.ascii_letters, k=width))}}
                              for i in range(start, min(count, start + 200))])
        wh.checkpoint()


def test_a_fold_window_that_does_not_fit_the_memory_limit_is_folded_in_halves(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # 2,000 entries of 8 KB in one window need more than 48 MB here (a wider base than the limit was
    # chosen for); 1,000 fit. The failed MERGE changed nothing, so its halves give the whole fold.
    with open_warehouse(f"duckdb:///{tmp_path / 'w.duckdb'}?memory_limit=48MB") as wh:
        wh.fold_window_rows = 2_000
        _wide_entries(wh, 2_000, 8_000)
        folds: list[str] = []
        wh.statements.listeners.append(lambda st: folds.append(st.sql) if "MERGE INTO" in st.sql and "crm_sync_state" in st.sql else None)
        assert wh.fold_journal(force=True) == 2_000
        assert len(folds) == 2  # the two halves (a failed statement is not accounted)
        assert "did not fit the warehouse's memory limit: folding it in windows of 1000" in caplog.text
        states = wh.read_sync_state("person", ["0", "999", "1000", "1999"])
        assert sorted(states) == ["0", "1000", "1999", "999"] and states["1999"]["crm_id"] == "c1999"
        assert len(states["1000"]["base"]["canonical_name"]) == 8_000
        rows, _ = wh._run("SELECT COUNT(*) AS n FROM {crm_sync_state}", (), fetch=True)
        assert rows[0]["n"] == 2_000


def test_a_fold_that_does_not_fit_even_in_small_windows_says_so_and_keeps_the_journal(tmp_path: Path) -> None:
    from truth_forge.warehouse import WarehouseOutOfMemory
    from truth_forge.warehouse.state_journal import MIN_FOLD_WINDOW_ROWS

    with open_warehouse(f"duckdb:///{tmp_path / 'w.duckdb'}?memory_limit=32MB") as wh:
        wh.fold_window_rows = 2_000
        _wide_entries(wh, 2_000, 8_000)
        with pytest.raises(WarehouseOutOfMemory, match="memory_limit|Out of Memory"):
            wh.fold_journal(force=True)
        rows, _ = wh._run("SELECT COUNT(*) AS n FROM {crm_sync_journal}", (), fetch=True)
        assert rows[0]["n"] == 2_000 and MIN_FOLD_WINDOW_ROWS == 500  # every entry still there, for a larger limit
    with open_warehouse(f"duckdb:///{tmp_path / 'w.duckdb'}?memory_limit=256MB") as roomy:
        assert roomy.fold_journal(force=True) == 2_000
        assert roomy.read_sync_state("person", ["1999"])["1999"]["crm_id"] == "c1999"


def test_the_writes_made_while_ranges_are_read_are_checkpointed_once_the_log_is_large(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A push saves state while detection reads its ranges; DuckDB keeps those writes in memory until
    a checkpoint. One after every range rewrote the journal's last row group each time (a tenth of a
    first push's CPU); one once the log holds BETWEEN_RANGES_WAL_BYTES bounds what is held all the same."""
    limit = 256 * 1024  # scaled down with the data: 1,000 rows of state in ranges of 50
    monkeypatch.setattr(duckdb_engine, "BETWEEN_RANGES_WAL_BYTES", limit)
    path = tmp_path / "w.duckdb"
    wal = Path(f"{path}.wal")
    with open_warehouse(f"duckdb:///{path}?change_range_rows=50") as wh:
        generate_sample_data(wh, 1_000, 50, seed=3)
        wh.checkpoint()

        def wal_size() -> int:
            return wal.stat().st_size if wal.exists() else 0

        saved, checkpoints, ranges = [], 0, 0
        for batch in wh.changed_rows("person", batch_size=50):  # a batch a range
            ranges += 1
            if saved and wal_size() < saved[-1]:
                checkpoints += 1  # between the last range's writes and this range
            wh.upsert_sync_state([{"object_type": "person", "record_key": str(r["contact_id"]), "status": "synced",
                                   "warehouse_hash": r["row_hash"], "base": {"llm_context": "x" * 500}} for r in batch])
            saved.append(wal_size())
        assert ranges >= 20
        assert 2 <= checkpoints <= ranges // 3, saved  # once the log is large, not after every range
        assert max(saved) < 2 * limit, saved  # what waits for a checkpoint stays bounded
        assert len(wh.read_sync_state("person", range(1, 1_001))) == 1_000
