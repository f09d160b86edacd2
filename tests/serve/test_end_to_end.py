"""End to end over loopback: edits in the sandbox reach the warehouse through its webhooks, what a
webhook missed arrives with the next scheduled sync, and destroyed records end up deleted."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from tests.sandbox.util import create_person
from tests.serve.conftest import ServeHarness, wait_until
from truth_forge.twenty import TwentyClient
from truth_forge.warehouse import open_warehouse


def contact_of(harness: ServeHarness, crm_id: str) -> dict[str, Any] | None:
    """The warehouse's view of the Twenty person `crm_id` (a second connection to the file serve writes)."""
    with open_warehouse(harness.warehouse_url) as wh:
        state = wh.read_sync_state_by_crm_id("person", [crm_id]).get(crm_id)
        if state is None:
            return None
        rows = wh.get_rows("person", [int(state["record_key"])])
        return {**rows[0], "sync_status": state["status"]} if rows else None


def test_created_edited_and_destroyed_in_twenty_reach_the_warehouse(
        harness: ServeHarness, crm: TwentyClient, sandbox_client: httpx.Client) -> None:
    harness.register(sandbox_client)
    ada = create_person(sandbox_client, first="Ada", last="Lovelace", email="ada@example.com")
    wait_until(lambda: contact_of(harness, ada["id"]) is not None, "the new person in the warehouse")
    assert contact_of(harness, ada["id"])["canonical_name"] == "Ada Lovelace"  # type: ignore[index]

    sandbox_client.patch(f"/rest/people/{ada['id']}", json={"name": {"firstName": "Augusta", "lastName": "King"}})
    wait_until(lambda: (contact_of(harness, ada["id"]) or {}).get("canonical_name") == "Augusta King",
               "the edit in the warehouse")

    sandbox_client.delete(f"/rest/people/{ada['id']}")  # destroyed, not soft-deleted: a pull never sees it again
    wait_until(lambda: (contact_of(harness, ada["id"]) or {}).get("deleted_at") is not None,
               "the destroyed person marked deleted")
    row = contact_of(harness, ada["id"])
    assert row is not None and row["sync_status"] == "deleted" and row["canonical_name"] == "Augusta King"


def test_soft_delete_and_restore_in_twenty_follow_through_webhooks(
        harness: ServeHarness, crm: TwentyClient, sandbox_client: httpx.Client) -> None:
    harness.register(sandbox_client)
    bob = create_person(sandbox_client, first="Bob", email="bob@example.com")
    wait_until(lambda: contact_of(harness, bob["id"]) is not None, "the new person in the warehouse")
    sandbox_client.delete(f"/rest/people/{bob['id']}", params={"soft_delete": "true"})
    wait_until(lambda: (contact_of(harness, bob["id"]) or {}).get("deleted_at") is not None, "the soft delete")
    sandbox_client.patch(f"/rest/people/{bob['id']}/restore")
    wait_until(lambda: (contact_of(harness, bob["id"]) or {"deleted_at": 1}).get("deleted_at") is None,
               "the restore")


def test_our_own_writes_coming_back_are_echoes(
        harness: ServeHarness, crm: TwentyClient, sandbox_client: httpx.Client) -> None:
    harness.register(sandbox_client)
    create_person(sandbox_client, first="Cy", email="cy@example.com")
    # person.created, then person.updated when serve writes the new contactId back into Twenty.
    assert harness.sandbox.wait_for_deliveries(2)
    status = harness.wait_applied(2)
    applied = status["writer"]["applied"]
    assert applied["events"] == 2 and applied["stale"] == 0
    assert applied["echoes"] == 1  # the key write-back was recognised as ours
    assert len(harness.sandbox.webhook_deliveries) == 2  # and caused no further write to Twenty


def test_an_event_the_sandbox_dropped_arrives_with_the_next_scheduled_sync(
        make_harness: Callable[..., ServeHarness], crm: TwentyClient, sandbox_client: httpx.Client) -> None:
    harness = make_harness(sync_interval=1.0)
    harness.wait_ready()
    hook = harness.register(sandbox_client)
    eve = create_person(sandbox_client, first="Eve", email="eve@example.com")
    wait_until(lambda: contact_of(harness, eve["id"]) is not None, "the new person in the warehouse")

    # Twenty delivers once and never retries: point the webhook at a closed port for one edit.
    sandbox_client.patch(f"/rest/metadata/webhooks/{hook}", json={"targetUrl": "http://127.0.0.1:9/closed"})
    deliveries_before = len(harness.sandbox.webhook_deliveries)
    sandbox_client.patch(f"/rest/people/{eve['id']}", json={"jobTitle": "CTO", "name": {"firstName": "Evelyn"}})
    failed = harness.sandbox.wait_for_deliveries(deliveries_before + 1)[-1]
    assert not failed.ok  # the event is lost as far as webhooks go
    syncs_before = harness.status()["writer"]["syncs"]

    wait_until(lambda: harness.status()["writer"]["syncs"] >= syncs_before + 2, "two scheduled syncs")
    assert contact_of(harness, eve["id"])["canonical_name"] == "Evelyn"  # type: ignore[index]
    assert harness.status()["writer"]["last_sync"]["status"] == "succeeded"
