"""Rate limiting: a per-workspace token bucket, legacy and v2 429s (reference §6)."""

from __future__ import annotations

import time

import httpx

from truth_forge.sandbox import SandboxConfig, SandboxServer


def test_legacy_429_body_and_no_headers(sandbox: SandboxServer,
                                        sandbox_client: httpx.Client) -> None:
    sandbox.set_rate_limit(100)
    statuses = [sandbox_client.get("/rest/people").status_code for _ in range(101)]
    assert statuses[:100] == [200] * 100 and statuses[100] == 429
    response = sandbox_client.get("/rest/people")
    assert response.json() == {"statusCode": 429, "error": "TooManyRequestsException",
                               "messages": ["Limit reached (100 tokens per 60000 ms)"]}
    assert "retry-after" not in response.headers
    assert not any(h.lower().startswith("x-ratelimit") for h in response.headers)


def test_v2_429_headers_and_body(sandbox: SandboxServer, sandbox_client: httpx.Client) -> None:
    sandbox.set_rate_limit(3, window_ms=60_000, style="v2")
    for _ in range(3):
        assert sandbox_client.get("/rest/people").status_code == 200
    before = time.time()
    response = sandbox_client.get("/rest/people")
    assert response.status_code == 429
    retry_after = int(response.headers["Retry-After"])
    assert 1 <= retry_after <= 20  # one token comes back every 20 s
    assert response.headers["X-RateLimit-Limit"] == "3"
    assert response.headers["X-RateLimit-Remaining"] == "0"
    assert int(response.headers["X-RateLimit-Reset"]) >= int(before) + retry_after
    body = response.json()
    assert body["error"] == "RATE_LIMITED" and body["statusCode"] == 429
    assert body["messages"] == ["Rate limit exceeded for apiKey: 3 requests per 60s."]
    assert body["retryAfterSeconds"] == retry_after
    assert (body["limit"], body["remaining"], body["periodUnit"]) == (3, 0, "second")
    assert sandbox.api_key not in response.text


def test_bucket_refills_continuously(sandbox: SandboxServer,
                                     sandbox_client: httpx.Client) -> None:
    sandbox.set_rate_limit(2, window_ms=400)  # one token per 200 ms
    assert [sandbox_client.get("/rest/people").status_code for _ in range(3)] == [200, 200, 429]
    deadline = time.monotonic() + 2
    while sandbox_client.get("/rest/people").status_code == 429:
        assert time.monotonic() < deadline, "bucket never refilled"
        time.sleep(0.05)


def test_burst_can_differ_from_the_rate(sandbox: SandboxServer,
                                        sandbox_client: httpx.Client) -> None:
    sandbox.set_rate_limit(100, burst=5)
    statuses = [sandbox_client.get("/rest/people").status_code for _ in range(6)]
    assert statuses == [200] * 5 + [429]


def test_bucket_is_shared_by_every_key_of_the_workspace(sandbox: SandboxServer) -> None:
    sandbox.set_rate_limit(2)
    first, second = sandbox.config.api_keys[:2]
    for key in (first, second):
        response = httpx.get(f"{sandbox.base_url}/rest/people",
                             headers={"Authorization": f"Bearer {key}"})
        assert response.status_code == 200
    third = httpx.get(f"{sandbox.base_url}/rest/people",
                      headers={"Authorization": f"Bearer {second}"})
    assert third.status_code == 429


def test_metadata_and_unauthenticated_requests_spend_no_tokens(
        sandbox: SandboxServer, sandbox_client: httpx.Client) -> None:
    sandbox.set_rate_limit(1)
    for _ in range(3):
        assert sandbox_client.get("/rest/metadata/objects").status_code == 200
        assert httpx.get(f"{sandbox.base_url}/rest/people").status_code == 403
    assert sandbox_client.get("/rest/people").status_code == 200
    assert sandbox_client.get("/rest/people").status_code == 429


def test_default_config_limits_at_100_and_can_be_disabled() -> None:
    assert SandboxConfig().rate_limit_per_minute == 100
    with SandboxServer(SandboxConfig(api_keys=["k"], rate_limit_per_minute=None)) as server:
        with httpx.Client(base_url=server.base_url,
                          headers={"Authorization": "Bearer k"}) as client:
            assert all(client.get("/rest/people").status_code == 200 for _ in range(120))


def _pace(client: httpx.Client, offsets_s: list[float]) -> list[int]:
    """GET /rest/people at the given offsets (seconds) from the first request."""
    start = time.monotonic()
    statuses = []
    for offset in offsets_s:
        delay = start + offset - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        statuses.append(client.get("/rest/people").status_code)
    return statuses


# One token per second, bucket of 2: drain it, then come back after 1.5 s (1.5 tokens earned)
# and again 0.8 s later. The fractional bucket kept the half token, the floored one threw it
# away when the second request was accepted.
_OFFSETS = [0.0, 0.0, 1.5, 2.3]


def test_fractional_refill_keeps_partial_tokens(sandbox: SandboxServer,
                                                sandbox_client: httpx.Client) -> None:
    sandbox.set_rate_limit(1, window_ms=1000, burst=2, refill="fractional")
    assert _pace(sandbox_client, _OFFSETS) == [200, 200, 200, 200]


def test_legacy_floored_refill_gives_extra_429s_at_the_limit(
        legacy_sandbox: SandboxServer, legacy_client: httpx.Client) -> None:
    legacy_sandbox.set_rate_limit(1, window_ms=1000, burst=2)  # the profile floors the refill
    assert _pace(legacy_client, _OFFSETS) == [200, 200, 200, 429]
    assert legacy_sandbox.config.behaviour.rate_limit_refill == "floored"


def test_twentys_v2_limiter_names_its_count_only_on_the_429_a_gateway_on_every_answer(
        sandbox: SandboxServer, sandbox_client: httpx.Client) -> None:
    sandbox.set_rate_limit(5, window_ms=60_000, style="v2")
    accepted = sandbox_client.get("/rest/people")
    assert accepted.status_code == 200
    assert not any(h.lower().startswith("x-ratelimit") for h in accepted.headers)
    sandbox.set_rate_limit(5, window_ms=60_000, style="gateway")
    counted = [sandbox_client.get("/rest/people") for _ in range(2)]
    assert [r.headers["X-RateLimit-Remaining"] for r in counted] == ["4", "3"]
    assert all(r.headers["X-RateLimit-Limit"] == "5" for r in counted)
