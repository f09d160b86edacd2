"""The sync against Twenty's own rules, as the strict sandbox (profile "latest") enforces them:
unique values stay taken by soft-deleted records, database errors arrive as 400, and older servers
answer a missing record with 400 "Record not found".
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.sync.test_sync_sandbox import SCHEMA, crm, forget_state, people, person_by_key, record_writes
from truth_forge.core.crm_schema import setup_schema
from truth_forge.sandbox import SandboxConfig, SandboxServer
from truth_forge.sync.runner import run_sync
from truth_forge.twenty import TwentyClient
from truth_forge.twenty.errors import TwentyNotFound
from truth_forge.warehouse import open_warehouse
from truth_forge.warehouse.detection import DetectionPolicy
from truth_forge.warehouse.sample_data import generate_sample_data


def in_trash(client: TwentyClient, key: int) -> dict[str, Any]:
    [found] = client.records.iter_records("people", filter=f'contactId[eq]:"{key}",deletedAt[is]:NOT_NULL')
    return found


def test_a_contact_deleted_in_twenty_then_back_in_the_warehouse_is_revived_not_duplicated(
        sandbox: Any, client: TwentyClient, store: Any) -> None:
    run_sync(store, client, SCHEMA)
    ten = person_by_key(client, 10)
    with crm(sandbox) as http:
        http.delete(f"/rest/people/{ten['id']}", params={"soft_delete": "true"}).raise_for_status()
    run_sync(store, client, SCHEMA)
    assert store.get_rows("person", [10])[0]["deleted_at"] is not None  # the deletion came back
    store.upsert_contacts([{"contact_id": 10, "deleted_at": None, "category_code": "B"}])  # and is undone
    result = run_sync(store, client, SCHEMA)
    assert result.status == "succeeded", result.sync_errors
    back = person_by_key(client, 10)
    assert back["id"] == ten["id"] and back["deletedAt"] is None and back["categoryCode"] == "B"
    assert len(people(client)) == 40


def test_a_soft_deleted_record_of_ours_is_revived_even_when_the_state_forgot_it(
        sandbox: Any, client: TwentyClient, store: Any) -> None:
    """The create is refused (Twenty's unique index covers the trash); the lookup by key, with
    deletedAt in the filter, finds it there and the claim by id revives it."""
    run_sync(store, client, SCHEMA)
    eleven = person_by_key(client, 11)
    with crm(sandbox) as http:
        http.delete(f"/rest/people/{eleven['id']}", params={"soft_delete": "true"}).raise_for_status()
    forget_state(store, "person", ["11"])
    result = run_sync(store, client, SCHEMA, direction="push", detection=DetectionPolicy(audit=True))
    assert result.status == "succeeded", result.sync_errors
    back = person_by_key(client, 11)
    assert back["id"] == eleven["id"] and back["deletedAt"] is None and len(people(client)) == 40


def test_a_new_contact_whose_email_is_in_twentys_trash_fails_alone_saying_what_to_do(
        sandbox: Any, client: TwentyClient, store: Any) -> None:
    run_sync(store, client, SCHEMA)
    twelve = person_by_key(client, 12)
    email = twelve["emails"]["primaryEmail"]
    with crm(sandbox) as http:
        http.delete(f"/rest/people/{twelve['id']}", params={"soft_delete": "true"}).raise_for_status()
    run_sync(store, client, SCHEMA)
    store.upsert_contacts([
        {"contact_id": 500, "canonical_name": "Same Email", "primary_email": email.upper(), "additional_emails": []},
        {"contact_id": 501, "canonical_name": "Unrelated", "primary_email": "new501@example.org", "additional_emails": []},
    ])
    result = run_sync(store, client, SCHEMA)
    assert result.status == "partial" and result.counts["push_person"]["failed"] == 1
    [error] = result.sync_errors
    assert error["record_key"] == "500"
    assert f"held by Twenty person {twelve['id']} (contactId 12), which is in Twenty's trash" in error["error_message"]
    assert "delete it permanently" in error["error_message"]
    assert person_by_key(client, 501)["name"]["firstName"] == "Unrelated"  # the rest of the batch went through
    assert in_trash(client, 12)["id"] == twelve["id"]  # left where it was


def test_a_deadlock_answered_400_is_retried_and_marks_nothing_failed(
        sandbox: Any, client: TwentyClient, store: Any) -> None:
    client.records.batch_size = 10
    sandbox.set_faults(db_error_rate=0.5, path_prefix="/rest/batch/", seed=3, max_faults=6)
    result = run_sync(store, client, SCHEMA)
    assert sandbox.faults_injected >= 3
    assert result.status == "succeeded", result.sync_errors
    assert result.counts["push_person"] == {"upserted": 40, "deleted": 0, "failed": 0, "caught_up": 0}
    assert sorted(int(p["contactId"]) for p in people(client)) == list(range(1, 41))
    assert store.open_errors() == []


@pytest.fixture
def legacy_sandbox() -> Iterator[SandboxServer]:
    config = SandboxConfig(api_keys=["legacy-key"], rate_limit_per_minute=None, twenty_version="legacy")
    with SandboxServer(config) as server:
        yield server


def test_on_an_older_server_record_not_found_400_is_taken_as_gone(legacy_sandbox: SandboxServer, tmp_path: Path) -> None:
    with TwentyClient(legacy_sandbox.base_url, "legacy-key", requests_per_minute=100_000, timeout=5) as client, \
            open_warehouse(f"duckdb:///{tmp_path / 'w.duckdb'}") as store:
        setup_schema(client, SCHEMA)
        store.ensure_tables()
        generate_sample_data(store, 6, 2, seed=2)
        run_sync(store, client, SCHEMA)
        gone = person_by_key(client, 2)["id"]
        client.records.delete("people", gone, soft=False)
        with pytest.raises(TwentyNotFound):  # the server's answer is a 400 "Record not found"
            client.records.delete("people", gone, soft=True)
        assert any(e.status == 400 for e in legacy_sandbox.request_log if e.method == "DELETE")
        store.soft_delete("person", [2, 3])
        legacy_sandbox.clear_request_log()
        result = run_sync(store, client, SCHEMA)
        assert result.status == "succeeded", result.sync_errors
        assert result.counts["push_person"]["deleted"] == 2
        assert len(record_writes(legacy_sandbox)) == 1  # one batch delete; the destroyed one is simply done
