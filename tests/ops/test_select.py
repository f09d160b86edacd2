"""`sync --select person|company`: a run (or a dry run) of some objects only."""

from __future__ import annotations

import json

from tests.ops.conftest import Cli


def test_select_syncs_only_the_objects_named(ready_cli: Cli) -> None:
    done = ready_cli("sync", "--select", "company", "--json")
    assert done.returncode == 0, done.stderr
    counts = json.loads(done.stdout)["counts"]
    assert counts["push_company"]["upserted"] == 5
    assert not any(name.endswith("_person") for name in counts)

    both = ready_cli("sync", "--select", "person,company", "--json")
    counts = json.loads(both.stdout)["counts"]
    assert counts["push_person"]["upserted"] == 30 and counts["push_company"]["upserted"] == 0


def test_a_dry_run_plans_the_selection_only(ready_cli: Cli) -> None:
    done = ready_cli("sync", "--dry-run", "--json", "--select", "person")
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    assert {c["object_type"] for c in plan["changes"]} == {"person"}


def test_an_unknown_object_is_one_line_and_exit_2(ready_cli: Cli) -> None:
    done = ready_cli("sync", "--select", "people")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: --select: unknown object people: choose from company, person"]
