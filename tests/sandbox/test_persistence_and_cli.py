"""SQLite persistence across restarts, and the sandbox as a subprocess (`python -m`)."""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx

from tests.sandbox.util import create_field, create_person, first_answer, free_port, person, spawn_sandbox
from truth_forge.sandbox import SandboxConfig, SandboxServer


def _config(db: Path) -> SandboxConfig:
    return SandboxConfig(api_keys=["k"], rate_limit_per_minute=None, db_path=str(db))


def _client(server: SandboxServer) -> httpx.Client:
    return httpx.Client(base_url=server.base_url, headers={"Authorization": "Bearer k"})


def test_sqlite_keeps_records_fields_webhooks_across_restarts(tmp_path: Path) -> None:
    db = tmp_path / "sandbox.sqlite"
    with SandboxServer(_config(db)) as server, _client(server) as client:
        assert create_field(client, "person", type="TEXT", name="contactId", label="Contact",
                            isUnique=True).status_code == 201
        ada = create_person(client, first="Ada", email="ada@example.com", contactId="C-1")
        gone = create_person(client, first="Gone")
        client.delete(f"/rest/people/{gone['id']}", params={"soft_delete": "true"})
        hook = client.post("/rest/metadata/webhooks",
                           json={"targetUrl": "http://127.0.0.1:9/x"}).json()
        last_stamp = client.patch(f"/rest/people/{ada['id']}", json={"city": "Paris"}).json()[
            "data"]["updatePerson"]["updatedAt"]
        objects_before = client.get("/rest/metadata/objects").json()
    with SandboxServer(_config(db)) as server, _client(server) as client:
        again = client.get(f"/rest/people/{ada['id']}").json()["data"]["person"]
        assert again["city"] == "Paris" and again["contactId"] == "C-1"
        assert again["updatedAt"] == last_stamp
        assert client.get("/rest/people", params={"filter": "deletedAt[is]:NOT_NULL"}).json()[
            "data"]["people"][0]["id"] == gone["id"]
        assert client.get("/rest/metadata/objects").json() == objects_before  # same ids
        assert client.get(f"/rest/metadata/webhooks/{hook['id']}").json()["secret"] == \
            hook["secret"]
        # The unique index and the clock come back too.
        assert client.post("/rest/people", json=person("Eve", contactId="C-1")).status_code == 400
        newer = client.patch(f"/rest/people/{ada['id']}", json={"city": "Lyon"}).json()
        assert newer["data"]["updatePerson"]["updatedAt"] > last_stamp
        server.reset()
    with SandboxServer(_config(db)) as server, _client(server) as client:
        assert client.get("/rest/people").json()["totalCount"] == 0  # reset reached the file


def test_a_failed_batch_is_not_persisted(tmp_path: Path) -> None:
    db = tmp_path / "sandbox.sqlite"
    with SandboxServer(_config(db)) as server, _client(server) as client:
        response = client.post("/rest/batch/people", json=[person("A"), {"bogus": True}])
        assert response.status_code == 400
    with SandboxServer(_config(db)) as server, _client(server) as client:
        assert client.get("/rest/people").json()["totalCount"] == 0


