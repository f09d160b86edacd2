"""Configuration mistakes end in one line and exit 2 (docs/operating.md's "a setting is invalid"), never a
traceback and never exit 1, which means "some records failed". Run as a user runs them: a subprocess."""

from __future__ import annotations

import http.server
import socket
import threading
from pathlib import Path

import pytest

from tests.ops.conftest import Cli
from truth_forge.warehouse import open_warehouse


def _one_clean_line(done: object, *, names: str) -> str:
    stderr = done.stderr
    assert done.returncode == 2, stderr
    assert "Traceback" not in stderr and "╭" not in stderr, stderr
    [line] = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert names in line, line
    return line


@pytest.mark.parametrize("command", ["sync", "status", "doctor"])
def test_malformed_table_renames_name_the_variable(cli: Cli, command: str) -> None:
    done = cli(command, TRUTH_FORGE_WAREHOUSE_TABLES='{contacts: people}', TWENTY_API_KEY="k")
    line = _one_clean_line(done, names="TRUTH_FORGE_WAREHOUSE_TABLES")
    assert "not valid JSON" in line and '{"contacts": "people_master"}' in line


@pytest.mark.parametrize("content, says", [
    (None, "Cannot read CRM schema file"),
    ("{not json", "Cannot read CRM schema file"),
    ('{"fields": {"name": "x"}}', "must hold a list under 'fields'"),
    ('{"fields": [{"object": "person", "name": "Bad Name", "type": "TEXT"}]}', "field #1"),
    ('{"fields": [{"object": "person", "name": "categoryCode", "column": "category_code", "label": "C",'
     ' "type": "TEXT"}]}', "twice"),
])
def test_every_schema_file_mistake_is_one_line(cli: Cli, tmp_path: Path, content: str | None, says: str) -> None:
    path = tmp_path / "schema.json"
    if content is not None:
        path.write_text(content)
    done = cli("sync", TRUTH_FORGE_CRM_SCHEMA_FILE=str(path), TWENTY_API_KEY="k")
    line = _one_clean_line(done, names=says)
    assert "TRUTH_FORGE_CRM_SCHEMA_FILE" in line


def test_serve_on_a_port_in_use_says_so(cli: Cli) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        done = cli("serve", "--port", str(port), TWENTY_API_KEY="k", TWENTY_WEBHOOK_SECRET="s" * 32, timeout=60)
    line = _one_clean_line(done, names=f"127.0.0.1:{port}")
    assert "in use" in line and "--port" in line
    assert "s" * 32 not in done.stderr + done.stdout


def test_https_against_plain_http_is_one_line_naming_the_url_fast(cli: Cli) -> None:
    key = "never-shown-key-77c1"
    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"https://127.0.0.1:{server.server_port}"
        done = cli("setup", TWENTY_BASE_URL=url, TWENTY_API_KEY=key, timeout=60)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    line = _one_clean_line(done, names=url)
    assert "answers plain HTTP, not HTTPS" in line and key not in done.stderr + done.stdout


def test_a_sync_with_a_typo_in_a_rename_stops_before_creating_anything(ready_cli: Cli, warehouse_url: str) -> None:
    done = ready_cli("sync", TRUTH_FORGE_WAREHOUSE_TABLES='{"businesses": "companys"}')
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    [line] = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert "'businesses' to 'companys', which does not exist" in line
    with open_warehouse(warehouse_url) as warehouse:
        assert "companys" not in warehouse._table_names()
        assert warehouse.recent_runs(5) == []


def test_a_misspelled_setting_is_said_with_the_name_it_was_meant_to_be(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("TRUTH_FORGE_TWENTY_BATCH_SIZ=50\n")  # cli runs in tmp_path
    done = cli("status", "--offline", TRUTH_FORGE_WAREHOUSE_ULR="duckdb:///x.duckdb")
    assert "TRUTH_FORGE_WAREHOUSE_ULR is not a truth-forge setting and is ignored " \
           "(did you mean TRUTH_FORGE_WAREHOUSE_URL?)" in done.stderr
    assert "TRUTH_FORGE_TWENTY_BATCH_SIZ is not a truth-forge setting" in done.stderr
    assert "TRUTH_FORGE_TWENTY_BATCH_SIZE?" in done.stderr
