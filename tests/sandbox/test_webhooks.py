"""Webhooks: registration, operation matching, payload shape and signatures (reference §7)."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from tests.sandbox.util import create_person
from truth_forge.sandbox import SandboxServer


@dataclass
class Receiver:
    """A loopback HTTP endpoint that keeps the raw bytes and headers of every POST."""

    url: str
    status: int = 200
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    arrived: threading.Condition = field(default_factory=threading.Condition)

    def wait(self, count: int, timeout: float = 5.0) -> list[tuple[dict[str, str], bytes]]:
        with self.arrived:
            self.arrived.wait_for(lambda: len(self.received) >= count, timeout)
            return list(self.received)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    holder: dict[str, Receiver] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server naming)
            raw = self.rfile.read(int(self.headers["Content-Length"]))
            target = holder["r"]
            with target.arrived:
                target.received.append(({k.lower(): v for k, v in self.headers.items()}, raw))
                target.arrived.notify_all()
            self.send_response(target.status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            return  # keep test output clean; deliveries are asserted on instead

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    holder["r"] = Receiver(url=f"http://127.0.0.1:{server.server_address[1]}/hook")
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    yield holder["r"]
    server.shutdown()
    server.server_close()


def verify(secret: str, headers: dict[str, str], raw: bytes) -> bool:
    ts = headers["x-twenty-webhook-timestamp"]
    mac = hmac.new(secret.encode(), ts.encode() + b":" + raw, hashlib.sha256).hexdigest()
    return hmac.compare_digest(mac, headers["x-twenty-webhook-signature"])


def test_create_generates_a_secret_and_lists(sandbox_client: httpx.Client) -> None:
    response = sandbox_client.post("/rest/metadata/webhooks", json={
        "targetUrl": "http://127.0.0.1:9/hook", "operations": ["person.created"],
        "description": "test"})
    assert response.status_code == 201
    hook = response.json()
    assert len(hook["secret"]) == 64 and int(hook["secret"], 16) >= 0
    assert set(hook) >= {"id", "targetUrl", "operations", "description", "secret",
                         "applicationId", "createdAt", "updatedAt", "deletedAt"}
    listed = sandbox_client.get("/rest/metadata/webhooks").json()
    assert listed["totalCount"] == 1 and listed["data"][0]["id"] == hook["id"]
    assert sandbox_client.get(f"/rest/metadata/webhooks/{hook['id']}").json() == hook
    patched = sandbox_client.patch(f"/rest/metadata/webhooks/{hook['id']}",
                                   json={"operations": ["*.*"]})
    assert patched.json()["operations"] == ["*.*"]
    assert sandbox_client.delete(f"/rest/metadata/webhooks/{hook['id']}").status_code == 200
    assert sandbox_client.get(f"/rest/metadata/webhooks/{hook['id']}").status_code == 404


def test_validation_of_target_and_operations(sandbox_client: httpx.Client) -> None:
    assert sandbox_client.post("/rest/metadata/webhooks",
                               json={"targetUrl": "not a url"}).status_code == 400
    assert sandbox_client.post("/rest/metadata/webhooks", json={
        "targetUrl": "http://127.0.0.1/x", "operations": ["person"]}).status_code == 400
    given = sandbox_client.post("/rest/metadata/webhooks", json={
        "targetUrl": "http://127.0.0.1/x", "secret": "s3cret"}).json()
    assert given["secret"] == "s3cret" and given["operations"] == ["*.*"]


def test_deprecated_alias_sends_deprecation_headers(sandbox_client: httpx.Client) -> None:
    response = sandbox_client.post("/rest/webhooks", json={"targetUrl": "http://127.0.0.1/x"})
    assert response.status_code == 201
    assert response.headers["Deprecation"] == "@1786320000"
    assert "/rest/metadata/webhooks" in response.headers["Link"]
    assert 'rel="successor-version"' in response.headers["Link"]
    assert "Deprecation" not in sandbox_client.get("/rest/metadata/webhooks").headers


def test_signed_deliveries_for_every_action(sandbox: SandboxServer,
                                            sandbox_client: httpx.Client,
                                            receiver: Receiver) -> None:
    hook = sandbox_client.post("/rest/metadata/webhooks", json={
        "targetUrl": receiver.url, "operations": ["person.*"]}).json()
    ada = create_person(sandbox_client, first="Ada", email="ada@example.com")
    sandbox_client.patch(f"/rest/people/{ada['id']}", json={"jobTitle": "CTO"})
    sandbox_client.delete(f"/rest/people/{ada['id']}", params={"soft_delete": "true"})
    sandbox_client.patch(f"/rest/people/{ada['id']}/restore")
    sandbox_client.delete(f"/rest/people/{ada['id']}")
    sandbox_client.post("/rest/companies", json={"name": "not delivered"})
    got = receiver.wait(5)
    assert len(got) == 5
    events = []
    for headers, raw in got:
        assert headers["content-type"] == "application/json"
        assert verify(hook["secret"], headers, raw)
        assert headers["x-twenty-webhook-timestamp"].isdigit()
        assert len(headers["x-twenty-webhook-timestamp"]) == 13  # milliseconds
        assert len(headers["x-twenty-webhook-nonce"]) == 32
        assert raw == json.dumps(json.loads(raw), separators=(",", ":"),
                                 ensure_ascii=False).encode()  # compact JSON
        events.append(json.loads(raw))
    by_name = {e["eventName"]: e for e in events}
    assert set(by_name) == {"person.created", "person.updated", "person.deleted",
                            "person.restored", "person.destroyed"}
    updated = by_name["person.updated"]
    assert updated["updatedFields"] == ["jobTitle"]
    assert updated["record"]["jobTitle"] == "CTO"
    assert updated["objectMetadata"]["nameSingular"] == "person"
    assert updated["workspaceId"] == sandbox.workspace_id
    assert updated["webhookId"] == hook["id"]
    assert updated["targetUrl"] == receiver.url
    assert updated["eventDate"].endswith("Z")
    assert "secret" not in updated
    assert "updatedFields" not in by_name["person.created"]
    assert by_name["person.deleted"]["record"]["deletedAt"] is not None
    assert by_name["person.destroyed"]["record"]["id"] == ada["id"]  # the state before
    assert sandbox.wait_for_deliveries(5) and all(d.ok for d in sandbox.webhook_deliveries)


@pytest.mark.parametrize(("operations", "delivered"), [
    (["person.updated"], ["person.updated"]),
    (["*.updated"], ["person.updated", "company.updated"]),
    (["company.*"], ["company.created", "company.updated"]),
    (["*.*"], ["person.created", "person.updated", "company.created", "company.updated"]),
])
def test_operation_matching(sandbox: SandboxServer, sandbox_client: httpx.Client,
                            receiver: Receiver, operations: list[str],
                            delivered: list[str]) -> None:
    sandbox_client.post("/rest/metadata/webhooks",
                        json={"targetUrl": receiver.url, "operations": operations})
    ada = create_person(sandbox_client, first="Ada")
    sandbox_client.patch(f"/rest/people/{ada['id']}", json={"city": "Paris"})
    acme = sandbox_client.post("/rest/companies", json={"name": "Acme"}).json()
    sandbox_client.patch(f"/rest/companies/{acme['data']['createCompany']['id']}",
                         json={"employees": 3})
    assert sandbox.wait_webhooks_idle()
    names = [json.loads(raw)["eventName"] for _, raw in receiver.received]
    assert sorted(names) == sorted(delivered)


def test_failures_are_recorded_and_not_retried(sandbox: SandboxServer,
                                               sandbox_client: httpx.Client,
                                               receiver: Receiver) -> None:
    receiver.status = 500
    sandbox_client.post("/rest/metadata/webhooks", json={"targetUrl": receiver.url})
    sandbox_client.post("/rest/metadata/webhooks",
                        json={"targetUrl": "http://127.0.0.1:1/refused"})
    sandbox_client.post("/rest/metadata/webhooks",
                        json={"targetUrl": "http://192.0.2.1/not-loopback"})
    create_person(sandbox_client, first="Ada")
    outcomes = sandbox.wait_for_deliveries(3)
    assert len(outcomes) == 3
    by_url = {d.target_url: d for d in outcomes}
    assert by_url[receiver.url].status == 500 and not by_url[receiver.url].ok
    assert by_url["http://127.0.0.1:1/refused"].error is not None
    assert "loopback" in (by_url["http://192.0.2.1/not-loopback"].error or "")
    assert len(receiver.wait(1, timeout=0.3)) == 1  # one attempt, no retry


def test_upsert_emits_updated_for_a_match(sandbox: SandboxServer,
                                          sandbox_client: httpx.Client,
                                          receiver: Receiver) -> None:
    create_person(sandbox_client, first="Ada", email="ada@example.com")
    sandbox_client.post("/rest/metadata/webhooks", json={"targetUrl": receiver.url})
    sandbox_client.post("/rest/batch/people?upsert=true", json=[
        {"emails": {"primaryEmail": "ada@example.com"}, "city": "Paris"},
        {"emails": {"primaryEmail": "bob@example.com"}}])
    events = sorted(json.loads(raw)["eventName"] for _, raw in receiver.wait(2))
    assert events == ["person.created", "person.updated"]
