"""`/metrics` of a real `serve` parses as Prometheus' text format and carries the sync's figures;
beyond loopback the console and /metrics ask for the token (issue 21, "/metrics" and "A console")."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.sandbox.util import create_person
from tests.serve.conftest import ServeHarness, ServeProcess, serve_env, wait_until
from truth_forge.operations.snapshot import snapshot_path
from truth_forge.realtime.webhooks import OPERATIONS
from truth_forge.twenty import TwentyClient
from truth_forge.warehouse import open_warehouse
from truth_forge.warehouse.sample_data import generate_sample_data

TOKEN = "console-token-" + "x" * 24


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """(sample name, sorted labels) -> value, every family parsed by prometheus_client."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_metrics_of_a_running_serve_parse_and_count_runs_records_requests_and_webhooks(
        sandbox: Any, crm: TwentyClient, sandbox_client: httpx.Client, tmp_path: Path) -> None:
    url = f"duckdb:///{tmp_path / 'w.duckdb'}"
    with open_warehouse(url) as warehouse:
        generate_sample_data(warehouse, 5, 1, seed=3)
    env = serve_env(sandbox, url, tmp_path)
    serve = ServeProcess(env, tmp_path)  # syncs at start: 5 people and 1 company pushed
    try:
        written = snapshot_path(url)
        assert written is not None
        wait_until(lambda: serve.get("/status").json()["writer"].get("syncs", 0) >= 1 and written.is_file(),
                   "serve's first sync and its snapshot", timeout=60)
        sandbox_client.post("/rest/metadata/webhooks", json={
            "targetUrl": serve.url + "/webhooks/twenty", "operations": OPERATIONS,
            "secret": env["TWENTY_WEBHOOK_SECRET"]})
        create_person(sandbox_client, first="Grace", email="grace@example.com")
        wait_until(lambda: serve.get("/status").json()["inbox"]["applied"] >= 1, "the webhook to be applied")

        response = serve.get("/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
        got = samples(response.text)
    finally:
        assert serve.terminate()

    assert got[("truth_forge_runs", (("status", "succeeded"),))] >= 1
    assert got[("truth_forge_records_last_day", (("direction", "pushed"),))] == 6
    assert got[("truth_forge_errors_open", ())] == 0
    spent = got[("truth_forge_twenty_requests_last_day", ())]
    assert spent >= 1
    assert got[("truth_forge_twenty_requests_left_last_day", ())] == 100_000 * 1440 - spent
    assert got[("truth_forge_twenty_requests_total", ())] >= spent  # the writer's own counter, since start
    assert 0 < got[("truth_forge_twenty_budget_tokens_left", ())] <= got[("truth_forge_twenty_budget_capacity", ())]
    assert got[("truth_forge_webhook_events", (("status", "applied"),))] >= 1
    assert got[("truth_forge_webhook_events_acknowledged", ())] >= 1
    assert got[("truth_forge_webhook_events_applied_total", ())] >= 1
    # The oldest event not applied yet: none, or the echo of the key the writer just gave Grace.
    assert 0 <= got[("truth_forge_webhook_lag_seconds", ())] < 60
    assert got[("truth_forge_writer_ready", ())] == 1
    assert got[("truth_forge_warehouse_readable", ())] == 1


def test_beyond_loopback_the_console_and_metrics_ask_for_the_token(
        crm: TwentyClient, make_harness: Callable[..., ServeHarness], caplog: pytest.LogCaptureFixture) -> None:
    # The harness listens on 127.0.0.1 whatever `host` says; `host` is what serve believes it is bound to.
    caplog.set_level(logging.DEBUG)
    harness = make_harness(host="0.0.0.0", console_token=TOKEN)
    harness.wait_ready()  # the webhook side needs no console token
    for path in ("/", "/metrics", "/record?type=person&key=1"):
        assert httpx.get(harness.url + path).status_code == 401
        assert httpx.get(harness.url + path, headers={"Authorization": "Bearer " + TOKEN[:-1] + "y"}).status_code == 401
    assert httpx.get(harness.url + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200

    # A browser: ?token= once, then the cookie; the token leaves the address.
    with httpx.Client(base_url=harness.url) as browser:
        first = browser.get("/", params={"token": TOKEN})
        assert first.status_code == 303 and first.headers["location"] == "/"
        assert browser.get("/").status_code == 200
        assert browser.get("/", params={"token": "wrong"}).status_code == 200  # the cookie still holds
    assert httpx.get(harness.url + "/", params={"token": "wrong"}).status_code == 401
    # What serve logged (httpx, the test's own client, logs the URLs it asked for).
    served = [r.getMessage() for r in caplog.records if r.name.startswith(("truth_forge", "uvicorn", "starlette"))]
    assert not any(TOKEN in line for line in served)


def test_beyond_loopback_without_a_token_the_console_is_refused_but_webhooks_work(
        crm: TwentyClient, make_harness: Callable[..., ServeHarness]) -> None:
    harness = make_harness(host="0.0.0.0")
    harness.wait_ready()
    for path in ("/", "/metrics"):
        refused = httpx.get(harness.url + path)
        assert refused.status_code == 403 and "TRUTH_FORGE_CONSOLE_TOKEN" in refused.text


def test_on_loopback_no_token_is_asked(crm: TwentyClient, harness: ServeHarness) -> None:
    assert httpx.get(harness.url + "/metrics").status_code == 200
    assert httpx.get(harness.url + "/").status_code == 200
