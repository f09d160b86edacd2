"""`truth-forge sync` from the command line: exit codes say how the run went."""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from truth_forge.cli.main import app
from truth_forge.warehouse import open_warehouse
from truth_forge.warehouse.sample_data import generate_sample_data


@pytest.fixture
def env(sandbox: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    url = f"duckdb:///{tmp_path / 'cli.duckdb'}"
    monkeypatch.delenv("TWENTY_CRM_API_KEY", raising=False)
    monkeypatch.setenv("TWENTY_API_KEY", sandbox.api_key)
    monkeypatch.setenv("TWENTY_BASE_URL", sandbox.base_url)
    monkeypatch.setenv("TRUTH_FORGE_WAREHOUSE_URL", url)
    monkeypatch.setenv("TRUTH_FORGE_TWENTY_REQUESTS_PER_MINUTE", "100000")
    with open_warehouse(url) as wh:
        wh.ensure_tables()
        generate_sample_data(wh, 12, 3, seed=1)
    return url


def test_sync_exit_codes_follow_the_run(env: str) -> None:
    runner = CliRunner()
    assert runner.invoke(app, ["setup"]).exit_code == 0
    first = runner.invoke(app, ["sync", "--json"])
    assert first.exit_code == 0, first.output
    assert json.loads(first.stdout)["counts"]["push_person"]["upserted"] == 12
    with open_warehouse(env) as wh:
        wh.upsert_contacts([{"contact_id": 3, "primary_phone": "12", "additional_phones": []}])
    partial = runner.invoke(app, ["sync", "--log-format", "text"])
    assert partial.exit_code == 1 and "partial" in partial.stdout and "error push person 3" in partial.stdout
    assert "truth-forge errors --run" in partial.stdout


def test_sync_without_setup_stops_with_a_setup_hint(env: str) -> None:
    result = CliRunner().invoke(app, ["sync"])
    assert result.exit_code == 2
    assert "truth-forge setup" in result.stdout


def test_bad_options_are_refused(env: str) -> None:
    result = CliRunner().invoke(app, ["sync", "--direction", "sideways"])
    assert result.exit_code == 2 and "--direction" in result.output


class _RedirectWithKey(http.server.BaseHTTPRequestHandler):
    """A base URL that answers 302 with the caller's key in the Location (a login page, say)."""

    def do_GET(self) -> None:  # noqa: N802 (the standard library's name)
        key = self.headers.get("Authorization", "").partition(" ")[2]
        self.send_response(302)
        self.send_header("Location", f"https://login.example.test/sso?token={key}")
        self.send_header("X-Echo-Key", key)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        return None  # keep the test output to what truth-forge prints


@pytest.mark.parametrize("command", [["setup"], ["-v", "verify"], ["-v", "sync", "--create"]])
def test_a_redirect_with_the_key_in_it_never_prints_the_key(tmp_path: Path, command: list[str]) -> None:
    key = "tf-secret-key-0123456789abcdef"
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RedirectWithKey)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TWENTY", "TRUTH_FORGE"))}
    env.update(TWENTY_API_KEY=key, TWENTY_BASE_URL=f"http://127.0.0.1:{server.server_address[1]}",
               TRUTH_FORGE_WAREHOUSE_URL=f"duckdb:///{tmp_path / 'w.duckdb'}")
    try:
        done = subprocess.run([sys.executable, "-m", "truth_forge.cli.main", *command], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=60)
    finally:
        server.shutdown()
        server.server_close()
    output = done.stdout + done.stderr
    assert done.returncode != 0 and "redirects to https://login.example.test/sso" in output, output
    assert key not in output
