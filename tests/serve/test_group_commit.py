"""Deliveries arriving together are stored in one commit, and each is answered only once stored
(a real SQLite inbox file, read back through a second connection as the writer process would)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import sqlite3
import threading
import time
import uuid
from pathlib import Path

import pytest

from truth_forge.realtime.group_commit import GroupCommit
from truth_forge.realtime.inbox import Arrival, Inbox
from truth_forge.realtime.webhooks import Rejected, SignedDelivery, parse_event


def arrival(first_name: str, *, nonce: str | None = None, signature: str | None = None) -> Arrival:
    body = json.dumps({"eventName": "person.updated", "record": {"id": str(uuid.uuid4()),
                                                                "name": {"firstName": first_name}}}).encode()
    received = time.time_ns() // 1_000_000
    delivery = SignedDelivery(received, nonce or secrets.token_hex(16), signature or secrets.token_hex(32))
    return Arrival(delivery, parse_event(body), body, received)


def stored_digests(path: Path) -> set[str]:
    """What another connection (the writer process's, a restarted server's) finds in the file."""
    with sqlite3.connect(path) as other:
        return {row[0] for row in other.execute("SELECT digest FROM events")}


def digest(item: Arrival) -> str:
    return hashlib.sha256(item.raw_body).hexdigest()


def test_a_group_stores_each_delivery_and_refuses_replays_within_it(tmp_path: Path) -> None:
    inbox = Inbox(tmp_path / "inbox.sqlite3")
    try:
        first, second = arrival("Ada"), arrival("Grace")
        same_nonce = arrival("Mallory", nonce=first.delivery.nonce)
        # A copy with a fresh nonce: refused by its signature, and its nonce must not be kept either.
        same_signature = arrival("Eve", signature=second.delivery.signature)
        ignored = Arrival(SignedDelivery(1, secrets.token_hex(16), secrets.token_hex(32)), None, b"{}", 1)
        outcomes = inbox.accept_group([first, same_nonce, second, same_signature, ignored])

        assert outcomes[0] == "stored" and outcomes[2] == "stored" and outcomes[4] == "ignored"
        assert isinstance(outcomes[1], Rejected) and outcomes[1].reason == "replayed nonce"
        assert isinstance(outcomes[3], Rejected) and "same signature" in outcomes[3].reason
        assert stored_digests(tmp_path / "inbox.sqlite3") == {digest(first), digest(second)}
        # The refused copy's nonce was not remembered: a genuine delivery carrying it is accepted.
        assert inbox.accept_group([arrival("Hedy", nonce=same_signature.delivery.nonce)]) == ["stored"]
        # And in a later group, the first delivery again is a replay.
        again = inbox.accept_group([first])[0]
        assert isinstance(again, Rejected) and again.reason == "replayed nonce"
    finally:
        inbox.close()


def test_concurrent_deliveries_share_commits_and_each_is_answered_after_its_store(tmp_path: Path) -> None:
    path = tmp_path / "inbox.sqlite3"
    inbox = Inbox(path)
    committer = GroupCommit(inbox)
    committer.start()
    arrivals = [arrival(f"Person{i}") for i in range(120)]
    missing_at_answer: list[int] = []

    async def deliver(i: int) -> str:
        outcome = await committer.store(arrivals[i])
        # The moment the answer is known, the delivery must already be in the file.
        if digest(arrivals[i]) not in stored_digests(path):
            missing_at_answer.append(i)
        return outcome

    async def all_at_once() -> list[str]:
        return await asyncio.gather(*(deliver(i) for i in range(len(arrivals))))

    # Another process holds the write lock for a moment, so the deliveries pile up behind it.
    with sqlite3.connect(path, isolation_level=None) as other:
        other.execute("BEGIN IMMEDIATE")

        async def release_soon() -> list[str]:
            asyncio.get_running_loop().call_later(0.3, other.execute, "COMMIT")
            return await all_at_once()

        try:
            outcomes = asyncio.run(release_soon())
        finally:
            committer.stop()
            inbox.close()

    assert outcomes == ["stored"] * len(arrivals)
    assert missing_at_answer == []
    assert stored_digests(path) == {digest(a) for a in arrivals}
    assert committer.commits <= 3  # one for the first arrival, one (or two) for all that waited behind it


def test_a_failed_commit_answers_every_delivery_of_the_group_with_the_error_and_stores_none(tmp_path: Path) -> None:
    path = tmp_path / "inbox.sqlite3"
    inbox = Inbox(path, busy_timeout_ms=200)
    committer = GroupCommit(inbox)
    committer.start()
    arrivals = [arrival(f"Person{i}") for i in range(20)]

    async def deliver_all() -> list[str | BaseException]:
        return await asyncio.gather(*(committer.store(a) for a in arrivals), return_exceptions=True)

    with sqlite3.connect(path, isolation_level=None) as other:
        other.execute("BEGIN IMMEDIATE")  # held past the inbox's busy timeout: its commits fail
        try:
            outcomes = asyncio.run(deliver_all())
        finally:
            other.execute("ROLLBACK")
    try:
        assert all(isinstance(o, sqlite3.OperationalError) for o in outcomes), outcomes
        assert stored_digests(path) == set()
        # The thread goes on: once the file is free again, deliveries are stored.
        assert asyncio.run(deliver_all()) == ["stored"] * len(arrivals)
    finally:
        committer.stop()
        inbox.close()


def test_store_refuses_before_the_thread_runs(tmp_path: Path) -> None:
    inbox = Inbox(tmp_path / "inbox.sqlite3")
    try:
        with pytest.raises(RuntimeError, match="not running"):
            asyncio.run(GroupCommit(inbox).store(arrival("Ada")))
    finally:
        inbox.close()


def test_the_writer_process_commits_without_an_fsync_of_its_own_and_the_request_path_with_one(tmp_path: Path) -> None:
    path = tmp_path / "inbox.sqlite3"
    receiving, writing = Inbox(path), Inbox(path, fsync_commits=False)
    try:
        assert receiving._db.execute("PRAGMA synchronous").fetchone() == (2,)  # FULL: an answer follows an fsync
        assert writing._db.execute("PRAGMA synchronous").fetchone() == (1,)  # NORMAL: applied marks may be lost
        first = arrival("Ada")
        assert receiving.accept_group([first]) == ["stored"]
        [item] = writing.pending(10)
        writing.mark_applied([item.seq])
        writing.save_writer_status({"state": "ready"})
        # The request path's next commit waits for the writer's lock, not for a busy handler's sleep.
        assert receiving.accept_group([arrival("Grace")]) == ["stored"]
        assert receiving.counts() == {"pending": 1, "applied": 1, "failed": 0}
        assert receiving.writer_status() == {"state": "ready"}
    finally:
        writing.close()
        receiving.close()


def test_a_write_waiting_for_the_other_process_goes_through_once_its_transaction_ends(tmp_path: Path) -> None:
    path = tmp_path / "inbox.sqlite3"
    inbox = Inbox(path)
    try:
        with sqlite3.connect(path, isolation_level=None, check_same_thread=False) as other:
            other.execute("BEGIN IMMEDIATE")  # the writer process, say, marking a batch applied
            timer = threading.Timer(0.1, other.execute, ("COMMIT",))
            timer.start()
            try:
                outcome = inbox.accept_group([arrival("Ada")])
            finally:
                timer.join()
        assert outcome == ["stored"]
        assert len(stored_digests(path)) == 1
    finally:
        inbox.close()
