"""The inbox keeps each delivery's body as it came and the writer's reads decode the record from it;
an inbox file from before the body was kept still gives its pending events (real SQLite files)."""

from __future__ import annotations

import json
import secrets
import sqlite3
import time
import uuid
from pathlib import Path

from truth_forge.realtime.inbox import Arrival, Inbox
from truth_forge.realtime.webhooks import SignedDelivery, parse_event

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
