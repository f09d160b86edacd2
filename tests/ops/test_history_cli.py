"""`truth-forge history` and `truth-forge conflicts`, in a fresh process as a user runs them."""

from __future__ import annotations

import json
from typing import Any

import httpx

from tests.fixtures.sandbox import SANDBOX_MEMBER_NAME, as_person
from tests.ops.conftest import Cli
from truth_forge.twenty import TwentyClient
from truth_forge.warehouse import open_warehouse


def twenty_person(sandbox: Any, key: int) -> dict[str, Any]:
    with TwentyClient(sandbox.base_url, sandbox.api_key, requests_per_minute=100_000, timeout=5) as api:
        [found] = [p for p in api.records.iter_records("people") if p["contactId"] == str(key)]
    return found


def as_json(cli: Cli, *args: str) -> Any:
    done = cli(*args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_history_and_conflicts_from_the_command_line(ready_cli: Cli, sandbox: Any, warehouse_url: str) -> None:
    assert ready_cli("sync", "--quiet").returncode == 0
    four = twenty_person(sandbox, 4)
    with open_warehouse(warehouse_url) as wh:
        base = wh.get_rows("person", [4])[0]["category_code"]
        ours = "H" if base != "H" else "G"
        theirs = "A" if base != "A" else "B"
        wh.upsert_contacts([{"contact_id": 4, "category_code": ours}])
    with httpx.Client(base_url=sandbox.base_url, headers=as_person(sandbox)) as http:
        http.patch(f"/rest/people/{four['id']}", json={"categoryCode": theirs}).raise_for_status()
    assert ready_cli("sync", "--quiet").returncode == 0

    [pulled, created] = as_json(ready_cli, "history", "contact", "4")
    assert (pulled["field"], pulled["old_value"], pulled["new_value"], pulled["side"], pulled["actor"]) == (
        "category_code", ours, theirs, "twenty", SANDBOX_MEMBER_NAME)
    assert created["field"] == "(created)"
    assert as_json(ready_cli, "history", "--crm-id", four["id"]) == [pulled, created]
    shown = ready_cli("history", "contact", "4")
    assert shown.returncode == 0 and f"{ours} → {theirs}" in shown.stdout and SANDBOX_MEMBER_NAME in shown.stdout

    [conflict] = as_json(ready_cli, "conflicts", "--open")
    assert (conflict["base_value"], conflict["warehouse_value"], conflict["twenty_value"]) == (base, ours, theirs)
    listed = ready_cli("conflicts")
    assert listed.returncode == 0 and conflict["conflict_id"][:12] in listed.stdout and "open" in listed.stdout

    outcome = as_json(ready_cli, "conflicts", "resolve", conflict["conflict_id"][:12], "--take", "warehouse",
                      "--by", "Grace Hopper")
    assert outcome["push"]["upserted"] == 1 and outcome["errors"] == []
    assert twenty_person(sandbox, 4)["categoryCode"] == ours
    assert as_json(ready_cli, "conflicts", "--open") == []
    newest = as_json(ready_cli, "history", "contact", "4")[0]
    assert (newest["via"], newest["actor"], newest["new_value"]) == ("resolve", "Grace Hopper", ours)
    again = ready_cli("conflicts", "resolve", conflict["conflict_id"], "--take", "twenty")
    assert again.returncode != 0 and "already resolved" in again.stderr
