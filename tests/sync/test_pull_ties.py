"""The pull through a tie on `updatedAt`: one large import in Twenty gives hundreds of people one
`updatedAt`, and older servers cannot page through such a tie (their next page starts at the tie's
first row again: sandbox profile "legacy", docs/twenty-facts.md "Paging through a tie"). Every run
must still succeed, bring every record once and converge; on the newest rules the pull spends no
extra request. Real sandbox over loopback HTTP, real DuckDB files."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest

from tests.fixtures.sandbox import as_person
from tests.sync.test_sync_sandbox import SCHEMA, record_writes
from truth_forge.core.crm_schema import setup_schema
from truth_forge.sync import own_writes
from truth_forge.sync.pull import walk_by_updated_at
from truth_forge.sync.runner import run_sync
from truth_forge.twenty import TwentyClient
from truth_forge.warehouse import open_warehouse
from truth_forge.warehouse.sample_data import generate_sample_data

IMPORTED = 450  # more than two pages of the pull, one `updatedAt`
CONTACTS = 40
EDITED = 5


def _client_of(server: Any) -> Iterator[TwentyClient]:
    with TwentyClient(server.base_url, server.api_key, requests_per_minute=100_000, timeout=5) as c:
        setup_schema(c, SCHEMA)
        yield c


@pytest.fixture
def legacy_twenty(legacy_sandbox: Any) -> Iterator[TwentyClient]:
    yield from _client_of(legacy_sandbox)


@pytest.fixture
def warehouse(tmp_path: Path) -> Iterator[Any]:
    with open_warehouse(f"duckdb:///{tmp_path / 'w.duckdb'}") as wh:
        wh.ensure_tables()
        generate_sample_data(wh, CONTACTS, 8, seed=7)
        yield wh


def _import_and_edit(server: Any, client: TwentyClient) -> None:
    """Someone imports IMPORTED people in Twenty (one `updatedAt` for all) and edits EDITED others."""
    existing = list(client.records.iter_records("people", order_by="id"))[:EDITED]
    with httpx.Client(base_url=server.base_url, headers=as_person(server), timeout=30) as http:
        server.freeze_clock()
        try:
            for start in range(0, IMPORTED, 200):
                body = [{"name": {"firstName": f"Imported{n}", "lastName": "Tie"},
                         "emails": {"primaryEmail": f"imported{n}@tie.example"}}
                        for n in range(start, min(start + 200, IMPORTED))]
                http.post("/rest/batch/people", json=body).raise_for_status()
        finally:
            server.freeze_clock(False)
        for person in existing:
            http.patch(f"/rest/people/{person['id']}", json={"name": {"firstName": "Edited", "lastName": "Twenty"}}).raise_for_status()


def _check_converged(wh: Any, client: TwentyClient) -> None:
    """Every Twenty person is tied to exactly one warehouse contact, carrying its key."""
    twenty = list(client.records.iter_records("people", order_by="id"))
    assert len(twenty) == CONTACTS + IMPORTED
    states = wh.read_sync_state_by_crm_id("person", [p["id"] for p in twenty])
    assert len(states) == len(twenty)
    keys = [int(s["record_key"]) for s in states.values()]
    assert len(set(keys)) == len(keys)
    assert {p["id"]: p["contactId"] for p in twenty} == {i: s["record_key"] for i, s in states.items()}
    rows = wh.get_rows("person", keys)
    assert len(rows) == len(keys)
    assert sum(1 for r in rows if r["canonical_name"] == "Edited Twenty") == EDITED


def test_a_large_import_with_one_updated_at_is_pulled_once_on_an_older_server(
        legacy_sandbox: Any, legacy_twenty: TwentyClient, warehouse: Any) -> None:
    assert run_sync(warehouse, legacy_twenty, SCHEMA).status == "succeeded"
    _import_and_edit(legacy_sandbox, legacy_twenty)

    first = run_sync(warehouse, legacy_twenty, SCHEMA)
    assert first.status == "succeeded", first.sync_errors
    assert first.counts["pull_person"]["created"] == IMPORTED  # each imported person once
    assert first.counts["pull_person"]["updated"] == EDITED
    _check_converged(warehouse, legacy_twenty)

    # The key write-back above gave batches of 200 people one `updatedAt` each: ties again.
    for _ in range(2):
        again = run_sync(warehouse, legacy_twenty, SCHEMA)
        assert again.status == "succeeded", again.sync_errors
        assert again.counts["pull_person"]["created"] == 0
        assert again.counts["requests"] < 40  # a bounded walk, not the same page forever
    legacy_sandbox.clear_request_log()
    last = run_sync(warehouse, legacy_twenty, SCHEMA)
    assert last.status == "succeeded"
    assert record_writes(legacy_sandbox) == []  # converged: nothing left to send
    _check_converged(warehouse, legacy_twenty)

    # `sync --full` walks Twenty ordered by id, which older servers page exactly.
    legacy_sandbox.clear_request_log()
    full = run_sync(warehouse, legacy_twenty, SCHEMA, full=True)
    assert full.status == "succeeded", full.sync_errors
    walks = [parse_qs(e.query) for e in legacy_sandbox.request_log if e.method == "GET" and e.path == "/rest/people"]
    assert [q["order_by"] for q in walks if "order_by" in q] == [["id"]] * math.ceil((CONTACTS + IMPORTED) / 200)
    assert record_writes(legacy_sandbox) == []
    _check_converged(warehouse, legacy_twenty)


def _change_walks(server: Any) -> list[dict[str, list[str]]]:
    """The pull's reads of changes (ordered by updatedAt) in the request log."""
    queries = [parse_qs(e.query) for e in server.request_log if e.method == "GET" and e.path == "/rest/people"]
    return [q for q in queries if q.get("order_by") == ["updatedAt"]]


