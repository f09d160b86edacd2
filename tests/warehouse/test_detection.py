"""Incremental change detection against the full comparison as its oracle, on both engines.

Seeded random mutations of every kind a warehouse sees (inserts, scalar and JSON edits, emails and
phones added and removed, company links moved, soft deletes, business edits, failed pushes, and
rows written by a writer that does not stamp `updated_at`): the incremental detection finds exactly
what the full hash comparison finds, except the unstamped writes, which the audit finds.
"""

from __future__ import annotations

import datetime as dt
import random
from typing import Any

import pytest

from tests.warehouse.test_contract import contact, mark_synced
from truth_forge.warehouse import Warehouse
from truth_forge.warehouse.detection import DetectionPolicy

UTC = dt.UTC
OLD = dt.datetime.now(UTC) - dt.timedelta(days=3)  # long before any detection's overlap
INCREMENTAL = DetectionPolicy(audit_every=None)
KEYS = list(range(1, 61))
BUSINESSES = list(range(1, 9))


def key_of(object_type: str) -> str:
    return "contact_id" if object_type == "person" else "business_id"


def detected(wh: Warehouse, object_type: str, policy: DetectionPolicy, *, commit: bool = True) -> tuple[list[int], Any]:
    scan = wh.detect_changes(object_type, batch_size=7, policy=policy)  # type: ignore[arg-type]
    keys = [r[key_of(object_type)] for batch in scan for r in batch]
    if commit:
        scan.commit()
    return keys, scan


def oracle(wh: Warehouse, object_type: str) -> list[int]:
    return [r[key_of(object_type)] for batch in wh.changed_rows(object_type) for r in batch]  # type: ignore[arg-type]


def age_everything(wh: Warehouse) -> None:
    """Every row stamped long ago, as a warehouse that has been in sync for days."""
    for table in ("contacts", "contact_identifiers", "contact_businesses", "businesses"):
        wh._run(f"UPDATE {{{table}}} AS t SET updated_at = @old WHERE TRUE",
                (_scalar("old", OLD),))


def _scalar(name: str, value: dt.datetime) -> Any:
    from truth_forge.warehouse.binds import Scalar
    from truth_forge.warehouse.schema import TIMESTAMP

    return Scalar(name, TIMESTAMP, value)


@pytest.fixture
def in_sync(warehouse: Warehouse) -> Warehouse:
    warehouse.upsert_businesses([{"business_id": b, "business_name": f"Biz {b}", "industry": "Software"}
                                 for b in BUSINESSES])
    warehouse.upsert_contacts([contact(k, business_id=BUSINESSES[k % len(BUSINESSES)],
                                       additional_emails=[f"x{k}@a.example"] if k % 2 else [])
                               for k in KEYS])
    age_everything(warehouse)
    mark_synced(warehouse, "person", KEYS)
    mark_synced(warehouse, "company", BUSINESSES)
    # The first detection is an audit (nothing committed yet); it finds nothing and sets the mark.
    for object_type in ("person", "company"):
        keys, scan = detected(warehouse, object_type, INCREMENTAL)
        assert keys == [] and scan.mode == "audit"
    return warehouse


