"""Load the hostile corpus (tests/fixtures/hostile_data.py) on both sides and judge each case after a sync.

A case converged when no discrepancy names its record. A case allowed to fail (`either`) may instead
carry exactly one open error that names its field or reason. Any other discrepancy, including one
about a record that holds no bad data at all, is wrong.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tests.fixtures.hostile_data import HostileCase, warehouse_businesses, warehouse_rows
from tests.soak.convergence import Discrepancy, compare, read_warehouse, summarize
from tests.soak.harness import PlainTwenty
from truth_forge.warehouse import open_warehouse


@dataclass
class Verdict:
    case: HostileCase
    outcome: Literal["converged", "refused", "not let in", "wrong"]
    why: str = ""


def load(db_path: Path, twenty: PlainTwenty, cases: Sequence[HostileCase]) -> dict[str, str | None]:
    """Put each case on its side; returns the Twenty id of each Twenty-side case (None: Twenty refused it)."""
    with open_warehouse(f"duckdb:///{db_path}") as warehouse:
        for row in warehouse_rows(list(cases)):
            warehouse.upsert_contacts([row])  # one by one: the rows carry different sets of fields
        for row in warehouse_businesses(list(cases)):
            warehouse.upsert_businesses([row])
    crm_ids: dict[str, str | None] = {}
    for case in cases:
        if case.side == "twenty":
            made = twenty.try_create("people" if case.object_type == "person" else "companies", case.record)
            crm_ids[case.kind] = made["id"] if made else None
    return crm_ids


def judge(db_path: Path, twenty: PlainTwenty, cases: Sequence[HostileCase],
          crm_ids: dict[str, str | None]) -> tuple[list[Verdict], list[Discrepancy], int]:
    """A verdict per case, the discrepancies no case explains, and how many live records were compared."""
    side = read_warehouse(db_path)
    people, companies = twenty.records("people"), twenty.records("companies")
    found = compare(side, people, companies)
    claimed: set[int] = set()
    verdicts = []
    for case in cases:
        crm_id = crm_ids.get(case.kind)
        if case.side == "twenty" and crm_id is None:
            verdicts.append(Verdict(case, "not let in"))
            continue
        key = str(case.key) if case.key is not None else next(
            (k for (obj, k), s in side.state.items() if obj == case.object_type and s.get("crm_id") == crm_id), None)
        mine = [i for i, d in enumerate(found) if d.object_type in (case.object_type, "run")
                and ((key is not None and d.key == key) or (crm_id is not None and d.crm_id == crm_id))]
        claimed.update(mine)
        verdicts.append(_verdict(case, [found[i] for i in mine]))
    unexplained = [d for i, d in enumerate(found) if i not in claimed]
    return verdicts, unexplained, len(people) + len(companies)


def _verdict(case: HostileCase, mine: list[Discrepancy]) -> Verdict:
    if not mine:
        return Verdict(case, "converged")
    errors = [d for d in mine if d.field == "open_error"]
    if case.expect == "either" and len(errors) == 1 and any(r in errors[0].detail.lower() for r in case.reasons):
        return Verdict(case, "refused", errors[0].detail)
    if case.expect == "either" and len(errors) > 1:
        return Verdict(case, "wrong", f"{len(errors)} open errors, expected exactly one:\n{summarize(errors, 4)}")
    return Verdict(case, "wrong", summarize(mine, 6))


def problems(verdicts: Sequence[Verdict], unexplained: Sequence[Discrepancy]) -> list[str]:
    """Everything that is not as it must be, one line (or a few) each; [] when the corpus came through."""
    out = [f"{v.case.kind} ({v.case.side} {v.case.object_type}, expect {v.case.expect}): {v.why}"
           for v in verdicts if v.outcome == "wrong"]
    groups: dict[str, list[Verdict]] = {}
    for v in verdicts:
        if v.case.group:
            groups.setdefault(v.case.group, []).append(v)
    for group, members in groups.items():
        if not any(v.outcome == "converged" for v in members):
            out.append(f"group {group!r}: none of {[v.case.kind for v in members]} reached Twenty")
    if unexplained:
        out.append(f"{len(unexplained)} discrepancies on records without bad data:\n{summarize(unexplained, 10)}")
    return out