def test_python_dash_m_starts_a_server_and_prints_the_key() -> None:
    port = free_port()
    proc = spawn_sandbox(port, "--api-key", "cli-key", "--member-token", "ui-token=Grace Hopper")
    try:
        assert proc.stdout is not None
        lines = []
        deadline = time.monotonic() + 20
        while not any("REQUESTS_PER_MINUTE" in line for line in lines):
            assert time.monotonic() < deadline, f"no key printed: {lines}"
            line = proc.stdout.readline()
            assert line, f"sandbox exited early: {lines}"
            lines.append(line)
        text = "".join(lines)
        assert "export TWENTY_API_KEY=cli-key" in text
        # The client's own budget, matched to the server's limit (100 a minute unless told otherwise).
        assert "export TRUTH_FORGE_TWENTY_REQUESTS_PER_MINUTE=100\n" in text
        url = re.search(r"export TWENTY_BASE_URL=(\S+)", text)
        assert url and url.group(1) == f"http://127.0.0.1:{port}"
        # The key is printed just before uvicorn starts listening.
        response = first_answer(lambda: httpx.get(f"{url.group(1)}/rest/people",
                                                  headers={"Authorization": "Bearer cli-key"}))
        assert response.status_code == 200 and response.json()["totalCount"] == 0
        by_member = httpx.post(f"{url.group(1)}/rest/people", json={"name": {"firstName": "G"}},
                               headers={"Authorization": "Bearer ui-token"})
        assert by_member.status_code == 201, by_member.text
        actor = by_member.json()["data"]["createPerson"]["updatedBy"]
        assert actor["source"] == "MANUAL" and actor["name"] == "Grace Hopper"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_non_loopback_hosts_are_refused() -> None:
    import pytest

    with pytest.raises(ValueError, match="loopback"):
        SandboxConfig(host="0.0.0.0")


def test_sandbox_command_registers_as_a_typer_command() -> None:
    import typer
    from typer.testing import CliRunner

    from truth_forge.sandbox.cli import sandbox_command

    app = typer.Typer()
    app.command("sandbox")(sandbox_command)
    app.command("noop")(lambda: None)  # two commands, so `sandbox` is a real subcommand
    result = CliRunner().invoke(app, ["sandbox", "--help"])
    assert result.exit_code == 0, result.output
    for option in ("--port", "--host", "--api-key", "--db", "--rate-limit", "--rate-limit-v2",
                   "--docs-batch-limit", "--legacy-metadata", "--twenty-version",
                   "--member-token", "--short-rate-limit"):
        assert option in result.output
    refused = CliRunner().invoke(app, ["sandbox", "--host", "0.0.0.0"])
    assert refused.exit_code != 0 and "loopback" in refused.output
    unknown = CliRunner().invoke(app, ["sandbox", "--twenty-version", "v0.1"])
    assert unknown.exit_code != 0 and "unknown twenty_version" in unknown.output
    no_name = CliRunner().invoke(app, ["sandbox", "--member-token", "tok"])
    assert no_name.exit_code != 0 and "TOKEN=First Last" in no_name.output


def test_profiles_choose_rules_as_a_whole_and_switches_override_one_rule() -> None:
    import pytest

    latest = SandboxConfig().behaviour
    assert (latest.email_check, latest.not_found_status, latest.rate_limit_refill,
            latest.empty_text_to_null, latest.links_update_merges) == (
        "strict", 404, "fractional", True, True)
    legacy = SandboxConfig(twenty_version="legacy").behaviour
    assert (legacy.email_check, legacy.not_found_status, legacy.rate_limit_refill,
            legacy.empty_text_to_null, legacy.links_update_merges) == (
        "lenient", 400, "floored", False, False)
    mixed = SandboxConfig(twenty_version="legacy", email_check="strict").behaviour
    assert (mixed.email_check, mixed.not_found_status) == ("strict", 400)
    with pytest.raises(ValueError, match="unknown twenty_version"):
        SandboxConfig(twenty_version="2024")
    with pytest.raises(ValueError, match="not_found_status"):
        SandboxConfig(not_found_status=500)  # type: ignore[arg-type]


def test_python_dash_m_accepts_a_twenty_version() -> None:
    port = free_port()
    proc = spawn_sandbox(port, "--api-key", "k", "--twenty-version", "legacy")
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert "rules: legacy" in first, first
        response = first_answer(lambda: httpx.post(f"http://127.0.0.1:{port}/rest/people",
                                                   headers={"Authorization": "Bearer k"},
                                                   json=person("Ada", email="Ada@Example.com")))
        # Legacy rules lower-case a mixed-case email instead of refusing it.
        assert response.status_code == 201, response.text
        assert response.json()["data"]["createPerson"]["emails"]["primaryEmail"] == \
            "ada@example.com"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
