"""`status`, `runs` and `errors`: what ran, what is still failing and since when, what comes next,
read from the warehouse by a user who never writes SQL."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.ops.conftest import Cli
from truth_forge.warehouse import open_warehouse


def bad_phone(url: str, contact_id: int = 4) -> None:
    with open_warehouse(url) as wh:
        wh.upsert_contacts([{"contact_id": contact_id, "primary_phone": "12", "additional_phones": []}])


def errors(cli: Cli, *args: str) -> list[dict[str, Any]]:
    done = cli("errors", "--json", *args)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_a_record_error_keeps_its_attempts_and_closes_when_the_record_syncs(ready_cli: Cli, warehouse_url: str) -> None:
    bad_phone(warehouse_url)
    assert ready_cli("sync", "--quiet").returncode == 1
    assert ready_cli("sync", "--quiet").returncode == 1  # still failing: a second attempt
    [error] = errors(ready_cli, "--open")
    assert (error["operation"], error["object_type"], error["record_key"]) == ("push", "person", "4")
    assert error["attempts"] == 2 and error["is_open"] and error["first_seen"] < error["last_seen"]
    with open_warehouse(warehouse_url) as wh:
        wh.upsert_contacts([{"contact_id": 4, "primary_phone": "+33 6 12 34 56 78", "additional_phones": []}])
    assert ready_cli("sync", "--quiet").returncode == 0
    assert errors(ready_cli, "--open") == []
    [closed] = errors(ready_cli)
    assert not closed["is_open"] and closed["resolved_at"] >= closed["last_seen"] and closed["attempts"] == 2


def test_a_run_level_error_closes_with_the_next_successful_run(ready_cli: Cli) -> None:
    refused = ready_cli("sync", "--quiet", TWENTY_API_KEY="a-wrong-key")
    assert refused.returncode == 2
    [error] = errors(ready_cli, "--open")
    assert error["record_key"] is None and error["error_class"] == "TwentyAuthError" and error["operation"] == "run"
    assert ready_cli("sync", "--quiet").returncode == 0
    assert errors(ready_cli, "--open") == []
    assert errors(ready_cli)[0]["resolved_at"] is not None


def test_errors_of_one_run(ready_cli: Cli, warehouse_url: str) -> None:
    assert ready_cli("sync", "--quiet").returncode == 0
    bad_phone(warehouse_url, 5)
    assert ready_cli("sync", "--quiet").returncode == 1
    runs = json.loads(ready_cli("runs", "--json").stdout)
    assert [r["status"] for r in runs] == ["partial", "succeeded"]
    assert errors(ready_cli, "--run", runs[1]["run_id"]) == []
    [error] = errors(ready_cli, "--run", runs[0]["run_id"])
    assert error["record_key"] == "5" and error["last_run_id"] == runs[0]["run_id"]
    table = ready_cli("errors", "--run", runs[0]["run_id"])
    assert "open" in table.stdout and "push person" in table.stdout and " 5 " in table.stdout


def test_status_says_what_ran_what_is_open_and_what_comes_next(ready_cli: Cli, warehouse_url: str) -> None:
    assert ready_cli("sync", "--quiet").returncode == 0  # Twenty was empty: no watermark yet
    bad_phone(warehouse_url)
    assert ready_cli("sync", "--quiet").returncode == 1  # pulls the first run's records: watermarks now
    done = ready_cli("status")
    assert done.returncode == 1, done.stderr  # an error is open
    text = done.stdout
    assert "Twenty setup: complete (17 custom fields)" in text
    assert "Last runs:" in text and "partial" in text
    assert "Open errors: 1" in text and "push person" in text and "1 attempts" in text
    assert "pull:person: 20" in text and "pull:company: 20" in text
    assert "The next run will:" in text and "push people: 0 never sent, 1 failed or pending sent again" in text
    assert "pull people: changed since" in text


def test_status_as_json_and_healthy_after_a_clean_run(ready_cli: Cli) -> None:
    for _ in range(2):  # the second run's pull reads the first run's records: watermarks set
        assert ready_cli("sync", "--quiet").returncode == 0
    done = ready_cli("status", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["open_errors"] == 0 and report["runs"][0]["status"] == "succeeded"
    assert report["synced"]["person"] == {"synced": 30} and report["never_pushed"] == {"person": 0, "company": 0}
    assert set(report["watermarks"]) == {"pull:person", "pull:company"}  # nothing deleted yet
    assert [r["status"] for r in report["runs"]] == ["succeeded", "succeeded"]


def test_status_before_any_run_says_so_and_what_the_first_run_does(ready_cli: Cli) -> None:
    done = ready_cli("status")
    assert done.returncode == 0, done.stderr
    assert "none yet" in done.stdout and "pull people: all of them (first pull)" in done.stdout
    assert "push people: 30 never sent" in done.stdout


def test_status_without_twenty_still_reads_the_warehouse(ready_cli: Cli) -> None:
    done = ready_cli("status", TWENTY_BASE_URL="http://127.0.0.1:1", TRUTH_FORGE_TWENTY_MAX_RETRIES="0")
    assert "Twenty setup: not checked: Could not connect to Twenty at http://127.0.0.1:1" in done.stdout
    assert "TWENTY_BASE_URL" in done.stdout and done.returncode == 1


def test_looking_never_creates_a_warehouse(ready_cli: Cli, tmp_path: Path) -> None:
    missing = tmp_path / "none.duckdb"
    for command in (["status", "--offline"], ["runs"], ["errors"]):
        done = ready_cli(*command, TRUTH_FORGE_WAREHOUSE_URL=f"duckdb:///{missing}")
        assert done.returncode == 2 and "does not exist" in done.stderr
    assert not missing.exists()


def test_status_says_how_many_pulled_values_wait_to_land(ready_cli: Cli, warehouse_url: str) -> None:
    with open_warehouse(warehouse_url + "?stage_pulled=true") as wh:
        current = {r["contact_id"]: r for r in wh.get_rows("person", [7])}
        wh.land_pulled("person", [{"contact_id": 7, "canonical_name": "Staged In Twenty"}], current)
    done = ready_cli("status", "--json", "--offline")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["waiting_to_land"]["records"] == 1
    assert any(step.startswith("land 1 pulled records waiting") for step in report["next_run"])
