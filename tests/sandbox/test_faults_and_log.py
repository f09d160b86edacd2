"""Fault injection (seeded, bounded, runtime-changeable) and the request log."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.sandbox.util import create_people, person
from truth_forge.sandbox import FaultSettings, SandboxServer


def _outcomes(client: httpx.Client, n: int) -> list[str]:
    out = []
    for _ in range(n):
        try:
            out.append(str(client.get("/rest/people").status_code))
        except httpx.TransportError as exc:
            out.append(type(exc).__name__)
    return out


def test_same_seed_same_faults(sandbox: SandboxServer, sandbox_client: httpx.Client) -> None:
    sandbox.set_faults(error_rate=0.3, drop_rate=0.1, rate_limit_storm=0.1, seed=7)
    first = _outcomes(sandbox_client, 40)
    sandbox.set_faults(error_rate=0.3, drop_rate=0.1, rate_limit_storm=0.1, seed=7)
    second = _outcomes(sandbox_client, 40)
    assert first == second
    assert {"200", "429"} <= set(first)
    assert set(first) & {"500", "502", "503"}
    assert "RemoteProtocolError" in first  # a dropped connection: no response at all
    sandbox.set_faults(error_rate=0.3, drop_rate=0.1, rate_limit_storm=0.1, seed=8)
    assert _outcomes(sandbox_client, 40) != first


def test_drop_closes_the_connection_without_a_response(sandbox: SandboxServer,
                                                       sandbox_client: httpx.Client) -> None:
    sandbox.set_faults(drop_rate=1.0)
    with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
        sandbox_client.post("/rest/people", json=person("Ada"))
    sandbox.clear_faults()
    assert sandbox_client.get("/rest/people").json()["totalCount"] == 0  # nothing was written
    entry = sandbox.request_log[0]
    assert (entry.fault, entry.status) == ("drop", None)


def test_error_faults_use_twentys_body_and_write_nothing(sandbox: SandboxServer,
                                                          sandbox_client: httpx.Client) -> None:
    sandbox.set_faults(error_rate=1.0, error_statuses=(503,))
    response = sandbox_client.post("/rest/people", json=person("Ada"))
    assert response.status_code == 503
    assert response.json()["statusCode"] == 503 and response.json()["messages"]
    sandbox.clear_faults()
    assert sandbox_client.get("/rest/people").json()["totalCount"] == 0


def test_storm_429s_look_like_the_configured_style(sandbox: SandboxServer,
                                                   sandbox_client: httpx.Client) -> None:
    sandbox.set_faults(rate_limit_storm=1.0)
    response = sandbox_client.get("/rest/people")
    assert response.status_code == 429
    assert response.json()["error"] == "TooManyRequestsException"
    sandbox.set_rate_limit(None, style="v2")
    response = sandbox_client.get("/rest/people")
    assert response.status_code == 429 and "Retry-After" in response.headers


def test_faults_are_bounded_by_max_faults(sandbox: SandboxServer,
                                          sandbox_client: httpx.Client) -> None:
    sandbox.set_faults(error_rate=1.0, max_faults=3)
    statuses = [int(s) for s in _outcomes(sandbox_client, 6)]
    assert [s >= 500 for s in statuses] == [True] * 3 + [False] * 3
    assert sandbox.faults_injected == 3


def test_latency_is_applied_and_changeable_at_runtime(sandbox: SandboxServer,
                                                      sandbox_client: httpx.Client) -> None:
    sandbox.set_faults(latency_ms=120)
    started = time.perf_counter()
    sandbox_client.get("/rest/people")
    assert time.perf_counter() - started >= 0.12
    assert sandbox.request_log[-1].duration_ms >= 120  # the server's timing includes the delay
    sandbox.set_faults(latency_ms=0)
    sandbox_client.get("/rest/people")
    # Judged by the server's own timing of the request, not the client's wall clock, which a loaded
    # CI machine can stretch: the 120 ms delay must be gone.
    assert sandbox.request_log[-1].duration_ms < 120


def test_faults_do_not_touch_admin_or_other_prefixes(sandbox: SandboxServer,
                                                     sandbox_client: httpx.Client) -> None:
    sandbox.set_faults(error_rate=1.0, path_prefix="/rest/companies")
    assert sandbox_client.get("/rest/people").status_code == 200
    assert sandbox_client.get("/rest/companies").status_code >= 500
    assert sandbox_client.get("/_sandbox/health").status_code == 200


def test_fault_settings_are_validated() -> None:
    for bad in ({"error_rate": 1.5}, {"drop_rate": -0.1}, {"latency_ms": 60_000},
                {"latency_ms": (50, 10)}, {"error_statuses": (404,)}):
        with pytest.raises(ValueError):
            FaultSettings(**bad)  # type: ignore[arg-type]


def test_faults_over_http_admin_endpoint(sandbox: SandboxServer,
                                         sandbox_client: httpx.Client) -> None:
    response = sandbox_client.post("/_sandbox/faults", json={"error_rate": 1.0, "seed": 3})
    assert response.status_code == 200 and response.json()["error_rate"] == 1.0
    assert sandbox_client.get("/rest/people").status_code >= 500
    assert sandbox_client.post("/_sandbox/faults", json={"error_rate": 2}).status_code == 400
    sandbox_client.post("/_sandbox/faults", json={})
    assert sandbox_client.get("/rest/people").status_code == 200
    assert httpx.post(f"{sandbox.base_url}/_sandbox/reset").status_code == 403


def test_request_log_counts_what_a_sync_costs(sandbox: SandboxServer,
                                              sandbox_client: httpx.Client) -> None:
    create_people(sandbox_client, [person(f"P{i}") for i in range(60)])
    create_people(sandbox_client, [person(f"Q{i}") for i in range(10)], upsert=True)
    sandbox_client.post("/rest/people", json=person("Single"))
    sandbox_client.get("/rest/people", params={"limit": 5, "filter": 'city[eq]:"x"'})
    sandbox_client.get("/rest/metadata/objects")
    httpx.get(f"{sandbox.base_url}/rest/people")  # unauthenticated: logged too
    sandbox_client.get("/_sandbox/health")  # admin: not an API request, not logged
    log = sandbox.request_log
    assert [(e.method, e.path, e.status) for e in log] == [
        ("POST", "/rest/batch/people", 201), ("POST", "/rest/batch/people", 201),
        ("POST", "/rest/people", 201), ("GET", "/rest/people", 200),
        ("GET", "/rest/metadata/objects", 200), ("GET", "/rest/people", 403)]
    assert [e.batch_size for e in log[:4]] == [60, 10, 1, None]
    assert log[1].query == "upsert=true"
    assert "limit=5" in log[3].query
    assert [e.seq for e in log] == list(range(1, 7))
    assert sandbox.request_count() == 6
    assert sandbox.request_count(method="POST") == 3
    assert sandbox.request_count(method="get", path_prefix="/rest/people") == 2
    assert sandbox.request_count(path_prefix="/rest/batch/") == 2
    over_http = sandbox_client.get("/_sandbox/requests").json()
    assert [e["path"] for e in over_http] == [e.path for e in log]
    sandbox.clear_request_log()
    assert sandbox.request_count() == 0


def test_db_error_faults_answer_400_with_a_postgres_message_and_write_nothing(
        sandbox: SandboxServer, sandbox_client: httpx.Client) -> None:
    sandbox.set_faults(db_error_rate=1.0, max_faults=6, seed=1)
    bodies = [sandbox_client.post("/rest/people", json=person(f"P{i}")) for i in range(6)]
    assert {r.status_code for r in bodies} == {400}
    messages = {r.json()["messages"][0] for r in bodies}
    assert messages <= {"deadlock detected", "canceling statement due to statement timeout"}
    assert bodies[0].json() == {"statusCode": 400, "error": "BadRequestException",
                                "messages": [bodies[0].json()["messages"][0]]}
    assert [e.fault for e in sandbox.request_log] == ["db_error"] * 6
    assert sandbox.faults_injected == 6
    ok = sandbox_client.get("/rest/people")  # max_faults reached: requests go through again
    assert ok.status_code == 200 and ok.json()["totalCount"] == 0  # nothing was written


def test_db_error_messages_and_path_prefix_are_configurable(
        sandbox: SandboxServer, sandbox_client: httpx.Client) -> None:
    sandbox.set_faults(db_error_rate=1.0, db_error_messages=("deadlock detected",),
                       path_prefix="/rest/batch/")
    assert sandbox_client.post("/rest/people", json=person("Ada")).status_code == 201
    response = sandbox_client.post("/rest/batch/people", json=[person("Bob")])
    assert response.json()["messages"] == ["deadlock detected"]
    with pytest.raises(ValueError):
        FaultSettings(db_error_rate=1.5)
    with pytest.raises(ValueError):
        FaultSettings(db_error_messages=())


def test_db_error_faults_over_http_admin_endpoint(sandbox: SandboxServer,
                                                  sandbox_client: httpx.Client) -> None:
    response = sandbox_client.post("/_sandbox/faults", json={
        "db_error_rate": 1.0, "db_error_messages": ["canceling statement due to statement "
                                                    "timeout"], "max_faults": 1})
    assert response.status_code == 200
    assert response.json()["db_error_rate"] == 1.0
    assert response.json()["db_error_messages"] == [
        "canceling statement due to statement timeout"]
    first = sandbox_client.get("/rest/people")
    assert (first.status_code, first.json()["messages"]) == (
        400, ["canceling statement due to statement timeout"])
    assert sandbox_client.get("/rest/people").status_code == 200
    assert sandbox_client.post("/_sandbox/faults",
                               json={"db_error_messages": []}).status_code == 400
