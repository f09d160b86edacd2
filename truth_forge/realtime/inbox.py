"""The webhook inbox: a local SQLite file where every verified event is stored before it is
acknowledged, and from which the writer process takes micro-batches.

Why it exists: Twenty sends each event once, gives up after 5 s and never retries, so an event
must be durable the moment we say 200, and applying it (a warehouse MERGE, seconds on BigQuery)
cannot happen on the request path. A local file commits in well under a millisecond (WAL,
`synchronous=FULL`: a commit survives a killed process and a power cut), whatever the warehouse
engine. The same transaction that stores an event records its nonce and its signature, so a
replayed delivery is refused and a refused one leaves nothing behind. Identical bodies are stored
once (a redelivery is a no-op). Applied events are kept a while as evidence, then pruned. The
writer process also reports its state here, the one channel between the two processes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from truth_forge.realtime.webhooks import Rejected, SignedDelivery, WebhookEvent

MAX_ATTEMPTS = 5  # an event that failed this often is set aside as 'failed' (the scheduled pull still covers it)
KEEP_APPLIED_MS = 24 * 3600 * 1000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  digest TEXT NOT NULL UNIQUE,          -- sha256 of the raw body: a redelivered body is stored once
  received_ms INTEGER NOT NULL,
  object_name TEXT NOT NULL,
  action TEXT NOT NULL,
  record_id TEXT NOT NULL,
  event_date TEXT,
  record TEXT NOT NULL,                 -- the record as Twenty sent it (JSON), or '' where body holds it
  status TEXT NOT NULL DEFAULT 'pending',  -- pending | applied | failed
  attempts INTEGER NOT NULL DEFAULT 0,
  last_error TEXT,
  applied_ms INTEGER,
  body BLOB                             -- the verified delivery as it came (its 'record' is the record)
);
CREATE INDEX IF NOT EXISTS events_pending ON events (status, seq);
CREATE TABLE IF NOT EXISTS writer_status (
  id INTEGER PRIMARY KEY CHECK (id = 1),  -- one row: what the writer process last reported
  status TEXT NOT NULL,                   -- JSON
  updated_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS replay_keys (
  key TEXT PRIMARY KEY,                 -- 'nonce:...' or 'signature:...'
  seen_ms INTEGER NOT NULL
);
"""

# The body goes in as it came: encoding its record again cost the request path about 8 us an event;
# the writer decodes it when it takes the event (`Inbox.pending`).
_INSERT_EVENTS = ("INSERT OR IGNORE INTO events (digest, received_ms, object_name, action, record_id, event_date, "
                  "record, body) VALUES ")
_EVENT_ROW = "(?, ?, ?, ?, ?, ?, '', ?)"
_INSERT_KEYS = "INSERT OR IGNORE INTO replay_keys (key, seen_ms) VALUES "
_KEY_ROW = "(?, ?)"
_ROWS_PER_STATEMENT = 100  # deliveries per multi-row statement: 700 values, under old SQLite's limit of 999
# How often a write waiting for the other process's transaction tries again. SQLite's own busy handler
# sleeps 1, 2, 5, 10, 15... ms between tries, so a lock the writer process held for 4 ms cost a
# delivery 8 ms, and one held 10 ms cost it 18.
_LOCK_RETRY_SECONDS = 0.0002


@dataclass(frozen=True)
class Arrival:
    """A verified delivery on its way into the inbox."""

    delivery: SignedDelivery
    event: WebhookEvent | None  # None: an object the sync does not move
    raw_body: bytes
    received_ms: int


@dataclass(frozen=True)
class InboxItem:
    seq: int
    received_ms: int
    event: WebhookEvent


