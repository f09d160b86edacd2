"""`truth-forge doctor` against the sandbox over loopback, and against small real servers that are not Twenty.

The sandbox may grow stricter (400 "Record not found", refused mixed-case or empty emails); where
it may, these tests accept each documented behaviour but insist that doctor reports the one it saw.
"""

from __future__ import annotations

import json
import socket
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from truth_forge.cli.main import app
from truth_forge.core.config import Settings
from truth_forge.core.crm_schema import CrmSchema, setup_schema
from truth_forge.operations.doctor import Doctor, DoctorReport, ResponseLog, run_doctor
from truth_forge.sandbox import SandboxConfig, SandboxServer
from truth_forge.twenty.client import TwentyClient

WRITES = ("POST", "PATCH", "PUT", "DELETE")


def settings_for(base_url: str, **overrides: Any) -> Settings:
    return Settings(twenty_base_url=base_url, twenty_requests_per_minute=100_000, **overrides)


def doctor(server: SandboxServer, **kwargs: Any) -> DoctorReport:
    settings = kwargs.pop("settings", None) or settings_for(server.base_url)
    return run_doctor(settings, api_key=server.api_key, **kwargs)


def people_counts(client: httpx.Client) -> tuple[int, int]:
    """(live people, soft-deleted people) as the API counts them."""
    live = client.get("/rest/people", params={"limit": 1}).json()["totalCount"]
    gone = client.get("/rest/people", params={"limit": 1, "filter": "deletedAt[is]:NOT_NULL"}).json()["totalCount"]
    return live, gone


def add_people(client: httpx.Client, count: int) -> list[str]:
    ids = []
    for i in range(count):
        response = client.post("/rest/people", json={"name": {"firstName": "Seed", "lastName": str(i)},
                                                      "emails": {"primaryEmail": f"seed{i}@example.com"}})
        assert response.status_code == 201, response.text
        ids.append(response.json()["data"]["createPerson"]["id"])
    return ids


def status_of(report: DoctorReport, check: str) -> str:
    finding = report.finding(check)
    assert finding is not None, f"no {check!r} finding in {[f.check for f in report.findings]}"
    return finding.status


def assert_batch_finding(report: DoctorReport, limit: int) -> None:
    """Either the server named its limit, or (like Twenty's own runner) it refused the unknown field first."""
    finding = report.finding("batch limit")
    assert finding is not None
    if finding.details["limit"] is None:
        assert finding.details["fields_checked_first"] is True
        assert "checked the fields before the count" in finding.found
    else:
        assert finding.details["limit"] == limit
        assert f"{limit} records a batch" in finding.found


# -- read-only against the sandbox ------------------------------------------------------------------


def test_read_only_run_reports_the_workspace_and_changes_nothing(sandbox: SandboxServer,
                                                                 sandbox_client: httpx.Client) -> None:
    add_people(sandbox_client, 3)
    before = people_counts(sandbox_client)
    sandbox.clear_request_log()

    report = doctor(sandbox)

    assert report.exit_code == 0, report.render()
    assert status_of(report, "reachability") == "OK" and status_of(report, "auth") == "OK"
    assert report.key_source == "the caller"
    assert "new format" in report.finding("metadata").found
    fields = report.finding("custom fields")
    assert fields.status == "WARN" and "person.contactId" in fields.details["missing"]
    assert "truth-forge setup" in fields.todo
    assert_batch_finding(report, 200)
    not_found = report.finding("not-found status")
    assert not_found.details["status_code"] in (404, 400)
    assert f"answers {not_found.details['status_code']}" in not_found.found
    assert status_of(report, "deleted visibility") == "INFO"  # nothing soft-deleted to look at
    assert "TRUTH_FORGE_TWENTY_REQUESTS_PER_MINUTE" in report.finding("rate-limit headers").found

    log = sandbox.request_log
    assert report.requests == len(log)  # doctor's own count matches what the server answered
    writes = [e for e in log if e.method in WRITES]
    assert [(e.method, e.path) for e in writes] == [("POST", "/rest/batch/people")]
    assert all(e.status is not None and e.status >= 400 for e in writes)
    assert people_counts(sandbox_client) == before


def test_custom_fields_are_present_after_setup(sandbox: SandboxServer) -> None:
    schema = CrmSchema.load()
    assert doctor(sandbox).finding("custom fields").details["missing"]
    with TwentyClient(sandbox.base_url, sandbox.api_key) as client:
        assert setup_schema(client, schema)["all_complete"]

    report = doctor(sandbox)

    fields = report.finding("custom fields")
    assert fields.status == "OK" and fields.details["missing"] == [] and fields.details["mismatched"] == []
    assert f"{len(schema.fields)} of {len(schema.fields)}" in fields.found


