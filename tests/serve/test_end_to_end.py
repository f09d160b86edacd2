"""End to end over loopback: edits in the sandbox reach the warehouse through its webhooks, what a
webhook missed arrives with the next scheduled sync, and destroyed records end up deleted.

serve's writer process holds the DuckDB file, so each check pauses serve (`harness.paused()`),
reads the warehouse, and starts serve again on the same port.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from tests.sandbox.util import create_person
from tests.serve.conftest import ServeHarness, wait_until
from truth_forge.operations.history import record_history
from truth_forge.twenty import TwentyClient


def contact_of(wh: Any, crm_id: str) -> dict[str, Any] | None:
    """The warehouse's view of the Twenty person `crm_id`, with its sync status."""
    state = wh.read_sync_state_by_crm_id("person", [crm_id]).get(crm_id)
    if state is None:
        return None
    rows = wh.get_rows("person", [int(state["record_key"])])
    return {**rows[0], "sync_status": state["status"]} if rows else None


def test_created_edited_and_destroyed_in_twenty_reach_the_warehouse(
        harness: ServeHarness, crm: TwentyClient, sandbox_client: httpx.Client) -> None:
    harness.register(sandbox_client)
    ada = create_person(sandbox_client, first="Ada", last="Lovelace", email="ada@example.com")
    with harness.paused() as wh:
        assert contact_of(wh, ada["id"])["canonical_name"] == "Ada Lovelace"  # type: ignore[index]

    sandbox_client.patch(f"/rest/people/{ada['id']}", json={"name": {"firstName": "Augusta", "lastName": "King"}})
    with harness.paused() as wh:
        assert contact_of(wh, ada["id"])["canonical_name"] == "Augusta King"  # type: ignore[index]
        # The record history says the webhook carried it (docs/history.md).
        [renamed] = [r for r in record_history(wh, crm_id=ada["id"]) if r["field"] == "canonical_name"]
    assert (renamed["old_value"], renamed["new_value"], renamed["side"], renamed["via"]) == (
        "Ada Lovelace", "Augusta King", "twenty", "webhook")

    sandbox_client.delete(f"/rest/people/{ada['id']}")  # destroyed, not soft-deleted: a pull never sees it again
    with harness.paused() as wh:
        row = contact_of(wh, ada["id"])
    assert row is not None and row["deleted_at"] is not None and row["sync_status"] == "deleted"
    assert row["canonical_name"] == "Augusta King"  # marked deleted, nothing removed


def test_soft_delete_and_restore_in_twenty_follow_through_webhooks(
        harness: ServeHarness, crm: TwentyClient, sandbox_client: httpx.Client) -> None:
    harness.register(sandbox_client)
    bob = create_person(sandbox_client, first="Bob", email="bob@example.com")
    # Applied first: created and deleted within one micro-batch, a person never enters the warehouse
    # (the newest event wins, and a deletion of a record the warehouse never had changes nothing, as in a pull).
    harness.settle()
    sandbox_client.delete(f"/rest/people/{bob['id']}", params={"soft_delete": "true"})
    with harness.paused() as wh:
        assert contact_of(wh, bob["id"])["deleted_at"] is not None  # type: ignore[index]
    sandbox_client.patch(f"/rest/people/{bob['id']}/restore")
    with harness.paused() as wh:
        assert contact_of(wh, bob["id"])["deleted_at"] is None  # type: ignore[index]


def test_our_own_writes_coming_back_are_echoes(
        harness: ServeHarness, crm: TwentyClient, sandbox_client: httpx.Client) -> None:
    harness.register(sandbox_client)
    create_person(sandbox_client, first="Cy", email="cy@example.com")
    # person.created, then person.updated when serve writes the new contactId back into Twenty.
    harness.settle()
    applied = harness.status()["writer"]["applied"]
    assert applied["events"] == 2 and applied["stale"] == 0
    assert applied["echoes"] == 1  # the key write-back was recognised as ours
    assert len(harness.sandbox.webhook_deliveries) == 2  # and caused no further write to Twenty


def test_an_event_the_sandbox_dropped_arrives_with_the_next_scheduled_sync(
        make_harness: Callable[..., ServeHarness], crm: TwentyClient, sandbox_client: httpx.Client,
        member_client: httpx.Client) -> None:
    harness = make_harness(sync_interval=1.0)
    harness.wait_ready()
    hook = harness.register(sandbox_client)
    eve = create_person(sandbox_client, first="Eve", email="eve@example.com")
    harness.settle()

    # Twenty delivers once and never retries: point the webhook at a closed port for one edit.
    sandbox_client.patch(f"/rest/metadata/webhooks/{hook}", json={"targetUrl": "http://127.0.0.1:9/closed"})
    deliveries_before = len(harness.sandbox.webhook_deliveries)
    # A person's edit: one made with serve's own API key is taken for serve's own write, which the
    # pull leaves out once it has learnt the key's name (sync/own_writes.py), and only the sweep reads.
    member_client.patch(f"/rest/people/{eve['id']}", json={"name": {"firstName": "Evelyn"}}).raise_for_status()
    failed = harness.sandbox.wait_for_deliveries(deliveries_before + 1)[-1]
    assert not failed.ok  # the event is lost as far as webhooks go
    syncs_before = harness.status()["writer"]["syncs"]

    wait_until(lambda: harness.status()["writer"]["syncs"] >= syncs_before + 2, "two scheduled syncs")
    assert harness.status()["writer"]["last_sync"]["status"] == "succeeded"
    with harness.paused() as wh:
        assert contact_of(wh, eve["id"])["canonical_name"] == "Evelyn"  # type: ignore[index]
