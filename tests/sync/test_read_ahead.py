"""The push reads the next warehouse batch on a thread while it writes this one (sync/read_ahead.py).

What must hold: at most one batch is read ahead (and prepared there, when asked: the push maps its
rows on that thread); an error the read raises reaches the push where it
asks for that batch (not lost on the thread, not raised earlier); closing waits for a read in
progress. And in a real sync (DuckDB file, the sandbox over HTTP): a read that fails mid-push
stops the run with that error, what landed before is recorded, and the next run finishes the rest.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from truth_forge.core.crm_schema import CrmSchema
from truth_forge.sync.context import SyncEvent
from truth_forge.sync.read_ahead import ReadAhead
from truth_forge.sync.runner import run_sync
from truth_forge.twenty import TwentyClient
from truth_forge.warehouse import open_warehouse
from truth_forge.warehouse.errors import WarehouseQueryError
from truth_forge.warehouse.sample_data import generate_sample_data

SCHEMA = CrmSchema.load()


class BrokenRead(Exception):
    pass


def test_one_batch_is_read_ahead_and_no_more() -> None:
    produced: list[int] = []
    taken = threading.Event()

    def batches() -> Iterator[int]:
        for n in range(5):
            produced.append(n)
            yield n

    ahead = ReadAhead(batches())
    try:
        seen = []
        for batch in ahead:
            taken.set()
            # While the caller holds batch n, the thread may have read n + 1, never n + 2.
            assert len(produced) <= batch + 2
            seen.append(batch)
    finally:
        ahead.close()
    assert seen == [0, 1, 2, 3, 4]


def test_each_batch_is_prepared_on_the_reading_thread_and_handed_over_prepared() -> None:
    caller = threading.current_thread()

    def prepare(batch: list[int]) -> tuple[list[int], bool]:
        return [n * 10 for n in batch], threading.current_thread() is caller

    ahead = ReadAhead([[1, 2], [3]], prepare=prepare)
    try:
        seen = list(ahead)
    finally:
        ahead.close()
    assert seen == [([10, 20], False), ([30], False)]  # prepared, and not on the caller's thread


def test_an_error_reading_the_next_batch_is_raised_where_that_batch_is_asked_for() -> None:
    def batches() -> Iterator[str]:
        yield "first"
        raise BrokenRead("the warehouse went away")

    ahead = ReadAhead(batches())
    try:
        assert next(ahead) == "first"  # the first batch comes whole; the failed read is the next one
        with pytest.raises(BrokenRead, match="went away"):
            next(ahead)
        with pytest.raises(StopIteration):
            next(ahead)
    finally:
        ahead.close()


def test_closing_waits_for_the_read_in_progress_and_logs_its_error(caplog: pytest.LogCaptureFixture) -> None:
    reading, release = threading.Event(), threading.Event()
    finished = []

    def batches() -> Iterator[str]:
        yield "first"
        reading.set()
        release.wait(10)
        finished.append(True)
        raise BrokenRead("failed while the push was stopping")

    ahead = ReadAhead(batches())
    assert next(ahead) == "first"
    assert reading.wait(10)
    threading.Timer(0.2, release.set).start()
    ahead.close()  # the push stops here for a reason of its own
    assert finished == [True]
    assert "failed while the push was stopping" in caplog.text


CONTACTS = 1400  # three read batches of 600


def test_a_read_failing_mid_push_stops_the_run_with_its_error_and_the_next_run_finishes(
        sandbox: Any, client: TwentyClient, tmp_path: Path) -> None:
    # `client`: the sandbox set up with our fields.
    url = f"duckdb:///{tmp_path / 'w.duckdb'}?change_range_rows=300"
    with open_warehouse(url) as warehouse:
        generate_sample_data(warehouse, CONTACTS, 20, seed=5)
        written = {"person": 0}

        def break_the_table(event: SyncEvent) -> None:
            # After the first people landed, the contacts table goes away: a later range's read fails.
            if event.kind == "batch_written" and event.object_type == "person" and not written["person"]:
                warehouse._run("ALTER TABLE {contacts} RENAME TO contacts_away", ())
            if event.kind == "batch_written" and event.object_type == "person":
                written["person"] += event.count

        # Small writes, so answers are handed over (and the table renamed) while batches are still read.
        with TwentyClient(sandbox.base_url, sandbox.api_key, requests_per_minute=100_000, batch_size=20) as small, \
                pytest.raises(WarehouseQueryError, match="contacts"):
            run_sync(warehouse, small, SCHEMA, on_event=break_the_table)
        assert 0 < written["person"] < CONTACTS
        saved = warehouse.read_sync_state("person", range(1, CONTACTS + 1))
        synced = [k for k, s in saved.items() if s.get("status") in ("synced", "pending")]
        assert len(synced) == written["person"]  # every person that landed is recorded
        runs = warehouse._run("SELECT status FROM {crm_sync_runs}", (), fetch=True)[0]
        assert [r["status"] for r in runs] == ["aborted"]

        warehouse._run("ALTER TABLE contacts_away RENAME TO " + warehouse.tables["contacts"], ())
        again = run_sync(warehouse, client, SCHEMA)
        assert again.status == "succeeded", again.sync_errors
        assert again.counts["push_person"]["upserted"] == CONTACTS - written["person"]
    with TwentyClient(sandbox.base_url, sandbox.api_key, requests_per_minute=100_000) as twenty:
        people = list(twenty.records.iter_records("people"))
    assert sorted(int(p["contactId"]) for p in people) == list(range(1, CONTACTS + 1))  # each once