def test_a_soft_deleted_person_shows_the_deleted_at_filter_works(sandbox: SandboxServer,
                                                                 sandbox_client: httpx.Client) -> None:
    [person_id] = add_people(sandbox_client, 1)
    assert sandbox_client.delete(f"/rest/people/{person_id}", params={"soft_delete": "true"}).status_code == 200

    finding = doctor(sandbox).finding("deleted visibility")

    assert finding.status == "OK" and finding.details["visible"] is True


def test_a_docs_limit_server_names_60_and_a_larger_batch_setting_fails() -> None:
    config = SandboxConfig(api_keys=["docs-limit-key"], rate_limit_per_minute=None,
                           enforce_docs_batch_limit=True, metadata_format="legacy")
    with SandboxServer(config) as server:
        report = doctor(server, settings=settings_for(server.base_url, twenty_batch_size=100))

    assert "legacy format" in report.finding("metadata").found
    assert_batch_finding(report, 60)
    if report.finding("batch limit").details["limit"] == 60:
        assert report.finding("batch limit").status == "FAIL" and report.exit_code == 1
        assert "TRUTH_FORGE_TWENTY_BATCH_SIZE=60" in report.finding("batch limit").todo


def test_rate_limit_v2_headers_are_read_from_the_429s_doctor_met(sandbox: SandboxServer) -> None:
    # One token, refilled once a second: doctor's record requests, milliseconds apart, meet 429s.
    sandbox.set_rate_limit(1, window_ms=1000, burst=1, style="v2")

    report = doctor(sandbox)

    finding = report.finding("rate-limit headers")
    assert finding.details["rate_limited"] >= 1, report.render()
    assert finding.status == "WARN" and finding.details["headers"]["x-ratelimit-limit"] == "1"
    assert "rate limits v2 headers seen" in finding.found
    assert report.exit_code == 0  # the retries got every request through


# -- probe writes -----------------------------------------------------------------------------------


def test_probe_writes_report_the_write_rules_and_leave_nothing_behind(sandbox: SandboxServer,
                                                                       sandbox_client: httpx.Client) -> None:
    add_people(sandbox_client, 2)
    before = people_counts(sandbox_client)
    sandbox.clear_request_log()

    report = doctor(sandbox, probe_writes=True)

    email_case = report.finding("email case")
    assert email_case.details["behaviour"] in ("lower-cased", "refused")
    assert email_case.details["behaviour"] in email_case.found
    empty = report.finding("empty email")
    assert empty.details["behaviour"] in ("accepted", "refused") and empty.details["behaviour"] in empty.found
    updated_by = report.finding("updatedBy")
    assert updated_by.details["source"] == "API" and updated_by.details["filterable"] is True
    assert status_of(report, "deleted visibility") == "OK"
    assert report.finding("restore updatedAt").details["bumped"] is True
    cleanup = report.finding("probe cleanup")
    assert cleanup.status == "OK" and cleanup.details["left_behind"] is None

    probe_ids = {e.path.rsplit("/", 1)[-1] for e in sandbox.request_log
                 if e.method == "DELETE" and e.path.startswith("/rest/people/")}
    assert len(probe_ids) == 1  # every write after the create went to one record
    destroys = [e for e in sandbox.request_log if e.method == "DELETE" and "soft_delete" not in e.query]
    assert len(destroys) == 1 and destroys[0].status == 200
    assert sandbox_client.get(f"/rest/people/{probe_ids.pop()}").status_code in (404, 400)
    assert people_counts(sandbox_client) == before


def test_the_probe_is_destroyed_even_when_a_probe_step_fails(sandbox: SandboxServer,
                                                             sandbox_client: httpx.Client) -> None:
    log = ResponseLog()
    with TwentyClient(sandbox.base_url, sandbox.api_key, max_retries=2, http_transport=log) as client:
        probe = Doctor(client, log, settings_for(sandbox.base_url), CrmSchema.load(), sandbox.api_key)
        # The first request on the probe record (and its two retries) get a 500; the create does not.
        sandbox.set_faults(error_rate=1.0, max_faults=3, error_statuses=(500,), path_prefix="/rest/people/")
        probe.probe_writes()

    statuses = {f.check: f.status for f in probe.findings}
    assert statuses["empty email"] == "FAIL"
    assert statuses["probe cleanup"] == "OK"
    assert people_counts(sandbox_client) == (0, 0)


