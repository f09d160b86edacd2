"""A sync through a reverse proxy that refuses request lines over 8 KB (414), as nginx does by default.

620 contacts, so that the push's read-backs and batch deletes carry 200 ids (about 9 KB as one URL):
a first sync, an update of every contact, 300 deletions and `sync --full` all exit 0 and converge.
Behind a proxy set to 4 KB, under the client's default limit, the push's read-back of 100 ids is
refused once (414), and read again in requests that fit.
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
    return warehouse_behind(proxy, monkeypatch, tmp_path, CONTACTS)


def warehouse_behind(proxy: SandboxServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, contacts: int) -> str:
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
        generate_sample_data(wh, contacts, 20, seed=19)
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

    # Nothing was refused, and no request line went past the client's limit (8000 bytes).
    log = proxy.request_log
    assert [e for e in log if e.status in (414, 431)] == []
    assert 7000 < max(map(request_line, log)) <= 8000


def request_line(e: Any) -> int:
    return len(e.method) + 1 + len(e.path) + (1 + len(e.query) if e.query else 0) + len(" HTTP/1.1")


def test_a_read_back_a_4_kb_proxy_refuses_is_read_again_in_requests_that_fit(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with SandboxServer(SandboxConfig(rate_limit_per_minute=None, max_request_line=4096)) as proxy:
        url = warehouse_behind(proxy, monkeypatch, tmp_path, 150)
        assert CliRunner().invoke(app, ["setup"]).exit_code == 0
        assert sync()["counts"]["push_person"]["upserted"] == 150
        with open_warehouse(url) as wh:
            wh.upsert_contacts([{"contact_id": n, "canonical_name": f"Renamed Person{n}"} for n in range(1, 101)])
        proxy.clear_request_log()
        updated = sync()["counts"]["push_person"]
        assert updated["upserted"] == 100 and updated["failed"] == 0
        # The read-back of the 100 changed people by `id[in]` (about 4.6 KB) was refused once, then read
        # in requests of at most half the refused line; nothing else was refused, and every write passed.
        reads = [e for e in proxy.request_log if e.method == "GET" and e.path == "/rest/people" and "id%5Bin%5D" in e.query]
        assert [e.status for e in reads][0] == 414 and len(reads) >= 3
        assert all(e.status == 200 and request_line(e) <= request_line(reads[0]) // 2 for e in reads[1:])
        assert [e for e in proxy.request_log if e.status in (414, 431)] == reads[:1]
        with TwentyClient(proxy.base_url, proxy.api_key, requests_per_minute=100_000) as client:
            names = {int(p["contactId"]): p["name"]["firstName"] for p in client.records.iter_records("people")}
        assert sum(name == "Renamed" for name in names.values()) == 100
