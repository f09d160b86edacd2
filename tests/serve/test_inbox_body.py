"""The inbox keeps each delivery's body as it came and the writer's reads decode the record from it;
an inbox file from before the body was kept still gives its pending events; a group with no replay
or duplicate is stored in a few multi-row statements, any other one delivery by one, with the same
outcomes (real SQLite files)."""

from __future__ import annotations

import json
import secrets
import sqlite3
import time
import uuid
from pathlib import Path

from truth_forge.realtime.inbox import Arrival, Inbox
from truth_forge.realtime.webhooks import Rejected, SignedDelivery, parse_event

# The events table as servers before this change created it: no body column.
_OLD_EVENTS = """
CREATE TABLE events (
  seq INTEGER PRIMARY KEY AUTOINCREMENT, digest TEXT NOT NULL UNIQUE, received_ms INTEGER NOT NULL,
  object_name TEXT NOT NULL, action TEXT NOT NULL, record_id TEXT NOT NULL, event_date TEXT,
  record TEXT NOT NULL, status TEXT NOT NULL DEFAULT 'pending', attempts INTEGER NOT NULL DEFAULT 0,
  last_error TEXT, applied_ms INTEGER
);
"""


def arrival(record: dict[str, object]) -> Arrival:
    # Spacing and key order a re-encoding would not keep: the stored body must be the one that came.
    body = json.dumps({"record": record, "eventName": "person.updated", "eventDate": "2026-01-02T03:04:05.000Z"},
                      indent=1).encode()
    received = time.time_ns() // 1_000_000
    return Arrival(SignedDelivery(received, secrets.token_hex(16), secrets.token_hex(32)), parse_event(body), body,
                   received)


def test_the_body_is_stored_as_it_came_and_pending_decodes_its_record(tmp_path: Path) -> None:
    record = {"id": str(uuid.uuid4()), "name": {"firstName": "Ada", "lastName": "Lovelace"}, "city": "Lisbon"}
    delivery = arrival(record)
    inbox = Inbox(tmp_path / "inbox.sqlite3")
    try:
        assert inbox.accept_group([delivery]) == ["stored"]
        [item] = inbox.pending(10)
    finally:
        inbox.close()
    assert item.event.record == record and item.event.record_id == record["id"]
    assert (item.event.object_name, item.event.action, item.event.event_date) == \
        ("person", "updated", "2026-01-02T03:04:05.000Z")
    with sqlite3.connect(tmp_path / "inbox.sqlite3") as other:
        assert other.execute("SELECT body FROM events").fetchone()[0] == delivery.raw_body


def test_an_inbox_from_before_the_body_was_kept_gives_old_and_new_events(tmp_path: Path) -> None:
    path = tmp_path / "inbox.sqlite3"
    old_record = {"id": str(uuid.uuid4()), "name": {"firstName": "Grace", "lastName": "Hopper"}}
    with sqlite3.connect(path) as old:
        old.executescript(_OLD_EVENTS)
        old.execute("INSERT INTO events (digest, received_ms, object_name, action, record_id, event_date, record) "
                    "VALUES ('d', 1, 'person', 'updated', ?, NULL, ?)", (old_record["id"], json.dumps(old_record)))
    old.close()
    new_record = {"id": str(uuid.uuid4()), "name": {"firstName": "Hedy", "lastName": "Lamarr"}}
    inbox, writers = Inbox(path), Inbox(path)  # the server's and the writer process's, as `serve` opens them
    try:
        assert inbox.accept_group([arrival(new_record)]) == ["stored"]
        assert [item.event.record for item in writers.pending(10)] == [old_record, new_record]
    finally:
        inbox.close()
        writers.close()


def redelivered(original: Arrival) -> Arrival:
    """The same body again under a fresh nonce and signature (Twenty sending an event twice)."""
    return Arrival(SignedDelivery(original.received_ms, secrets.token_hex(16), secrets.token_hex(32)),
                   original.event, original.raw_body, original.received_ms)


def person() -> dict[str, object]:
    return {"id": str(uuid.uuid4()), "name": {"firstName": "P", "lastName": "Q"}}


def test_a_redelivered_body_in_a_group_is_a_duplicate_and_the_others_are_stored(tmp_path: Path) -> None:
    inbox = Inbox(tmp_path / "inbox.sqlite3")
    try:
        earlier = arrival(person())
        assert inbox.accept_group([earlier]) == ["stored"]
        fresh, again = arrival(person()), arrival(person())
        outcomes = inbox.accept_group([fresh, redelivered(earlier), again, redelivered(again)])
        assert outcomes == ["stored", "duplicate", "stored", "duplicate"]
        assert [item.event.record_id for item in inbox.pending(10)] == \
            [earlier.event.record_id, fresh.event.record_id, again.event.record_id]
    finally:
        inbox.close()


def test_a_group_larger_than_one_statement_holds_stores_all_and_still_finds_a_replay_at_its_end(
        tmp_path: Path) -> None:
    inbox = Inbox(tmp_path / "inbox.sqlite3")
    try:
        group = [arrival(person()) for _ in range(250)]
        assert inbox.accept_group(group) == ["stored"] * 250
        assert [item.event.record_id for item in inbox.pending(300)] == \
            [a.event.record_id for a in group]
        late = [arrival(person()) for _ in range(249)] + [group[-1]]
        outcomes = inbox.accept_group(late)
        assert outcomes[:249] == ["stored"] * 249
        assert isinstance(outcomes[249], Rejected) and outcomes[249].reason == "replayed nonce"
        assert len(inbox.pending(1000)) == 499
    finally:
        inbox.close()