# -- the command line -------------------------------------------------------------------------------


@pytest.fixture
def cli_env(sandbox_env: SandboxServer) -> SandboxServer:
    return sandbox_env


def test_cli_json_says_where_the_key_came_from_and_exits_0(cli_env: SandboxServer) -> None:
    result = CliRunner().invoke(app, ["doctor", "--json"])

    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["exit_code"] == 0 and body["requests"] == len(cli_env.request_log)
    auth = next(f for f in body["findings"] if f["check"] == "auth")
    assert auth["status"] == "OK" and "environment variable TWENTY_API_KEY" in auth["found"]
    assert cli_env.api_key not in result.output


def test_cli_table_and_probe_writes(cli_env: SandboxServer) -> None:
    result = CliRunner().invoke(app, ["doctor", "--probe-writes"])

    assert result.exit_code == 0, result.output
    assert "probe cleanup" in result.stdout and "requests used:" in result.stdout
    assert cli_env.api_key not in result.output


def test_cli_a_failed_check_exits_1(cli_env: SandboxServer, monkeypatch: pytest.MonkeyPatch) -> None:
    config = SandboxConfig(api_keys=[cli_env.api_key], rate_limit_per_minute=None, enforce_docs_batch_limit=True)
    with SandboxServer(config) as server:
        monkeypatch.setenv("TWENTY_BASE_URL", server.base_url)
        monkeypatch.setenv("TRUTH_FORGE_TWENTY_BATCH_SIZE", "100")
        result = CliRunner().invoke(app, ["doctor"])
    if "60 records a batch" in result.stdout:
        assert result.exit_code == 1, result.output
    else:  # a sandbox that checks fields before the count names no limit: nothing fails
        assert result.exit_code == 0 and "checked the fields before the count" in result.stdout


def test_cli_a_wrong_key_exits_2_without_printing_it(cli_env: SandboxServer, monkeypatch: pytest.MonkeyPatch) -> None:
    wrong = f"wrong-key-{uuid.uuid4().hex}"
    monkeypatch.setenv("TWENTY_API_KEY", wrong)

    result = CliRunner().invoke(app, ["doctor"])

    assert result.exit_code == 2
    assert "auth" in result.stdout and "FAIL" in result.stdout and "refused" in result.stdout
    assert wrong not in result.output
    assert all(e.method == "GET" for e in cli_env.request_log)  # it stopped at the first answer


def test_cli_without_a_key_exits_2_and_lists_where_it_looked(cli_env: SandboxServer, tmp_path: Any,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TWENTY_API_KEY")
    monkeypatch.chdir(tmp_path)  # no .env there to find a key in

    result = CliRunner().invoke(app, ["doctor"])

    assert result.exit_code == 2
    assert "API key not found" in result.stdout and "TWENTY_API_KEY: not set" in result.stdout


# -- servers that are not (directly) Twenty ---------------------------------------------------------

SECRET_LOCATION = "https://user:hunter2@crm.example.net/login?token=s3cret"


class _NotTwenty(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
        if self.server.mode == "redirect":  # type: ignore[attr-defined]
            self.send_response(302)
            self.send_header("Location", SECRET_LOCATION)
            self.end_headers()
            return
        body = b"<html><body>Sign in to the proxy</body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        return None  # keep pytest's output clean; the test reads the report instead


@pytest.fixture(params=["redirect", "html"])
def not_twenty(request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _NotTwenty)
    server.mode = request.param  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield request.param, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_redirect_or_a_web_page_is_not_twenty(not_twenty: tuple[str, str]) -> None:
    mode, url = not_twenty
    report = run_doctor(settings_for(url), api_key="some-key")

    assert report.exit_code == 2
    reach = report.finding("reachability")
    assert reach.status == "FAIL"
    text = report.render() + report.to_json()
    if mode == "redirect":
        assert "redirects (302) to host crm.example.net" in reach.found and "(http -> https)" in reach.found
        for secret in ("hunter2", "s3cret", "/login", "user:"):
            assert secret not in text
    else:
        assert "not like Twenty" in reach.found
    assert "some-key" not in text


def test_nothing_listening_exits_2() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    report = run_doctor(settings_for(f"http://127.0.0.1:{port}"), api_key="k")

    assert report.exit_code == 2 and "no answer from" in report.finding("reachability").found
