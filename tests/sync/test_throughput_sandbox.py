"""Request counts of the concurrent push and the learned batch size, against the sandbox over HTTP."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.sandbox import SANDBOX_TEST_KEY
from tests.sync.conftest import SCHEMA
from tests.twenty.test_concurrency_sandbox import most_at_once
from truth_forge.core.crm_schema import setup_schema
from truth_forge.sandbox import SandboxConfig, SandboxServer
from truth_forge.sync.runner import _batch_mark, run_sync
from truth_forge.twenty import TwentyClient
from truth_forge.warehouse import open_warehouse
from truth_forge.warehouse.sample_data import generate_sample_data


def warehouse(tmp_path: Path, contacts: int) -> Any:
    wh = open_warehouse(f"duckdb:///{tmp_path / 'w.duckdb'}")
    wh.ensure_tables()
    generate_sample_data(wh, contacts, 8, seed=7)
    return wh


def twenty(server: SandboxServer, **options: Any) -> TwentyClient:
    return TwentyClient(server.base_url, server.api_key, requests_per_minute=100_000, timeout=5, **options)


def people_writes(server: SandboxServer) -> list[Any]:
    return [e for e in server.request_log if e.method == "POST" and e.path == "/rest/batch/people"]


def read_backs(server: SandboxServer) -> list[Any]:
    return [e for e in server.request_log if e.method == "GET" and e.path == "/rest/people" and "id%5Bin%5D" in e.query]


@pytest.fixture(scope="module")
def docs_limit_server() -> Iterator[SandboxServer]:
    """A server that takes 60 records a batch, as Twenty's docs say."""
    with SandboxServer(SandboxConfig(api_keys=[SANDBOX_TEST_KEY], rate_limit_per_minute=None,
                                     enforce_docs_batch_limit=True)) as server:
        yield server


def test_a_changed_rerun_reads_back_in_short_requests_and_writes_full_batches_with_bookkeeping_after_each(
        sandbox: Any, tmp_path: Path) -> None:
    with warehouse(tmp_path, 450) as wh, twenty(sandbox, batch_size=60, max_in_flight=3) as client:
        setup_schema(client, SCHEMA)
        assert run_sync(wh, client, SCHEMA).status == "succeeded"
        changed = list(range(1, 251))
        wh.upsert_contacts([{"contact_id": k, "canonical_name": f"Changed Person {k}"} for k in changed])
        sandbox.clear_request_log()
        sandbox.set_faults(latency_ms=(5, 30), seed=2)
        written: list[int] = []
        result = run_sync(wh, client, SCHEMA, on_event=lambda e: written.append(e.count) if (
            e.kind == "batch_written" and e.phase == "push" and e.object_type == "person") else None)
        states = wh.read_sync_state("person", changed)
        keys = {p["contactId"] for p in client.records.iter_records("people")}
    assert result.status == "succeeded", result.sync_errors
    writes = people_writes(sandbox)
    # Read back as the update batches are cut (200, then 50), each list in requests of at most 8000
    # bytes (TRUTH_FORGE_TWENTY_MAX_REQUEST_LINE): about 170 ids a request, so 2 + 1.
    assert len(read_backs(sandbox)) == 3 and len(writes) == math.ceil(250 / 60)
    # Every write's records were saved, each once: answers handed over together are saved together
    # (a bookkeeping event per save), so there are at most as many saves as writes.
    assert sum(written) == 250 and len(written) <= len(writes)
    assert all(s["status"] == "synced" for s in states.values()) and len(states) == 250
    assert most_at_once(sandbox.request_log) <= 3
    assert len(keys) == 450


def test_a_200_server_is_sent_batches_of_200_and_that_is_remembered(sandbox: Any, tmp_path: Path) -> None:
    with warehouse(tmp_path, 250) as wh, twenty(sandbox) as client:
        setup_schema(client, SCHEMA)
        sandbox.clear_request_log()
        assert run_sync(wh, client, SCHEMA).status == "succeeded"
        remembered = wh.get_watermark(_batch_mark(client))
    assert sorted(e.batch_size for e in people_writes(sandbox)) == [50, 200]
    assert all(e.status == 201 for e in people_writes(sandbox))
    assert remembered == "200"


def test_a_60_server_is_learned_once_without_losing_or_repeating_a_record_and_the_next_run_starts_there(
        docs_limit_server: SandboxServer, tmp_path: Path) -> None:
    server = docs_limit_server
    server.reset()
    with warehouse(tmp_path, 150) as wh:
        with twenty(server) as client:
            setup_schema(client, SCHEMA)
            server.clear_request_log()
            assert run_sync(wh, client, SCHEMA).status == "succeeded"
            stored = [p["contactId"] for p in client.records.iter_records("people")]
            mark = _batch_mark(client)
        first = people_writes(server)
        assert [(e.status, e.batch_size) for e in first if e.status == 400] == [(400, 150)]
        assert sorted(e.batch_size for e in first if e.status == 201) == [30, 60, 60]
        assert len(stored) == len(set(stored)) == 150
        assert wh.get_watermark(mark) == "60"

        wh.upsert_contacts([{"contact_id": k, "canonical_name": f"Renamed Person {k}"} for k in range(1, 131)])
        server.clear_request_log()
        with twenty(server) as fresh:  # a new process: it knows the size only from the warehouse
            assert run_sync(wh, fresh, SCHEMA).status == "succeeded"
        again = people_writes(server)
        assert all(e.status == 201 for e in again) and sorted(e.batch_size for e in again) == [10, 60, 60]

        wh.upsert_contacts([{"contact_id": k, "canonical_name": f"Again Person {k}"} for k in range(1, 31)])
        server.clear_request_log()
        with twenty(server, batch_size=10) as chosen:  # the user's size wins over what was learned
            assert run_sync(wh, chosen, SCHEMA).status == "succeeded"
        assert [e.batch_size for e in people_writes(server)] == [10, 10, 10]
        assert wh.get_watermark(mark) == "60"
