"""`sync --dry-run`: the plan read from both sides (creates, updates by field, deletions, conflicts),
with not one write: the sandbox's request log holds only reads, the warehouse file is byte for byte
what it was."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import httpx

from tests.fixtures.sandbox import as_person
from tests.ops.conftest import Cli
from truth_forge.warehouse import TABLES, open_warehouse


def crm(sandbox: Any) -> httpx.Client:
    """Someone working in Twenty: plain HTTP, not our client."""
    return httpx.Client(base_url=sandbox.base_url, headers=as_person(sandbox))


def person_by_key(sandbox: Any, key: int) -> dict[str, Any]:
    with crm(sandbox) as http:
        people = http.get("/rest/people", params={"filter": f'contactId[eq]:"{key}"'}).json()["data"]["people"]
    return people[0]


def edits_on_both_sides(sandbox: Any, url: str) -> None:
    with open_warehouse(url) as wh:
        wh.upsert_contacts([{"contact_id": 5, "category_code": "X", "llm_context": {"note": "moved"}}])
        wh.upsert_contacts([{"contact_id": 11, "category_code": "A"}])
        wh.soft_delete("person", [9])
    seven, eleven = person_by_key(sandbox, 7), person_by_key(sandbox, 11)
    with crm(sandbox) as http:
        http.patch(f"/rest/people/{seven['id']}", json={"name": {"firstName": "Grace", "lastName": "Hopper"}}
                   ).raise_for_status()
        http.patch(f"/rest/people/{eleven['id']}", json={"categoryCode": "C"}).raise_for_status()
        http.post("/rest/people", json={"name": {"firstName": "Alan", "lastName": "Turing"},
                                        "emails": {"primaryEmail": "alan@example.org"}}).raise_for_status()


def fingerprint(url: str) -> tuple[str, dict[str, int]]:
    path = Path(url.removeprefix("duckdb:///"))
    with open_warehouse(url, read_only=True) as wh:
        counts = {name: wh.count_rows(name) for name in TABLES}
    return hashlib.sha256(path.read_bytes()).hexdigest(), counts


def bucket(plan: dict[str, Any], to: str, object_type: str, action: str) -> dict[str, Any]:
    [found] = [c for c in plan["changes"] if (c["to"], c["object_type"], c["action"]) == (to, object_type, action)]
    return found


def test_a_dry_run_plans_every_kind_of_change_and_writes_nothing(ready_cli: Cli, sandbox: Any,
                                                                 warehouse_url: str) -> None:
    assert ready_cli("sync", "--quiet").returncode == 0
    edits_on_both_sides(sandbox, warehouse_url)
    before = fingerprint(warehouse_url)
    sandbox.clear_request_log()

    done = ready_cli("sync", "--dry-run", "--json")

    assert done.returncode == 0, done.stderr
    assert {e.method for e in sandbox.request_log} == {"GET"}
    assert fingerprint(warehouse_url) == before
    plan = json.loads(done.stdout)
    assert plan["dry_run"] is True and plan["requests"] == len(sandbox.request_log)
    assert bucket(plan, "warehouse", "person", "create")["count"] == 1  # Alan, created in Twenty
    renamed = bucket(plan, "warehouse", "person", "update")
    assert renamed["fields"] == {"canonical_name": 1, "category_code": 1}  # Grace, and 11 as Twenty wins
    assert any("Grace Hopper" in s for s in renamed["samples"])
    sent = bucket(plan, "twenty", "person", "update")
    assert sent["count"] == 1 and set(sent["fields"]) == {"category_code", "llm_context"}  # contact 5
    assert bucket(plan, "twenty", "person", "delete")["count"] == 1  # contact 9
    assert plan["conflicts"]["count"] == 1 and "category_code" in plan["conflicts"]["samples"][0]

    real = ready_cli("sync", "--json")
    counts = json.loads(real.stdout)["counts"]
    assert counts["pull_person"]["created"] == 1 and counts["pull_person"]["conflicts"] == 1
    assert counts["push_person"]["upserted"] == 1 and counts["push_person"]["deleted"] == 1


def test_the_plan_reads_as_text(ready_cli: Cli, warehouse_url: str) -> None:
    done = ready_cli("sync", "--dry-run", "--log-format", "text")
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert text.startswith("Dry run: nothing was written (")
    assert "Into Twenty (from the warehouse):" in text and "create person: 30" in text
    assert "e.g. contact_id 1:" in text and "Conflicts: 0" in text


def test_a_dry_run_never_creates_the_warehouse(ready_cli: Cli, tmp_path: Path) -> None:
    missing = tmp_path / "typo.duckdb"
    done = ready_cli("sync", "--dry-run", TRUTH_FORGE_WAREHOUSE_URL=f"duckdb:///{missing}")
    assert done.returncode == 2 and not missing.exists()


def test_a_dry_run_names_the_rows_that_will_fail_and_shows_old_and_new_values(ready_cli: Cli,
                                                                              warehouse_url: str) -> None:
    assert ready_cli("sync", "--quiet").returncode == 0
    with open_warehouse(warehouse_url, read_only=True) as wh:
        [before] = wh.get_rows("person", [5])
    with open_warehouse(warehouse_url) as wh:
        wh.upsert_contacts([{"contact_id": 4, "primary_phone": "12", "additional_phones": []}])  # unreadable
        wh.upsert_contacts([{"contact_id": 6, "primary_email": "not an address",
                             "additional_emails": []}])  # sent without it
        wh.upsert_contacts([{"contact_id": 5, "canonical_name": "Ada Lovelace"}])

    planned = ready_cli("sync", "--dry-run", "--json")

    assert planned.returncode == 0, planned.stderr
    plan = json.loads(planned.stdout)
    failing = bucket(plan, "twenty", "person", "fail")
    assert failing["count"] == 1 and failing["samples"][0].startswith("contact_id 4:")
    without = bucket(plan, "twenty", "person", "send without a value")
    assert without["count"] == 1 and "not an address" in without["samples"][0]
    updates = bucket(plan, "twenty", "person", "update")
    [renamed] = [v for v, s in zip(updates["values"], updates["samples"]) if s.startswith("contact_id 5:")]
    assert renamed["canonical_name"] == {"old": before["canonical_name"], "new": "Ada Lovelace"}
    text = ready_cli("sync", "--dry-run", "--log-format", "text").stdout
    assert f'canonical_name "{before["canonical_name"]}" -> "Ada Lovelace"' in text
    assert "fail person: 1" in text

    real = ready_cli("sync", "--json")
    assert real.returncode == 1  # the plan's failing row is the run's failure
    failed = [e for e in json.loads(real.stdout)["sync_errors"] if e["resolved_at"] is None]
    assert {str(e["record_key"]) for e in failed} == {"4", "6"}  # 6 synced without its email, an open error
