"""Optional SQLite persistence: the sandbox's state survives a restart when a file is given.

Records are stored one row each (written through on every mutation); metadata and webhooks are
small and change rarely, so each is stored as one JSON document. The in-memory state stays the
source of truth while running; this file only exists so `truth-forge sandbox --db f.sqlite`
can be stopped and started again.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    object TEXT NOT NULL, id TEXT NOT NULL, data TEXT NOT NULL, PRIMARY KEY (object, id));
CREATE TABLE IF NOT EXISTS documents (name TEXT PRIMARY KEY, data TEXT NOT NULL);
"""


class SqlitePersistence:
    def __init__(self, path: str) -> None:
        self.path = path
        # One connection, used under our own lock from the server and the test threads.
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            self._conn.executescript(_SCHEMA)
            self._conn.execute("PRAGMA journal_mode=WAL")

    def load_records(self) -> dict[str, dict[str, dict[str, Any]]]:
        out: dict[str, dict[str, dict[str, Any]]] = {}
        with self._lock:
            rows = self._conn.execute("SELECT object, id, data FROM records").fetchall()
        for obj, rid, data in rows:
            out.setdefault(obj, {})[rid] = json.loads(data)
        return out

    def load_document(self, name: str) -> Any:
        with self._lock:
            row = self._conn.execute("SELECT data FROM documents WHERE name = ?",
                                     (name,)).fetchone()
        return json.loads(row[0]) if row else None

    def write(self, puts: list[tuple[str, dict[str, Any]]], deletes: list[tuple[str, str]]) -> None:
        """Apply one mutation's row changes in a single transaction."""
        with self._lock:
            self._conn.execute("BEGIN")
            try:
                self._conn.executemany(
                    "INSERT OR REPLACE INTO records (object, id, data) VALUES (?, ?, ?)",
                    [(obj, rec["id"], json.dumps(rec)) for obj, rec in puts])
                self._conn.executemany("DELETE FROM records WHERE object = ? AND id = ?", deletes)
            except sqlite3.Error:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def save_document(self, name: str, data: Any) -> None:
        with self._lock:
            self._conn.execute("INSERT OR REPLACE INTO documents (name, data) VALUES (?, ?)",
                               (name, json.dumps(data)))

    def clear(self) -> None:
        with self._lock:
            self._conn.execute("DELETE FROM records")
            self._conn.execute("DELETE FROM documents")

    def close(self) -> None:
        with self._lock:
            self._conn.close()
