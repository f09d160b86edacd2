"""SIGKILL between acknowledging and applying loses nothing: the inbox is applied after a restart."""

from __future__ import annotations

import datetime as dt
import hashlib
import http.client
import json
import secrets
import sqlite3
import threading
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from tests.sandbox.util import create_person
from tests.serve.conftest import SECRET, ServeProcess, serve_env, wait_until
from truth_forge.realtime.webhooks import OPERATIONS
from truth_forge.sandbox.webhooks import sign  # the sandbox's own, independent signer
from truth_forge.twenty import TwentyClient
from truth_forge.warehouse import open_warehouse


def hold_lease_elsewhere(warehouse_url: str, owner: str) -> None:
    with open_warehouse(warehouse_url) as wh:
        assert wh.claim_lease("writer", owner, dt.timedelta(hours=1))["owner"] == owner


def test_events_acknowledged_before_a_sigkill_are_applied_after_restart(
        sandbox: Any, crm: TwentyClient, sandbox_client: httpx.Client, tmp_path: Path) -> None:
    url = f"duckdb:///{tmp_path / 'w.duckdb'}"
    # Another writer holds the lease, so the first server can acknowledge but never apply.
    hold_lease_elsewhere(url, "maintenance")
    env = serve_env(sandbox, url, tmp_path)
    first = ServeProcess(env, tmp_path, "--no-sync-on-start")
    try:
        wait_until(lambda: first.get("/readyz").json()["state"] == "waiting-for-lease", "serve to wait for the lease")
        assert first.get("/readyz").status_code == 503
        sandbox_client.post("/rest/metadata/webhooks", json={
            "targetUrl": first.url + "/webhooks/twenty", "operations": OPERATIONS, "secret": env["TWENTY_WEBHOOK_SECRET"]})
        ada = create_person(sandbox_client, first="Ada", email="ada@example.com")
        sandbox_client.patch(f"/rest/people/{ada['id']}", json={"name": {"firstName": "Augusta"}})
        deliveries = sandbox.wait_for_deliveries(2)
        assert [d.status for d in deliveries] == [200, 200]  # acknowledged
        assert first.get("/status").json()["inbox"] == {"pending": 2, "applied": 0, "failed": 0}
    finally:
        first.kill()

    with open_warehouse(url) as wh:
        assert wh.count_rows("contacts") == 0  # nothing was applied before the kill
        assert wh.release_lease("writer", "maintenance")

    second = ServeProcess(env, tmp_path, "--no-sync-on-start")
    try:
        wait_until(lambda: second.get("/status").json()["inbox"]["applied"] == 2, "the inbox to be applied")
    finally:
        assert second.terminate()
    with open_warehouse(url) as wh:
        state = wh.read_sync_state_by_crm_id("person", [ada["id"]])[ada["id"]]
        row = wh.get_rows("person", [int(state["record_key"])])[0]
        assert row["canonical_name"] == "Augusta" and row["primary_email"] == "ada@example.com"
        lease = wh.read_lease("writer")
        assert lease is not None and lease["owner"] is None  # released on the graceful shutdown


def test_a_killed_servers_lease_expires_and_the_next_one_proceeds(
        sandbox: Any, crm: TwentyClient, tmp_path: Path) -> None:
    url = f"duckdb:///{tmp_path / 'w.duckdb'}"
    env = serve_env(sandbox, url, tmp_path)
    first = ServeProcess(env, tmp_path, "--no-sync-on-start")
    wait_until(lambda: first.get("/readyz").status_code == 200, "the first server to hold the lease")
    first.kill()
    with open_warehouse(url) as wh:
        held = wh.read_lease("writer")
        assert held is not None and f"serve (server pid {first.proc.pid})" in held["owner"]

    second = ServeProcess(env, tmp_path, "--no-sync-on-start")
    try:
        wait_until(lambda: second.get("/readyz").status_code == 200, "the second server after the lease expired")
    finally:
        assert second.terminate()


def test_a_sigkill_amid_concurrent_deliveries_loses_none_that_were_acknowledged(
        sandbox: Any, tmp_path: Path) -> None:
    """Eight connections deliver at once (so the inbox commits them in groups); serve is SIGKILLed
    while answers are still coming. Every delivery answered 200 is in the inbox file afterwards."""
    url = f"duckdb:///{tmp_path / 'w.duckdb'}"
    hold_lease_elsewhere(url, "maintenance")  # nothing is applied: the inbox alone must hold them
    server = ServeProcess(serve_env(sandbox, url, tmp_path), tmp_path, "--no-sync-on-start")
    wait_until(lambda: server.get("/readyz").json()["state"] == "waiting-for-lease", "serve to wait for the lease")
    address = urlsplit(server.url)
    acknowledged: list[str] = []
    lock = threading.Lock()
    kill_after, most = 300, 2000  # bounded: the kill comes long before the last delivery

    def deliver(worker: int) -> None:
        connection = http.client.HTTPConnection(address.hostname, address.port, timeout=10)
        try:
            for i in range(most // 8):
                record = {"id": str(uuid.uuid4()), "name": {"firstName": f"W{worker}N{i}"}}
                body = json.dumps({"eventName": "person.updated", "record": record}).encode()
                ts = str(time.time_ns() // 1_000_000)
                connection.request("POST", "/webhooks/twenty", body=body, headers={
                    "Content-Type": "application/json", "X-Twenty-Webhook-Timestamp": ts,
                    "X-Twenty-Webhook-Signature": sign(SECRET, ts, body.decode()),
                    "X-Twenty-Webhook-Nonce": secrets.token_hex(16)})
                response = connection.getresponse()
                response.read()
                if response.status == 200:
                    with lock:
                        acknowledged.append(hashlib.sha256(body).hexdigest())
        except (OSError, http.client.HTTPException):
            return  # the server was killed under this request: it was never acknowledged
        finally:
            connection.close()

    workers = [threading.Thread(target=deliver, args=(w,)) for w in range(8)]
    for worker in workers:
        worker.start()
    wait_until(lambda: len(acknowledged) >= kill_after, f"{kill_after} acknowledgements", timeout=60)
    server.kill()
    for worker in workers:
        worker.join(30)
    answered = list(acknowledged)  # every 200 a client read left the server before it died

    with sqlite3.connect(tmp_path / "inbox.sqlite3") as inbox:
        stored = {row[0] for row in inbox.execute("SELECT digest FROM events")}
    assert len(answered) >= kill_after
    assert set(answered) - stored == set(), f"{len(set(answered) - stored)} acknowledged deliveries were lost"
    assert len(stored) < most  # the kill did land amid the deliveries
