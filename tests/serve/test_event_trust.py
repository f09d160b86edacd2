"""What a signed webhook event is trusted with (real DuckDB file, sandbox over loopback).

A signature proves Twenty sent the event, not that every field of it can be taken as it stands: a
clock far ahead, a payload that leaves fields out, a deletion of a record we never had, an id no
record can have. Each test below feeds the applier such an event and checks the warehouse keeps
what is true.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.serve.test_applier import apply, current, event, known_person, name_of
from truth_forge.core.reporting import ErrorReporter
from truth_forge.realtime.webhooks import Rejected, WebhookEvent, parse_event
from truth_forge.sync.objects import format_timestamp, now_utc
from truth_forge.twenty import TwentyClient
from truth_forge.warehouse import open_warehouse


@pytest.fixture
def wh(tmp_path: Path) -> Iterator[Any]:
    with open_warehouse(f"duckdb:///{tmp_path / 'w.duckdb'}") as warehouse:
        yield warehouse


# A year ahead: a clock far off, yet a time every engine stores (9999 does not survive every parser).
FAR_FUTURE = format_timestamp(now_utc() + dt.timedelta(days=365))


def row_of(wh: Any, crm_id: str) -> dict[str, Any]:
    key = int(wh.read_sync_state_by_crm_id("person", [crm_id])[crm_id]["record_key"])
    return wh.get_rows("person", [key])[0]


def test_an_updated_at_far_ahead_does_not_make_later_events_stale(
        wh: Any, crm: TwentyClient, sandbox_client: httpx.Client) -> None:
    reporter = ErrorReporter("test")
    ada = known_person(wh, crm, sandbox_client, reporter)
    apply(wh, crm, reporter, [event(ada, name={"firstName": "Future", "lastName": ""}, updatedAt=FAR_FUTURE)])

    sandbox_client.patch(f"/rest/people/{ada['id']}", json={"name": {"firstName": "Later", "lastName": ""}})
    stats = apply(wh, crm, reporter, [event(current(sandbox_client, ada["id"]))])

    assert stats.stale == 0 and name_of(wh, ada["id"]) == "Later"


def test_within_a_batch_an_updated_at_far_ahead_does_not_outrank_a_later_arrival(
        wh: Any, crm: TwentyClient, sandbox_client: httpx.Client) -> None:
    reporter = ErrorReporter("test")
    ada = known_person(wh, crm, sandbox_client, reporter)
    sandbox_client.patch(f"/rest/people/{ada['id']}", json={"name": {"firstName": "Later", "lastName": ""}})
    forged = event(ada, name={"firstName": "Future", "lastName": ""}, updatedAt=FAR_FUTURE)
    apply(wh, crm, reporter, [forged, event(current(sandbox_client, ada["id"]))])
    assert name_of(wh, ada["id"]) == "Later"


def test_fields_left_out_of_an_updated_payload_are_unknown_not_empty(
        wh: Any, crm: TwentyClient, sandbox_client: httpx.Client) -> None:
    reporter = ErrorReporter("test")
    ada = known_person(wh, crm, sandbox_client, reporter)
    sandbox_client.patch(f"/rest/people/{ada['id']}", json={"name": {"firstName": "Augusta", "lastName": ""}})
    whole = current(sandbox_client, ada["id"])
    partial = {k: v for k, v in whole.items() if k not in ("emails", "phones")}

    stats = apply(wh, crm, reporter, [WebhookEvent("person", "updated", ada["id"], partial, partial["updatedAt"])])

    row = row_of(wh, ada["id"])
    assert row["canonical_name"] == "Augusta"  # what the payload said is taken
    assert row["primary_email"] == "ada@example.com"  # what it left out is kept
    assert stats.completed == 1 and reporter.count == 0


def test_a_partial_payload_of_a_record_never_seen_waits_for_the_whole_record(
        wh: Any, crm: TwentyClient, sandbox_client: httpx.Client) -> None:
    reporter = ErrorReporter("test")
    grace = current(sandbox_client, _create(sandbox_client, "Grace", "grace@example.com"))
    partial = {k: v for k, v in grace.items() if k != "emails"}
    stats = apply(wh, crm, reporter, [WebhookEvent("person", "updated", grace["id"], partial, partial["updatedAt"])])
    assert stats.deferred == 1 and wh.count_rows("contacts") == 0
    assert grace["id"] in json.loads(wh.get_watermark("pull-retry:person") or "[]")  # the next pull reads it whole


def test_a_deletion_of_a_record_never_seen_is_ignored(wh: Any, crm: TwentyClient) -> None:
    reporter = ErrorReporter("test")
    unknown = str(uuid.uuid4())
    stamp = format_timestamp(now_utc())
    stats = apply(wh, crm, reporter, [WebhookEvent("person", "deleted", unknown,
                                                   {"id": unknown, "updatedAt": stamp, "deletedAt": stamp}, stamp)])
    assert stats.unknown_deleted == 1
    assert wh.count_rows("contacts") == 0 and wh.read_sync_state_by_crm_id("person", [unknown]) == {}


def test_a_deleted_event_without_deleted_at_still_deletes_a_known_record(
        wh: Any, crm: TwentyClient, sandbox_client: httpx.Client) -> None:
    reporter = ErrorReporter("test")
    ada = known_person(wh, crm, sandbox_client, reporter)
    stamp = current(sandbox_client, ada["id"])["updatedAt"]
    apply(wh, crm, reporter, [WebhookEvent("person", "deleted", ada["id"], {"id": ada["id"], "updatedAt": stamp},
                                           None)])
    row = row_of(wh, ada["id"])
    assert row["deleted_at"] is not None and row["primary_email"] == "ada@example.com"


@pytest.mark.parametrize("bad_id", ["garbage", "12345", "../../people", "0" * 36])
def test_a_delivery_whose_id_is_not_a_twenty_id_is_refused(bad_id: str) -> None:
    body = json.dumps({"eventName": "person.updated", "record": {"id": bad_id, "name": {"firstName": "X"}}})
    with pytest.raises(Rejected) as refused:
        parse_event(body.encode())
    assert refused.value.status == 400 and "UUID" in refused.value.reason


def test_an_inbox_event_with_a_malformed_id_is_dropped_with_a_closed_error(wh: Any, crm: TwentyClient) -> None:
    reporter = ErrorReporter("test")
    stamp = format_timestamp(now_utc())
    stats = apply(wh, crm, reporter, [WebhookEvent("person", "updated", "garbage",
                                                   {"id": "garbage", "name": {"firstName": "X", "lastName": ""},
                                                    "emails": {"primaryEmail": None}, "phones": {},
                                                    "updatedAt": stamp}, stamp)])
    reporter.flush(wh)
    assert stats.malformed == 1 and wh.count_rows("contacts") == 0
    assert reporter.count == 0 and all(e["resolved_at"] is not None for e in reporter.sync_errors)
    assert wh.error_lifecycles(open_only=True) == []


def _create(sandbox_client: httpx.Client, first: str, email: str) -> str:
    response = sandbox_client.post("/rest/people", json={"name": {"firstName": first, "lastName": ""},
                                                         "emails": {"primaryEmail": email}})
    assert response.status_code == 201, response.text
    return str(response.json()["data"]["createPerson"]["id"])
