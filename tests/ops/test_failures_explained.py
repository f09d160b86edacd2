"""Every failure a new user met ends in one line that names what to fix, and the exit code says
"could not run" (2), not "some records failed" (1); the traceback appears only under -v."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.ops.conftest import REPO, Cli
from truth_forge.operations.failures import EXIT_CODES, exit_codes_markdown


def one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    """The error line of a failed command, after checking it is the only thing said about it."""
    assert "Traceback" not in done.stderr + done.stdout, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, done.stderr
    return errors[0]


def refused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # nothing listens there once the socket closes


def test_a_duckdb_file_in_a_folder_that_cannot_exist_is_one_line_and_exit_2(cli: Cli) -> None:
    url = "duckdb:////proc/nope/x.duckdb"
    missing = cli("sync", TRUTH_FORGE_WAREHOUSE_URL=url)
    assert missing.returncode == 2
    line = one_line_error(missing)
    assert "/proc/nope/x.duckdb" in line and "does not exist" in line and "TRUTH_FORGE_WAREHOUSE_URL" in line
    created = cli("sync", "--create", TRUTH_FORGE_WAREHOUSE_URL=url)
    assert created.returncode == 2
    line = one_line_error(created)
    assert "cannot create the folder '/proc/nope'" in line and "TRUTH_FORGE_WAREHOUSE_URL" in line


def test_a_typo_in_the_warehouse_file_is_refused_not_started_afresh(ready_cli: Cli, warehouse_url: str) -> None:
    typo = warehouse_url.replace("warehouse.duckdb", "warehuose.duckdb")
    done = ready_cli("sync", TRUTH_FORGE_WAREHOUSE_URL=typo)
    assert done.returncode == 2
    line = one_line_error(done)
    assert "warehuose.duckdb" in line and "truth-forge init" in line and "--create" in line
    assert not Path(typo.removeprefix("duckdb:///")).exists()


def test_init_creates_the_warehouse_that_sync_then_accepts(ready_cli: Cli, tmp_path: Path) -> None:
    url = f"duckdb:///{tmp_path / 'new' / 'fresh.duckdb'}"
    made = ready_cli("init", TRUTH_FORGE_WAREHOUSE_URL=url)
    assert made.returncode == 0 and "warehouse ready" in made.stdout, made.stderr
    synced = ready_cli("sync", "--quiet", TRUTH_FORGE_WAREHOUSE_URL=url)
    assert synced.returncode == 0, synced.stderr


def test_an_unreachable_bigquery_endpoint_fails_within_the_timeout_and_names_it(cli: Cli) -> None:
    done = cli("sync", TRUTH_FORGE_WAREHOUSE_URL="bigquery://p/d?endpoint=http://127.0.0.1:1",
               TRUTH_FORGE_WAREHOUSE_TIMEOUT_SECONDS="2", timeout=90)
    assert done.returncode == 2
    line = one_line_error(done)
    assert "http://127.0.0.1:1" in line and "TRUTH_FORGE_WAREHOUSE_TIMEOUT_SECONDS" in line and "p.d" in line


def test_bigquery_without_the_extra_says_what_to_install(cli: Cli) -> None:
    # A DuckDB user's install has no Google clients: the interpreter is told they are not there.
    script = ("import sys; sys.modules['google'] = None; sys.argv[0] = 'truth-forge'; "
              "from truth_forge.cli.main import app; app()")
    done = subprocess.run([sys.executable, "-c", script, "sync"], capture_output=True, text=True, timeout=60,
                          env={**cli.env, "TRUTH_FORGE_WAREHOUSE_URL": "bigquery://p/d"}, cwd=cli.cwd)
    assert done.returncode == 2
    assert "pip install 'truth-forge[bigquery]'" in one_line_error(done)


def test_a_duckdb_sync_never_imports_grpc_or_the_google_clients(ready_cli: Cli) -> None:
    script = ("import sys, runpy; sys.argv = ['truth-forge', 'sync', '--quiet']\n"
              "try:\n    runpy.run_module('truth_forge.cli.main', run_name='__main__')\n"
              "except SystemExit as done:\n"
              "    print(sorted(m for m in sys.modules if m.split('.')[0] in ('grpc', 'google')), done.code)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          env=ready_cli.env, cwd=ready_cli.cwd)
    assert done.stdout.strip() == "[] 0", done.stderr


def test_the_google_clients_are_an_extra_not_a_dependency() -> None:
    from importlib.metadata import requires

    requirements = requires("truth-forge") or []
    google = [r for r in requirements if r.startswith(("google-", "grpcio"))]
    assert google and all('extra == "bigquery"' in r for r in google), google


def test_nothing_listening_at_the_base_url_names_twenty_base_url(ready_cli: Cli) -> None:
    url = f"http://127.0.0.1:{refused_port()}"
    done = ready_cli("sync", TWENTY_BASE_URL=url, TRUTH_FORGE_TWENTY_MAX_RETRIES="0")
    assert done.returncode == 2
    line = one_line_error(done)
    assert "TWENTY_BASE_URL" in line and url in line


def test_a_wrong_path_prefix_shows_the_whole_url_tried(ready_cli: Cli, sandbox: Any) -> None:
    done = ready_cli("setup", TWENTY_BASE_URL=f"{sandbox.base_url}/twenty")
    assert done.returncode == 2
    line = one_line_error(done)
    assert f"{sandbox.base_url}/twenty/rest/metadata" in line and "TWENTY_BASE_URL" in line


def test_a_base_url_without_a_scheme_names_the_variable_the_user_set(cli: Cli) -> None:
    for variable in ("TWENTY_BASE_URL", "TRUTH_FORGE_TWENTY_BASE_URL"):
        done = cli("sync", **{variable: "api.twenty.com"})
        assert done.returncode == 2
        line = one_line_error(done)
        assert f"{variable}='api.twenty.com'" in line and "http://" in line
        assert "pydantic" not in line and "twenty_base_url" not in line


def test_a_settings_error_names_the_setting_whatever_the_command(cli: Cli) -> None:
    done = cli("status", TRUTH_FORGE_ALERT_SMTP_PORT="smtp")
    assert done.returncode == 2
    assert "TRUTH_FORGE_ALERT_SMTP_PORT='smtp'" in one_line_error(done)


def test_setup_with_a_refused_key_could_not_run_which_is_not_incomplete(ready_cli: Cli) -> None:
    done = ready_cli("setup", TWENTY_API_KEY="not-the-key")
    assert done.returncode == 2
    line = one_line_error(done)
    assert "TWENTY_API_KEY" in line and "not-the-key" not in done.stdout + done.stderr


def test_verbose_shows_the_traceback_of_the_same_failure(cli: Cli) -> None:
    done = cli("-v", "sync", TRUTH_FORGE_WAREHOUSE_URL="duckdb:////proc/nope/x.duckdb")
    assert done.returncode == 2 and "Traceback" in done.stderr and "WarehouseMissing" in done.stderr


def test_version_prints_the_installed_version(cli: Cli) -> None:
    from importlib.metadata import version

    done = cli("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"truth-forge {version('truth-forge')}"


def test_help_and_the_operating_guide_carry_the_exit_code_table(cli: Cli) -> None:
    shown = " ".join(cli("sync", "--help").stdout.split())
    for what, code, _ in EXIT_CODES:
        assert f"{code} = " in shown and what in shown
    assert "docs/operating.md's table" in shown
    assert exit_codes_markdown() in (REPO / "docs" / "operating.md").read_text()


def test_a_secret_manager_project_without_the_extra_falls_back_to_the_environment(cli: Cli) -> None:
    script = ("import sys; sys.modules['google'] = None\n"
              "from truth_forge.core.secrets import find_api_key\n"
              "print(find_api_key().source)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          env={**cli.env, "TRUTH_FORGE_GCP_PROJECT_ID": "p", "TWENTY_API_KEY": "k"}, cwd=cli.cwd)
    assert done.returncode == 0 and done.stdout.strip() == "environment variable TWENTY_API_KEY", done.stderr
    missing = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                             env={**cli.env, "TRUTH_FORGE_GCP_PROJECT_ID": "p"}, cwd=cli.cwd)
    assert "Google's clients are not installed (pip install 'truth-forge[bigquery]')" in missing.stderr