class Inbox:
    """One SQLite file, opened by the server and by its writer process (WAL: readers never wait).

    `fsync_commits=False` is for the writer process: what it writes here (applied marks, failed
    attempts, its status) may be lost to a power cut at no cost (an event applied twice is harmless),
    and a commit without its own fsync holds the file's write lock, which the request path waits
    for, a fraction of the time. The request path's commits stay fsync'd, and each of them syncs
    whatever the writer's commits had put in the log before it.
    """

    def __init__(self, path: str | Path, *, busy_timeout_ms: int = 5000, fsync_commits: bool = True) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).expanduser().parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        # How long a write transaction waits for the other process's to end before failing.
        self._busy_timeout_s = busy_timeout_ms / 1000
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")  # for the set-up below
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={'FULL' if fsync_commits else 'NORMAL'}")
        self._db.executescript(_SCHEMA)
        self._add_body_column()
        # From here every write begins with `_begin`, which waits for the lock itself.
        self._db.execute("PRAGMA busy_timeout=0")
        # Reads (/status, /readyz, /metrics, the writer's batches) on a connection of their own: in
        # WAL they never wait for a commit, so the server's event loop is not held while the storing
        # thread syncs the disk.
        self._read_lock = threading.Lock()
        self._reads = self._db if self.path == ":memory:" else sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False)
        self._reads.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")

    def _add_body_column(self) -> None:
        """A file from before deliveries' bodies were kept gains the column (under the write lock: the
        writer process opens the same file)."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            if "body" not in {row[1] for row in self._db.execute("PRAGMA table_info(events)")}:
                self._db.execute("ALTER TABLE events ADD COLUMN body BLOB")
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def close(self) -> None:
        with self._read_lock:
            if self._reads is not self._db:
                self._reads.close()
        with self._lock:
            self._db.close()

    def _begin(self) -> None:
        """BEGIN IMMEDIATE (the file's write lock), trying again every `_LOCK_RETRY_SECONDS` while
        the other process holds it, up to the busy timeout (then SQLite's 'database is locked')."""
        deadline = time.monotonic() + self._busy_timeout_s
        while True:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY or time.monotonic() >= deadline:
                    raise
            time.sleep(_LOCK_RETRY_SECONDS)

    @contextlib.contextmanager
    def _write_transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction on the file (its lock taken by `_begin`), committed when the block
        ends, rolled back if it raises."""
        with self._lock:
            self._begin()
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise

    # --- the request path ------------------------------------------------------------------------

    def accept_group(self, arrivals: Sequence[Arrival]) -> list[str | Rejected]:
        """Store verified deliveries that arrived together, in one transaction with one commit (one
        fsync for the group: a group commit). Each gets its outcome, in order: 'stored', 'duplicate'
        (same body seen), 'ignored' (an object the sync does not move), or Rejected(401) for a replay,
        which stores nothing of that delivery. Returns only once the group is durable; raises (and
        stores none of it) if the transaction fails."""
        with self._write_transaction() as db:
            outcomes = self._accept_all_new(arrivals)
            if outcomes is None:  # a replay or a duplicate among them: one by one, from the start
                db.execute("ROLLBACK")
                self._begin()
                outcomes = [self._accept(arrival) for arrival in arrivals]
        return outcomes

    def _accept_all_new(self, arrivals: Sequence[Arrival]) -> list[str | Rejected] | None:
        """The usual group, where no delivery is a replay or a duplicate, in two statements (every
        replay key, then every event), not three per delivery: each statement costs the storing thread
        a hand-over of the interpreter lock. None, with the group half-stored, when some key or body
        was already there (the caller rolls back)."""
        for start in range(0, len(arrivals), _ROWS_PER_STATEMENT):
            chunk = arrivals[start:start + _ROWS_PER_STATEMENT]
            keys: list[object] = []
            events: list[object] = []
            for arrival in chunk:
                keys += (f"nonce:{arrival.delivery.nonce}", arrival.received_ms,
                         f"signature:{arrival.delivery.signature}", arrival.received_ms)
                if (event := arrival.event) is not None:
                    events += (hashlib.sha256(arrival.raw_body).hexdigest(), arrival.received_ms, event.object_name,
                               event.action, event.record_id, event.event_date, arrival.raw_body)
            cursor = self._db.execute(_INSERT_KEYS + ",".join([_KEY_ROW] * (2 * len(chunk))), keys)
            if cursor.rowcount != 2 * len(chunk):
                return None
            if events:
                count = len(events) // 7
                if self._db.execute(_INSERT_EVENTS + ",".join([_EVENT_ROW] * count), events).rowcount != count:
                    return None
        return ["ignored" if arrival.event is None else "stored" for arrival in arrivals]

    def _accept(self, arrival: Arrival) -> str | Rejected:
        nonce_key = f"nonce:{arrival.delivery.nonce}"
        if not self._remember(nonce_key, arrival.received_ms):
            return Rejected(401, "replayed nonce")
        if not self._remember(f"signature:{arrival.delivery.signature}", arrival.received_ms):
            # Refused: its nonce must not stay behind either (it came with a replay, not a delivery).
            self._db.execute("DELETE FROM replay_keys WHERE key = ?", (nonce_key,))
            return Rejected(401, "replayed delivery (same signature)")
        return "ignored" if arrival.event is None else self._store(arrival.event, arrival.raw_body, arrival.received_ms)

    def _remember(self, key: str, now_ms: int) -> bool:
        """Record a replay key; False if it was already there."""
        cursor = self._db.execute(_INSERT_KEYS + _KEY_ROW, (key, now_ms))
        return cursor.rowcount == 1

    def _store(self, event: WebhookEvent, raw_body: bytes, now_ms: int) -> str:
        cursor = self._db.execute(_INSERT_EVENTS + _EVENT_ROW, (hashlib.sha256(raw_body).hexdigest(), now_ms,
                                  event.object_name, event.action, event.record_id, event.event_date, raw_body))
        return "stored" if cursor.rowcount == 1 else "duplicate"

    # --- the applier -----------------------------------------------------------------------------

    def pending(self, limit: int) -> list[InboxItem]:
        """The oldest events not yet applied, in arrival order."""
        with self._read_lock:
            rows = self._reads.execute(
                "SELECT seq, received_ms, object_name, action, record_id, event_date, record, body FROM events "
                "WHERE status = 'pending' ORDER BY seq LIMIT ?", (int(limit),)).fetchall()
        return [InboxItem(seq, received, WebhookEvent(obj, action, record_id, _record(record, body), event_date))
                for seq, received, obj, action, record_id, event_date, record, body in rows]

    def pending_arrivals(self, limit: int) -> list[int]:
        """When the oldest events not yet applied arrived (ms), in arrival order: what the writer
        needs to decide whether to wait for more, without reading and decoding the events."""
        with self._read_lock:
            rows = self._reads.execute("SELECT received_ms FROM events WHERE status = 'pending' ORDER BY seq LIMIT ?",
                                    (int(limit),)).fetchall()
        return [received for (received,) in rows]

    def mark_applied(self, seqs: Sequence[int], now_ms: int | None = None) -> None:
        self._update(seqs, "UPDATE events SET status = 'applied', applied_ms = ?, last_error = NULL "
                           "WHERE seq = ?", now_ms if now_ms is not None else _now_ms())

    def mark_attempt_failed(self, seqs: Sequence[int], error: str) -> None:
        """Count a failed attempt; past MAX_ATTEMPTS the event is set aside as 'failed'."""
        self._update(seqs, "UPDATE events SET attempts = attempts + 1, last_error = ?, "
                           f"status = CASE WHEN attempts + 1 >= {MAX_ATTEMPTS} THEN 'failed' ELSE status END "
                           "WHERE seq = ?", error[:2000])

    def _update(self, seqs: Sequence[int], sql: str, value: object) -> None:
        with self._write_transaction() as db:
            db.executemany(sql, [(value, seq) for seq in seqs])

    def counts(self) -> dict[str, int]:
        with self._read_lock:
            rows = self._reads.execute("SELECT status, COUNT(*) FROM events GROUP BY status").fetchall()
        return {"pending": 0, "applied": 0, "failed": 0, **{status: n for status, n in rows}}

    def save_writer_status(self, status: dict[str, object]) -> None:
        """The writer process's report (state, counts), read by the server's /readyz and /status."""
        with self._write_transaction() as db:
            db.execute("INSERT INTO writer_status (id, status, updated_ms) VALUES (1, ?, ?) "
                       "ON CONFLICT (id) DO UPDATE SET status = excluded.status, updated_ms = excluded.updated_ms",
                       (json.dumps(status, default=str), _now_ms()))

    def writer_status(self) -> dict[str, object] | None:
        with self._read_lock:
            row = self._reads.execute("SELECT status FROM writer_status WHERE id = 1").fetchone()
        return json.loads(row[0]) if row else None

    def clear_writer_status(self) -> None:
        """Forget a previous writer's report (a new server starts from 'starting')."""
        with self._write_transaction() as db:
            db.execute("DELETE FROM writer_status")

    def prune(self, now_ms: int, replay_window_ms: int) -> None:
        """Forget replay keys older than the timestamp tolerance allows (such a copy is refused as
        stale anyway) and applied events older than a day."""
        with self._write_transaction() as db:
            db.execute("DELETE FROM replay_keys WHERE seen_ms < ?", (now_ms - 2 * replay_window_ms,))
            db.execute("DELETE FROM events WHERE status = 'applied' AND applied_ms < ?", (now_ms - KEEP_APPLIED_MS,))


def _record(record: str, body: bytes | None) -> dict[str, Any]:
    """An event's record: from the delivery's body (verified and checked by `parse_event` before it was
    stored), or as stored by a server from before the body was kept."""
    return json.loads(body)["record"] if body is not None else json.loads(record)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