def mutate(wh: Warehouse, rng: random.Random) -> set[int]:
    """Apply random changes; returns the contact keys changed by a writer that did not stamp."""
    unstamped: set[int] = set()
    picks = rng.sample(KEYS, 24)
    for n, k in enumerate(picks):
        kind = n % 8
        if kind == 0:
            wh.upsert_contacts([{"contact_id": k, "canonical_name": f"Renamed {k} {rng.random():.6f}"}])
        elif kind == 1:
            wh.upsert_contacts([{"contact_id": k, "llm_context": {"summary": f"new {rng.random():.6f}"}}])
        elif kind == 2:
            wh.upsert_contacts([{"contact_id": k, "primary_email": f"p{k}@example.com",
                                 "additional_emails": [f"added{k}@b.example"]}])
        elif kind == 3:
            wh.upsert_contacts([{"contact_id": k, "primary_email": f"p{k}@example.com", "additional_emails": []}])
        elif kind == 4:
            wh.upsert_contacts([{"contact_id": k, "business_id": BUSINESSES[(k + 3) % len(BUSINESSES)]}])
        elif kind == 5:
            wh.soft_delete("person", [k])
        elif kind == 6:
            wh.upsert_sync_state([{"object_type": "person", "record_key": str(k), "status": "failed",
                                   "last_error": "HTTP 500"}])
        else:
            # A pipeline that writes without stamping: only the audit can see this.
            from truth_forge.warehouse.binds import KeySet, Scalar
            from truth_forge.warehouse.schema import INT64, STRING

            wh._run("UPDATE {contacts} AS t SET canonical_name = @name WHERE t.contact_id IN {keys_keys}",
                    (Scalar("name", STRING, f"Quiet {k}"), KeySet("keys", INT64, [k])))
            unstamped.add(k)
    new = max(KEYS) + 1 + rng.randrange(100)
    wh.upsert_contacts([contact(new)])
    wh.upsert_businesses([{"business_id": rng.choice(BUSINESSES), "industry": f"Energy {rng.random():.6f}"}])
    return unstamped


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_incremental_detection_finds_what_the_full_comparison_finds(in_sync: Warehouse, seed: int) -> None:
    unstamped = mutate(in_sync, random.Random(seed))
    for object_type in ("person", "company"):
        expected = oracle(in_sync, object_type)
        assert expected, "the mutations changed something"
        keys, scan = detected(in_sync, object_type, INCREMENTAL, commit=False)
        assert scan.mode == "incremental"
        missed = unstamped if object_type == "person" else set()
        assert keys == [k for k in expected if k not in missed]
        # The audit finds everything, and says how much no stamp announced.
        audited, audit = detected(in_sync, object_type, DetectionPolicy(audit=True))
        assert audited == expected
        assert audit.report["unstamped"] == len(missed)


def test_a_detection_not_committed_is_found_again_and_a_committed_one_is_not_repeated(in_sync: Warehouse) -> None:
    in_sync.upsert_contacts([{"contact_id": 5, "category_code": "C"}])
    first, _ = detected(in_sync, "person", INCREMENTAL, commit=False)  # the push died before settling
    again, _ = detected(in_sync, "person", INCREMENTAL)
    assert first == again == [5]
    mark_synced(in_sync, "person", [5])
    assert detected(in_sync, "person", INCREMENTAL)[0] == []


def test_a_failed_push_is_retried_until_it_lands(in_sync: Warehouse) -> None:
    in_sync.upsert_sync_state([{"object_type": "person", "record_key": "7", "status": "failed"}])
    assert detected(in_sync, "person", INCREMENTAL)[0] == [7]
    assert in_sync.retry_keys("person") == ["7"]
    assert detected(in_sync, "person", INCREMENTAL)[0] == [7]  # nothing stamped it: the retry list did
    mark_synced(in_sync, "person", [7])
    assert detected(in_sync, "person", INCREMENTAL)[0] == []
    assert in_sync.retry_keys("person") == []


def test_an_audit_falls_due_after_its_interval(in_sync: Warehouse) -> None:
    _, scan = detected(in_sync, "person", DetectionPolicy(audit_every=dt.timedelta(hours=24)))
    assert scan.mode == "incremental"
    _, scan = detected(in_sync, "person", DetectionPolicy(audit_every=dt.timedelta(0)))
    assert scan.mode == "audit"


def test_state_saved_during_a_scan_is_what_the_scan_judges_by(in_sync: Warehouse) -> None:
    """The push saves state while detection streams (journal, not yet folded): a row saved as synced
    since the query ran is not handed out, and the push reads no state for rows it was handed."""
    in_sync.upsert_contacts([{"contact_id": k, "category_code": "D"} for k in (3, 4)])
    scan = in_sync.detect_changes("person", batch_size=1, policy=INCREMENTAL)
    [[first]] = [next(iter(scan))]
    assert first["contact_id"] == 3
    mark_synced(in_sync, "person", [4])  # the push got there first (another thread, say)
    assert [r["contact_id"] for batch in scan for r in batch] == []
    before = in_sync.statements.statements
    assert in_sync.read_sync_state("person", [3])["3"]["status"] == "synced"
    assert in_sync.statements.statements == before  # served from what detection carried
