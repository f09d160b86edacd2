"""`truth-forge serve` against a server that pages like older Twenty (sandbox profile "legacy"):
an import of 450 people sharing one `updatedAt`, which no webhook announced, reaches the warehouse
once through the scheduled syncs, and those syncs keep succeeding (tests/sync/test_pull_ties.py
has the walk itself)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.fixtures.sandbox import as_person
from tests.serve.conftest import ServeHarness, wait_until
from truth_forge.twenty import TwentyClient

IMPORTED = 450


@pytest.fixture
def sandbox(legacy_sandbox: Any) -> Any:
    """Every fixture of this module (serve, our client, plain HTTP) on the "legacy" server."""
    return legacy_sandbox


def test_scheduled_syncs_take_a_tied_import_once_on_an_older_server(
        make_harness: Callable[..., ServeHarness], crm: TwentyClient, sandbox: Any) -> None:
    harness = make_harness(sync_interval=1.0)
    harness.wait_ready()
    with httpx.Client(base_url=sandbox.base_url, headers=as_person(sandbox), timeout=30) as http:
        sandbox.freeze_clock()
        try:
            for start in range(0, IMPORTED, 200):
                http.post("/rest/batch/people", json=[{"name": {"firstName": f"Imported{n}", "lastName": "Tie"}}
                                                      for n in range(start, min(start + 200, IMPORTED))]
                          ).raise_for_status()
        finally:
            sandbox.freeze_clock(False)
    syncs_before = harness.status()["writer"]["syncs"]
    # The first sync brings the import and writes keys back (ties of 200 again); the next ones walk those.
    wait_until(lambda: harness.status()["writer"]["syncs"] >= syncs_before + 3, "three scheduled syncs", 60)
    assert harness.status()["writer"]["last_sync"]["status"] == "succeeded"
    imported = [p for p in crm.records.iter_records("people", order_by="id")]
    assert len(imported) == IMPORTED and all(p["contactId"] for p in imported)
    with harness.paused() as wh:
        states = wh.read_sync_state_by_crm_id("person", [p["id"] for p in imported])
        assert {i: s["record_key"] for i, s in states.items()} == {p["id"]: p["contactId"] for p in imported}
        assert len(wh.get_rows("person", [int(p["contactId"]) for p in imported])) == IMPORTED
