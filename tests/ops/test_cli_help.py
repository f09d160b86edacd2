"""What a Python tool's user expects of its command line: flags that read as flags, examples in the
main commands' help, and shell completion (`--show-completion`, `--install-completion`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.ops.conftest import Cli

COMMANDS = ("setup", "verify", "demo", "sync", "status", "runs", "errors", "init", "sandbox", "sample-data",
            "doctor", "serve")
WITH_EXAMPLES = ("sync", "status", "init", "setup", "demo")


@pytest.mark.parametrize("command", COMMANDS)
def test_flags_read_as_flags_not_as_values(cli: Cli, command: str) -> None:
    shown = cli(command, "--help")
    assert shown.returncode == 0, shown.stderr
    assert "<bool>" not in shown.stdout and "--help" in shown.stdout


@pytest.mark.parametrize("command", WITH_EXAMPLES)
def test_the_main_commands_show_examples(cli: Cli, command: str) -> None:
    shown = cli(command, "--help").stdout
    assert "Example" in shown and f"truth-forge {command}" in shown.split("Example", 1)[1]


def test_sync_options_name_what_they_take(cli: Cli) -> None:
    shown = cli("sync", "--help").stdout
    for option in ("--direction DIRECTION", "--select OBJECT", "--every INTERVAL", "--wait-for-lease SECONDS",
                   "--log-format FORMAT"):
        assert option in shown


def test_show_completion_prints_a_bash_script(cli: Cli) -> None:
    entry_point = Path(sys.executable).parent / "truth-forge"  # the name the completion is for
    # Typer finds the shell from the process tree (shellingham) and then ignores "bash"; a test run
    # under make/nohup/xdist may have no shell above it ("Shell  not supported"). Its own switch makes
    # the option take the shell named, whatever runs the test.
    env = {**cli.env, "_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"}
    done = subprocess.run([str(entry_point), "--show-completion", "bash"], env=env, cwd=cli.cwd,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "complete " in done.stdout and "_TRUTH_FORGE_COMPLETE" in done.stdout
    listed = cli("--help").stdout
    assert "--install-completion" in listed and "--show-completion" in listed


def test_help_loads_no_engine_client_or_settings_library(cli: Cli) -> None:
    """`--help` (and completion, which runs on every Tab) imports what it shows, not what commands use."""
    probe = ("import sys\nfrom truth_forge.cli.main import app\ntry:\n    app(['--help'], prog_name='truth-forge')\n"
             "except SystemExit:\n    pass\n"
             "print(' '.join(m for m in ('pydantic', 'httpx', 'duckdb', 'sqlglot', 'uvicorn', 'google') "
             "if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", probe], env=cli.env, cwd=cli.cwd, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == ""  # the line of loaded heavy modules is empty
