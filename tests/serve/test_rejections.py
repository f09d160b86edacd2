"""Every kind of bad delivery is refused with its status, and nothing reaches the inbox or the warehouse."""

from __future__ import annotations

import json
import secrets
import time

import httpx
import pytest

from tests.serve.conftest import SECRET, ServeHarness
from truth_forge.sandbox.webhooks import sign  # the sandbox's own, independent signer


def body_for(first_name: str = "Ada") -> bytes:
    payload = {"eventName": "person.updated", "objectMetadata": {"id": "x", "nameSingular": "person"},
               "eventDate": "2026-05-04T09:12:33.512Z",
               "record": {"id": "0b7c3f0e-0000-4000-8000-000000000001", "name": {"firstName": first_name},
                          "updatedAt": "2026-05-04T09:12:33.000Z"}}
    return json.dumps(payload, separators=(",", ":")).encode()


def signed_headers(body: bytes, *, secret: str = SECRET, timestamp_ms: int | None = None,
                   nonce: str | None = None) -> dict[str, str]:
    ts = str(timestamp_ms if timestamp_ms is not None else time.time_ns() // 1_000_000)
    return {"Content-Type": "application/json", "X-Twenty-Webhook-Timestamp": ts,
            "X-Twenty-Webhook-Signature": sign(secret, ts, body.decode()),
            "X-Twenty-Webhook-Nonce": nonce or secrets.token_hex(16)}


def post(harness: ServeHarness, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(harness.url + "/webhooks/twenty", content=body, headers=headers)


def assert_nothing_stored(harness: ServeHarness) -> None:
    assert harness.inbox.counts() == {"pending": 0, "applied": 0, "failed": 0}


def test_a_good_delivery_is_stored_and_acknowledged(harness: ServeHarness) -> None:
    # The control: the same helpers produce a delivery that is accepted, so the refusals below are real.
    response = post(harness, body_for(), signed_headers(body_for()))
    assert response.status_code == 200 and response.json() == {"status": "stored"}
    assert sum(harness.inbox.counts().values()) == 1
    assert harness.status()["receiver"] == {"commits": 1}  # what /status tells of the group commits


def test_unsigned_request_is_refused(harness: ServeHarness) -> None:
    response = post(harness, body_for(), {"Content-Type": "application/json"})
    assert response.status_code == 401
    assert_nothing_stored(harness)


def test_bad_signature_is_refused(harness: ServeHarness) -> None:
    headers = signed_headers(body_for(), secret="b" * 64)
    response = post(harness, body_for(), headers)
    assert response.status_code == 401 and response.json()["error"] == "bad signature"
    assert_nothing_stored(harness)


def test_body_changed_after_signing_is_refused(harness: ServeHarness) -> None:
    response = post(harness, body_for("Mallory"), signed_headers(body_for("Ada")))
    assert response.status_code == 401
    assert_nothing_stored(harness)


@pytest.mark.parametrize("offset_ms", [-6 * 60 * 1000, 6 * 60 * 1000])
def test_stale_or_future_timestamp_is_refused(harness: ServeHarness, offset_ms: int) -> None:
    headers = signed_headers(body_for(), timestamp_ms=time.time_ns() // 1_000_000 + offset_ms)
    response = post(harness, body_for(), headers)
    assert response.status_code == 401 and "stale" in response.json()["error"]
    assert_nothing_stored(harness)


def test_replayed_nonce_is_refused(harness: ServeHarness) -> None:
    first = signed_headers(body_for())
    assert post(harness, body_for(), first).status_code == 200
    again = signed_headers(body_for("Grace"), nonce=first["X-Twenty-Webhook-Nonce"])
    response = post(harness, body_for("Grace"), again)
    assert response.status_code == 401 and "replayed" in response.json()["error"]
    assert sum(harness.inbox.counts().values()) == 1  # only the first


def test_replay_with_a_fresh_nonce_is_refused_by_its_signature(harness: ServeHarness) -> None:
    first = signed_headers(body_for())
    assert post(harness, body_for(), first).status_code == 200
    copy = {**first, "X-Twenty-Webhook-Nonce": secrets.token_hex(16)}  # the nonce is not signed
    response = post(harness, body_for(), copy)
    assert response.status_code == 401 and "replayed" in response.json()["error"]
    assert sum(harness.inbox.counts().values()) == 1


def test_oversized_body_is_refused(make_harness: object) -> None:
    harness = make_harness(max_body_bytes=2048)  # type: ignore[operator]
    harness.wait_ready()
    big = body_for("x" * 4096)
    response = post(harness, big, signed_headers(big))
    assert response.status_code == 413
    assert_nothing_stored(harness)


def test_oversized_body_without_length_header_is_refused(make_harness: object) -> None:
    harness = make_harness(max_body_bytes=2048)  # type: ignore[operator]
    harness.wait_ready()
    big = body_for("x" * 4096)

    def chunks():  # type: ignore[no-untyped-def]
        for i in range(0, len(big), 512):
            yield big[i:i + 512]

    response = httpx.post(harness.url + "/webhooks/twenty", content=chunks(), headers=signed_headers(big))
    assert response.status_code == 413
    assert_nothing_stored(harness)


def test_malformed_json_is_refused(harness: ServeHarness) -> None:
    broken = b'{"eventName": "person.updated", "record": {'
    response = post(harness, broken, signed_headers(broken))
    assert response.status_code == 400
    assert_nothing_stored(harness)


def test_event_without_a_record_id_is_refused(harness: ServeHarness) -> None:
    body = json.dumps({"eventName": "person.updated", "record": {"name": "x"}}).encode()
    response = post(harness, body, signed_headers(body))
    assert response.status_code == 400
    assert_nothing_stored(harness)


def test_refusals_never_show_the_secret(harness: ServeHarness, caplog: pytest.LogCaptureFixture) -> None:
    post(harness, body_for(), signed_headers(body_for(), secret="c" * 64))
    post(harness, b"{", signed_headers(b"{"))
    assert SECRET not in caplog.text
