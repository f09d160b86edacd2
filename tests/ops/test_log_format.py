"""JSON log lines: the same shape from `sync` and `doctor` (and `serve`: tests/serve/test_log_format.py),
the time to the millisecond with its zone, and the id of the sync run a line belongs to."""

from __future__ import annotations

import json
import re
from typing import Any

from tests.ops.conftest import Cli

TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00$")


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]  # fails on a line that is not JSON


def test_sync_log_lines_carry_milliseconds_the_zone_and_the_run_id(ready_cli: Cli) -> None:
    done = ready_cli("sync", "--log-format", "json")
    assert done.returncode == 0, done.stderr
    summary = [e for e in json_lines(done.stdout) if e.get("event") == "summary"][0]
    logged = json_lines(done.stderr)
    assert logged and all(TIME.match(e["time"]) for e in logged), logged[:3]
    tagged = [e for e in logged if "run_id" in e]
    assert tagged and {e["run_id"] for e in tagged} == {summary["run_id"]}
    # Before the run there is no run: the key's source is logged untagged.
    assert any("API key loaded" in e["message"] and "run_id" not in e for e in logged)


def test_doctor_takes_log_format_json(ready_cli: Cli) -> None:
    done = ready_cli("doctor", "--log-format", "json")
    assert done.returncode == 0, done.stdout + done.stderr
    logged = json_lines(done.stderr)
    assert logged and all(TIME.match(e["time"]) for e in logged)
    assert "reachability" in done.stdout  # the findings stay on stdout, for people


def test_an_unknown_log_format_is_refused(ready_cli: Cli) -> None:
    done = ready_cli("doctor", "--log-format", "yaml")
    assert done.returncode == 2 and "--log-format must be text or json, not 'yaml'" in done.stderr
