"""A sync through a reverse proxy that refuses request lines over 8 KB (414), as nginx does by default.

620 contacts, so that the push's read-backs and batch deletes carry 200 ids (about 9 KB as one URL):
a first sync, an update of every contact, 300 deletions and `sync --full` all exit 0 and converge.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from truth_forge.cli.main import app
from truth_forge.sandbox import SandboxConfig, SandboxServer
from truth_forge.twenty import TwentyClient
from truth_forge.warehouse import open_warehouse
from truth_forge.warehouse.sample_data import generate_sample_data

CONTACTS = 620
DELETED = range(1, 301)
PROXY_LIMIT = 8192


@pytest.fixture(scope="module")
def proxy() -> Iterator[SandboxServer]:
    with SandboxServer(SandboxConfig(rate_limit_per_minute=None, max_request_line=PROXY_LIMIT)) as server:
        yield server


@pytest.fixture
def warehouse_url(proxy: SandboxServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    for name in ("TWENTY_CRM_API_KEY", "TRUTH_FORGE_GCP_PROJECT_ID", "GOOGLE_CLOUD_PROJECT", "GCP_PROJECT",
                 "TRUTH_FORGE_TWENTY_MAX_REQUEST_LINE"):
        monkeypatch.delenv(name, raising=False)
    url = f"duckdb:///{tmp_path / 'proxy.duckdb'}"
    monkeypatch.setenv("TWENTY_API_KEY", proxy.api_key)
    monkeypatch.setenv("TWENTY_BASE_URL", proxy.base_url)
    monkeypatch.setenv("TRUTH_FORGE_WAREHOUSE_URL", url)
    monkeypatch.setenv("TRUTH_FORGE_TWENTY_REQUESTS_PER_MINUTE", "100000")
    with open_warehouse(url) as wh:
        wh.ensure_tables()
        generate_sample_data(wh, CONTACTS, 20, seed=19)
    return url


def sync(*args: str) -> dict[str, Any]:
    result = CliRunner().invoke(app, ["sync", "--json", *args])
    assert result.exit_code == 0, result.output[-3000:]
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def test_a_sync_behind_an_8_kb_proxy_converges(proxy: SandboxServer, warehouse_url: str) -> None:
    assert CliRunner().invoke(app, ["setup"]).exit_code == 0
    assert sync()["counts"]["push_person"]["upserted"] == CONTACTS

    with open_warehouse(warehouse_url) as wh:
        wh.upsert_contacts([{"contact_id": n, "canonical_name": f"Renamed Person{n}"} for n in range(1, CONTACTS + 1)])
    updated = sync()["counts"]["push_person"]
    assert updated["upserted"] == CONTACTS and updated["failed"] == 0 and updated["caught_up"] == 0

    with open_warehouse(warehouse_url) as wh:
        wh.soft_delete("person", DELETED)
    assert sync()["counts"]["push_person"]["deleted"] == len(DELETED)

    full = sync("--full")["counts"]["reconcile_person"]
    assert full["destroyed"] == 0 and full["drifted"] == 0 and full["failed"] == 0

    # Converged: Twenty holds the renamed survivors, the deleted ones are in its trash.
    with TwentyClient(proxy.base_url, proxy.api_key, requests_per_minute=100_000) as client:
        live = {int(p["contactId"]): p["name"] for p in client.records.iter_records("people")}
        trash = {int(p["contactId"]) for p in client.records.iter_records("people", filter="deletedAt[is]:NOT_NULL")}
    assert set(live) == set(range(301, CONTACTS + 1)) and trash == set(DELETED)
    assert all(name == {"firstName": "Renamed", "lastName": f"Person{n}"} for n, name in live.items())
    with open_warehouse(warehouse_url) as wh:
        rows = wh.get_rows("person", range(1, CONTACTS + 1))
    assert {r["contact_id"] for r in rows if r["deleted_at"] is not None} == set(DELETED)

    # Nothing was refused, and no request line came near the proxy's limit (the client's is 4096).
    log = proxy.request_log
    assert [e for e in log if e.status in (414, 431)] == []
    longest = max(len(e.method) + 1 + len(e.path) + (1 + len(e.query) if e.query else 0) + len(" HTTP/1.1")
                  for e in log)
    assert 3000 < longest <= 4096