def test_the_newest_rules_walk_the_same_import_with_no_extra_request(
        sandbox: Any, client: TwentyClient, warehouse: Any) -> None:
    assert run_sync(warehouse, client, SCHEMA).status == "succeeded"
    _import_and_edit(sandbox, client)
    sandbox.clear_request_log()
    first = run_sync(warehouse, client, SCHEMA, direction="pull")
    assert first.status == "succeeded", first.sync_errors
    assert first.counts["pull_person"]["created"] == IMPORTED
    assert first.counts["pull_person"]["updated"] == EDITED
    walks = _change_walks(sandbox)
    # One request per page of what changed, as before: the tie costs nothing on these rules.
    assert len(walks) == math.ceil((IMPORTED + EDITED) / 200)
    assert sum(1 for q in walks if "starting_after" not in q) == 1


EVERYONE = 'updatedAt[gte]:"2000-01-01T00:00:00.000Z"'


def _three_writes(server: Any, before: int, tie: int, after: int) -> None:
    """`before` people, then `tie` people sharing one `updatedAt`, then `after` people."""
    with httpx.Client(base_url=server.base_url, headers=as_person(server), timeout=30) as http:
        def write(prefix: str, count: int) -> None:
            for start in range(0, count, 200):
                body = [{"name": {"firstName": f"{prefix}{n}"}} for n in range(start, min(start + 200, count))]
                http.post("/rest/batch/people", json=body).raise_for_status()
        write("Before", before)
        server.freeze_clock()
        try:
            write("Tie", tie)
        finally:
            server.freeze_clock(False)
        write("After", after)


# Every batch write is a tie of its own (150 "before", then the tie, then "after" in batches of
# 200). On the newest rules: four pages. On older ones a page that ends in a tie is followed by
# that tie again; a tie read again that still runs past the page, or a page that is one tie once
# the server was seen to repeat, is read by id (one request per 200 of it) and the walk goes on.
@pytest.mark.parametrize(("profile", "tie", "requests"), [
    ("latest", 450, 4),
    ("legacy", 450, 6),  # 150+50 | 50 again+150: by id, 3 | the last 200
    ("legacy", 100, 7),  # 150+50 | 50 again+50+100 | 100 again+100: by id | 200: by id | 150
    ("legacy", 200, 8),  # 150+50 | 50 again+150: by id | 200: by id | 200: by id | 50
])
def test_the_walk_reads_every_record_once_in_bounded_requests(
        request: pytest.FixtureRequest, profile: str, tie: int, requests: int) -> None:
    server = request.getfixturevalue("sandbox" if profile == "latest" else "legacy_sandbox")
    _three_writes(server, 150, tie, 800 - 150 - tie)
    server.clear_request_log()
    with TwentyClient(server.base_url, server.api_key, requests_per_minute=100_000, timeout=5) as twenty:
        walked = [r["id"] for page in walk_by_updated_at(twenty.records, "people", EVERYONE) for r in page.records]
    assert len(walked) == 800 and len(set(walked)) == 800
    assert len(server.request_log) == requests


def test_a_tie_is_walked_with_an_apostrophe_in_our_key_name_in_the_query(legacy_sandbox: Any) -> None:
    """The walk's own conditions go before the pull's query, whose own-writes clause must stay last:
    after an apostrophe ("O'Brien sync") Twenty's parser splits no later comma, so a condition
    appended after it made the walk through a tie a 400 on every run."""
    _three_writes(legacy_sandbox, 150, 450, 200)
    ours = own_writes.clause_for("O'Brien sync")
    query = f"and({EVERYONE},{ours})"
    with TwentyClient(legacy_sandbox.base_url, legacy_sandbox.api_key, requests_per_minute=100_000, timeout=5) as twenty:
        walked = [r["id"] for page in walk_by_updated_at(twenty.records, "people", query) for r in page.records]
    assert len(walked) == 800 and len(set(walked)) == 800
