"""Applying webhook events: the newest state wins whatever the delivery order, a redelivery
changes nothing, and destroyed records are marked deleted (real DuckDB file, sandbox over loopback)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.sandbox.util import create_person
from tests.serve.conftest import SCHEMA
from truth_forge.core.reporting import ErrorReporter
from truth_forge.realtime.applier import apply_events, newest_per_record
from truth_forge.realtime.webhooks import WebhookEvent
from truth_forge.sync.context import SyncContext
from truth_forge.sync.objects import format_timestamp, parse_timestamp
from truth_forge.twenty import TwentyClient
from truth_forge.warehouse import open_warehouse


@pytest.fixture
def wh(tmp_path: Path) -> Any:
    with open_warehouse(f"duckdb:///{tmp_path / 'w.duckdb'}") as warehouse:
        yield warehouse


def apply(wh: Any, crm: TwentyClient, reporter: ErrorReporter, events: list[WebhookEvent]) -> Any:
    return apply_events(SyncContext(wh, crm, SCHEMA, reporter), events)


def event(record: dict[str, Any], action: str = "updated", **changes: Any) -> WebhookEvent:
    changed = {**record, **changes}
    return WebhookEvent("person", action, record["id"], changed, changed.get("updatedAt"))


def name_of(wh: Any, crm_id: str) -> str:
    key = int(wh.read_sync_state_by_crm_id("person", [crm_id])[crm_id]["record_key"])
    return wh.get_rows("person", [key])[0]["canonical_name"]


def current(sandbox_client: httpx.Client, crm_id: str) -> dict[str, Any]:
    """The person as Twenty has it now: what its next webhook would carry."""
    return sandbox_client.get(f"/rest/people/{crm_id}").json()["data"]["person"]


def earlier(timestamp: str, seconds: int) -> str:
    moment = parse_timestamp(timestamp) - dt.timedelta(seconds=seconds)  # type: ignore[operator]
    return format_timestamp(moment)


def known_person(wh: Any, crm: TwentyClient, sandbox_client: httpx.Client, reporter: ErrorReporter) -> dict[str, Any]:
    """A person created in Twenty and applied from its `created` event (serve wrote its key back)."""
    ada = create_person(sandbox_client, first="Ada", email="ada@example.com")
    apply(wh, crm, reporter, [event(ada, "created")])
    return ada


def test_an_older_event_never_overwrites_a_newer_state(
        wh: Any, crm: TwentyClient, sandbox_client: httpx.Client) -> None:
    reporter = ErrorReporter("test")
    ada = known_person(wh, crm, sandbox_client, reporter)
    sandbox_client.patch(f"/rest/people/{ada['id']}", json={"name": {"firstName": "Newer", "lastName": ""}})
    newer = current(sandbox_client, ada["id"])
    # A delivery of an earlier edit, arriving late.
    older = event(newer, name={"firstName": "Older", "lastName": ""}, updatedAt=earlier(newer["updatedAt"], 1))

    stats = apply(wh, crm, reporter, [event(newer), older])  # same batch, newest arrived first
    assert name_of(wh, ada["id"]) == "Newer" and stats.superseded == 1

    stats = apply(wh, crm, reporter, [older])  # a later batch brings the old state
    assert name_of(wh, ada["id"]) == "Newer" and stats.stale == 1 and stats.applied == 0
    assert reporter.count == 0


def test_a_redelivered_event_changes_nothing(wh: Any, crm: TwentyClient, sandbox_client: httpx.Client) -> None:
    reporter = ErrorReporter("test")
    ada = known_person(wh, crm, sandbox_client, reporter)
    sandbox_client.patch(f"/rest/people/{ada['id']}", json={"name": {"firstName": "Augusta", "lastName": ""}})
    edit = event(current(sandbox_client, ada["id"]))
    first = apply(wh, crm, reporter, [edit])
    assert first.applied == 1 and first.echoes == 0 and name_of(wh, ada["id"]) == "Augusta"
    state_before = wh.read_sync_state_by_crm_id("person", [ada["id"]])[ada["id"]]

    again = apply(wh, crm, reporter, [edit])
    assert again.echoes == 1 and wh.count_rows("contacts") == 1
    state_after = wh.read_sync_state_by_crm_id("person", [ada["id"]])[ada["id"]]
    assert state_after["crm_hash"] == state_before["crm_hash"] and name_of(wh, ada["id"]) == "Augusta"
    assert reporter.count == 0


def test_destroyed_wins_over_any_other_event_of_the_record() -> None:
    record = {"id": "r1", "updatedAt": "2030-01-01T00:00:01.000Z"}
    later_update = event(record, updatedAt="2030-01-01T00:00:05.000Z")
    destroyed = event(record, "destroyed")
    assert newest_per_record([destroyed, later_update]) == [destroyed]
    assert newest_per_record([later_update, destroyed]) == [destroyed]


def test_destroyed_marks_deleted_and_keeps_the_row(wh: Any, crm: TwentyClient, sandbox_client: httpx.Client) -> None:
    reporter = ErrorReporter("test")
    ada = known_person(wh, crm, sandbox_client, reporter)
    stats = apply(wh, crm, reporter, [event(ada, "destroyed")])
    assert stats.destroyed == 1
    key = int(wh.read_sync_state_by_crm_id("person", [ada["id"]])[ada["id"]]["record_key"])
    row = wh.get_rows("person", [key])[0]
    assert row["deleted_at"] is not None and row["primary_email"] == "ada@example.com"
    assert apply(wh, crm, reporter, [event(ada, "destroyed")]).destroyed == 0  # idempotent
