"""The sync state, written as an append-only journal and folded into `crm_sync_state` when it pays.

Why it exists: the sync saves what every write request stored before the next answer is looked at
(that is what makes a killed run lose nothing). As a MERGE into `crm_sync_state` per request, that
guarantee bills the whole state table on BigQuery for every request (an UPDATE or MERGE bills its
whole target: docs/reference/standard-sql/dml-syntax, "On-demand query size calculation"). Here a
save is an INSERT into `crm_sync_journal` (it reads no table, so it bills nothing).

Between phases the journal is *settled* (`fold_journal`, called by the runner at the start of a run,
after the pull and at the end, and on DuckDB while a push waits for its last answers,
`fold_journal_while_idle`): the records whose status the new entries set go on or off the retry
lists, and the clean ones are remembered for closing their errors. It is *folded* into the state by
one MERGE only when that is due: on DuckDB every time (a scan is free there, and the state table
then always says everything), on BigQuery once the entries not folded reach a share of the state's
rows (`journal_fold_share`, 10 %: a fold bills the state table twice, while reading the journal
beside the state bills only the journal), and always before a reader that takes the state table
alone (the audit, `sync --full`). A killed run's journal is settled by the next run.

Reads see the journal too: `read_sync_state`, lookups by Twenty id and change detection overlay the
entries not yet folded, so the sync reads its own writes. A journal entry carries only the fields its
save set (`fields`), as an upsert did.

Reads are also served from a bounded cache of the rows this process read or wrote (change detection
hands over the state of the rows it yields): the writer lease makes this process the only writer,
so what it last saw is the state. On BigQuery every query bills at least 10 MB per table, so a state
read per batch would cost more than the batch itself. The cache is dropped at a run's start (another
writer may have run since this process last held the lease).

A mixin of `Warehouse`: it runs the same BigQuery-dialect SQL on both engines through `_run`.
"""

from __future__ import annotations

import array
import collections
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from truth_forge.warehouse import base_keys
from truth_forge.warehouse import queries as q
from truth_forge.warehouse.binds import Bind, KeySet, Scalar, json_value, plain_row
from truth_forge.warehouse.errors import WarehouseDataError, WarehouseOutOfMemory
from truth_forge.warehouse.schema import CRM_SYNC_JOURNAL, CRM_SYNC_STATE, INT64, JSON, STRING
from truth_forge.warehouse.validate import validate_rows

log = logging.getLogger(__name__)

SYNC_STATUSES = ("synced", "failed", "pending", "deleted")
_KEY = ("object_type", "record_key")
_STATE_COLUMNS = CRM_SYNC_STATE.column_names
_VALUE_COLUMNS = q.STATE_VALUE_COLUMNS
_JSON_COLUMNS = frozenset(c.name for c in CRM_SYNC_STATE.columns if c.type == JSON)
SYNC_STATE_FIELDS: dict[str, str] = {c.name: c.type for c in CRM_SYNC_STATE.columns}
# Rows of state kept in memory for reads (change detection primes it a range at a time; the push
# reads the rows it is writing shortly after): about a megabyte per thousand rows with their base.
STATE_CACHE_ROWS = 20_000


def _field_set(fields: Iterable[str]) -> str:
    # Commas on both ends, so `STRPOS(fields, ',name,')` matches whole names only.
    return "," + ",".join(sorted(fields)) + ","


def _selected(alias: str) -> str:
    return ", ".join(f"TO_JSON_STRING({alias}.{c}) AS {c}" if c in _JSON_COLUMNS else f"{alias}.{c} AS {c}"
                     for c in _STATE_COLUMNS)


# The state rows and the journal entries of some keys, oldest first (the state row as entry 0).
_READ = f"""SELECT u.* FROM (
  SELECT 0 AS seq, '{_field_set(_VALUE_COLUMNS)}' AS fields, {_selected('t')}
  FROM {{crm_sync_state}} AS t WHERE t.object_type = @object_type AND t.record_key IN {{keys_keys}}
  UNION ALL
  SELECT j.seq AS seq, j.fields AS fields, {_selected('j')}
  FROM {{crm_sync_journal}} AS j WHERE j.object_type = @object_type AND j.record_key IN {{keys_keys}}
    AND j.seq > @folded
) AS u ORDER BY u.seq"""

# Which keys hold these Twenty ids, in the state or in entries not folded yet. Reads three narrow
# columns: the state is clustered by key, so a lookup by Twenty id cannot be pruned.
_KEYS_BY_CRM_ID = """SELECT t.record_key AS record_key FROM {crm_sync_state} AS t
WHERE t.object_type = @object_type AND t.crm_id IN {keys_ids}
UNION DISTINCT
SELECT j.record_key AS record_key FROM {crm_sync_journal} AS j
WHERE j.object_type = @object_type AND j.crm_id IN {keys_ids}"""


_LINKED_IN_ID_ORDER = """SELECT t.crm_id AS crm_id, t.record_key AS record_key, t.crm_hash AS crm_hash, t.status AS status
FROM {crm_sync_state} AS t WHERE t.object_type = @object_type AND t.crm_id IS NOT NULL ORDER BY t.crm_id"""


_FOLD = f"""MERGE {{crm_sync_state}} AS t
USING ({q.journal_fields("j.seq > @folded AND j.seq <= @upto")}) AS s
ON t.object_type = s.object_type AND t.record_key = s.record_key
WHEN MATCHED THEN UPDATE SET {', '.join(f'{c} = IF(s.set_{c}, s.{c}, t.{c})' for c in _VALUE_COLUMNS)}
WHEN NOT MATCHED THEN INSERT ({', '.join(_STATE_COLUMNS)})
  VALUES ({', '.join(f's.{c}' for c in _STATE_COLUMNS)})"""

# The retry lists live in crm_sync_kv, one row per object type (a JSON list, or null past the cap).
_RETRY_PREFIX = "retry-list:"
RETRY_LIST_MAX = 100_000
_KV_ALL = "SELECT t.key AS key, t.value AS value FROM {crm_sync_kv} AS t"
_RETRY_FROM_STATE = """SELECT s.object_type AS object_type, s.record_key AS record_key FROM {crm_sync_state} AS s
WHERE s.status IN ('failed', 'pending')"""
# Records whose status or error the entries after the settled mark (up to @upto) set, with their
# latest status, error and Twenty id as the journal alone says (narrow columns of a small table).
_STATUS_SEEN = q.journal_fields(
    "j.seq > @folded AND j.seq <= @upto", ("crm_id", "status", "last_error"),
    having="MAX(IF(j.seq > @settled AND (STRPOS(j.fields, ',status,') > 0 OR STRPOS(j.fields, ',last_error,') > 0), 1, 0)) = 1")
# The same from the state with the journal laid over it, for the few the journal cannot tell alone:
# by key (a constant filter on the clustering columns), three narrow columns of the state.
_STATUS_OF = q.state_with_journal("s1.object_type = @object_type AND s1.record_key IN {keys_keys}",
                                  "j1.object_type = @object_type AND j1.record_key IN {keys_keys} AND j1.seq <= @upto",
                                  ("crm_id", "status", "last_error"))
STATUS_CHUNK = 10_000
# The smallest window a fold halves down to when one runs out of memory; below it the error stands.
MIN_FOLD_WINDOW_ROWS = 500
# Journal entries one INSERT carries at most: about 1 KB each as query parameters (the merge base),
# well inside BigQuery's 10 MB request limit; a push's request saves 200, a pull's merge 2,000.
JOURNAL_INSERT_ROWS = 2_000
_KV_WRITE = """MERGE {crm_sync_kv} AS t USING (SELECT @key AS key, @value AS value) AS s ON t.key = s.key
WHEN MATCHED THEN UPDATE SET value = s.value, updated_at = CURRENT_TIMESTAMP()
WHEN NOT MATCHED THEN INSERT (key, value, updated_at) VALUES (s.key, s.value, CURRENT_TIMESTAMP())"""

# How far the journal goes, and how many entries landed below what an earlier fold already took
# in: a write of a writer that was paused past its lease, landing after the next holder folded its
# own (newer) saves. Those are dropped, never folded over the newer state.
_JOURNAL_LAST = """SELECT MAX(j.seq) AS upto, COUNT(*) AS n, COUNTIF(j.seq <= @folded) AS stale,
  COUNTIF(j.seq > @settled) AS fresh
FROM {crm_sync_journal} AS j"""
_FOLDED_MARK = "journal-folded-upto"  # entries up to here are in crm_sync_state (and removed)
_SETTLED_MARK = "journal-settled-upto"  # entries up to here are on the retry lists (folded or not)
_JOURNAL_TRIM = "DELETE FROM {crm_sync_journal} AS j WHERE j.seq <= @upto"
# The records with entries not folded yet.
_UNFOLDED_KEYS = """SELECT DISTINCT j.object_type AS object_type, j.record_key AS record_key
FROM {crm_sync_journal} AS j WHERE j.seq > @folded"""
# Every @window-th entry's seq after @folded: where the fold's windows end.
_FOLD_BOUNDS = """SELECT w.seq AS seq FROM (
  SELECT j.seq AS seq, ROW_NUMBER() OVER (ORDER BY j.seq) AS rn FROM {crm_sync_journal} AS j
  WHERE j.seq > @folded AND j.seq <= @upto
) AS w WHERE MOD(w.rn, @window) = 0 ORDER BY w.seq"""


class _JournalMemory:
    """What one process knows of the journal, shared by its handles on one store."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.cache: collections.OrderedDict[tuple[str, str], dict[str, Any] | None] = collections.OrderedDict()
        self.last_seq = 0
        self.floor_known = False  # whether last_seq was raised past the journal's settled mark yet
        # None: not known whether an earlier process left entries to settle; True/False once known.
        self.dirty: bool | None = None
        # Whether entries not folded into crm_sync_state remain (None: not known yet).
        self.unfolded: bool | None = None
        # Keys saved while not in the cache: until the next fold, only a read-through knows them.
        self.unsettled: set[tuple[str, str]] = set()
        # crm_sync_kv as this process last read or wrote it (None: read it again first).
        self.kv: dict[str, str | None] | None = None
        # Records found clean (synced or deleted, no error) by the folds since the run began.
        self.clean = _SettledClean()
        # Entries this process saved since its last fold (what a fold while a push waits would take in).
        self.saved_since_fold = 0
        # The records with open errors (keys by object type, Twenty ids), read at the run's first
        # direct save and kept up with the errors this process records since (None: not read).
        self.open_errors: tuple[set[tuple[str, str]], set[str]] | None = None

    def next_seq(self) -> int:
        # Entries are ordered by seq across runs: nanoseconds since the epoch, strictly increasing
        # within a process and never below what was already folded (upsert_sync_state raises the
        # floor first); a killed run's entries are folded before the next run writes its own.
        self.last_seq = max(time.time_ns(), self.last_seq + 1)
        return self.last_seq

    def remember(self, key: tuple[str, str], row: dict[str, Any] | None) -> None:
        self.cache[key] = row
        self.cache.move_to_end(key)
        while len(self.cache) > STATE_CACHE_ROWS:
            self.cache.popitem(last=False)


class SyncStateJournal:
    """Sync state rows keyed by (object_type, record_key): written to the journal, read with it."""

    if TYPE_CHECKING:  # provided by Warehouse and its other parts
        read_only: bool

        def _run(self, template: str, binds: Sequence[Bind], *, fetch: bool = False) -> tuple[list[dict[str, Any]], int | None]:
            raise NotImplementedError

        def _stream(self, template: str, binds: Sequence[Bind], batch_size: int) -> Iterator[list[dict[str, Any]]]:
            raise NotImplementedError

    _journal: _JournalMemory
    # Fold once the entries not folded reach this share of the state's rows (0: at every settle).
    journal_fold_share = 0.0
    # Entries per fold MERGE (None: all in one); an engine whose memory is bounded sets it.
    fold_window_rows: int | None = None
    # Whether only this process can write the store while it has it open (a DuckDB file's lock):
    # then what its read cache says of a record no other process can have changed.
    one_writing_process = False

    def _state_rows(self) -> int:
        """Rows in crm_sync_state (a count reads no column: BigQuery bills its 10 MB minimum)."""
        rows, _ = self._run("SELECT COUNT(*) AS n FROM {crm_sync_state}", (), fetch=True)
        return int(rows[0]["n"] or 0)

    def _init_journal(self) -> None:
        self._journal = _JournalMemory()

    def _share_journal(self, other: SyncStateJournal) -> None:
        """A second handle on the same store (another thread's) shares what this process knows."""
        self._journal = other._journal

    # --- writing -------------------------------------------------------------------------------

    def upsert_sync_state(self, rows: Iterable[Mapping[str, Any]]) -> int:
        """Save sync state rows keyed by (object_type, record_key); fields a row leaves out are left
        as they are. One INSERT into the journal per JOURNAL_INSERT_ROWS rows (a call's rows go as
        query parameters, and BigQuery limits a request to 10 MB: a landing saves a whole backlog).
        Each INSERT stands alone: a run killed between two saved the first, and redoes the rest.
        On DuckDB, records known to have no state yet are INSERTed into the state directly
        (`_new_records`)."""
        stored = ({**r, "base": base_keys.encode(r["base"])} if "base" in r else r for r in rows)
        clean, fields = validate_rows("crm_sync_state", stored, SYNC_STATE_FIELDS, _KEY)
        for index, row in enumerate(clean):
            if row["object_type"] not in ("person", "company"):
                raise WarehouseDataError("crm_sync_state", index, "object_type must be one of ('person', 'company')")
            if row.get("status") is not None and row["status"] not in SYNC_STATUSES:
                raise WarehouseDataError("crm_sync_state", index, f"status must be one of {SYNC_STATUSES}")
        if not clean:
            return 0
        saved = len(clean)
        value_fields = [c for c in _VALUE_COLUMNS if c in fields]
        new = self._new_records(clean)
        if new:
            self._insert_new_records(new, value_fields)
            taken = {id(row) for row in new}
            clean = [row for row in clean if id(row) not in taken]
        if clean:
            self._journalled(clean, value_fields)
        return saved

    def _journalled(self, clean: list[dict[str, Any]], value_fields: list[str]) -> None:
        """Append validated rows to the journal (and this process's memory of the state)."""
        field_set = _field_set(value_fields)
        if not self._journal.floor_known:
            # New entries order after everything settled so far, whatever this machine's clock says.
            floor = self._settled_mark()
            with self._journal.lock:
                self._journal.last_seq = max(self._journal.last_seq, floor)
                self._journal.floor_known = True
        with self._journal.lock:
            for row in clean:  # validate_rows' own copies: the entry is the row, with its seq
                row["seq"], row["fields"] = self._journal.next_seq(), field_set
            self._journal.saved_since_fold += len(clean)
        columns = [(c.name, c.type) for c in CRM_SYNC_JOURNAL.columns
                   if c.name in ("seq", "fields", *_KEY, *value_fields)]
        for start in range(0, len(clean), JOURNAL_INSERT_ROWS):
            self._run(*q.insert_select("{crm_sync_journal}", columns, clean[start:start + JOURNAL_INSERT_ROWS],
                                          never_shared=("seq", "record_key")))
        with self._journal.lock:
            self._journal.dirty = True
            for row in clean:
                key = (row["object_type"], row["record_key"])
                if key in self._journal.cache:
                    cached = self._journal.cache[key]
                    self._journal.remember(key, _apply({**(cached or _empty(key))}, _unread(row), value_fields))
                else:
                    self._journal.unsettled.add(key)

    def _new_records(self, clean: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The rows saved synced for records this process knows have no state at all: no row in
        crm_sync_state and no journal entry (`None` in the read cache, as change detection or a read
        found them; every save since is in the cache too, and no other process can write the
        store). Only where a fold is always due (DuckDB): there each entry costs a journal INSERT
        and then a fold MERGE, which for a new record inserts what one INSERT into the state would
        (a first push of 50,000 records spent 0.85 of its 11 s of CPU folding). Failed and pending
        rows stay in the journal: its fold puts them on the retry lists."""
        if self.journal_fold_share > 0 or not self.one_writing_process:
            return []
        cache = self._journal.cache
        with self._journal.lock:
            return [row for row in clean if row.get("status") == "synced"
                    and (row["object_type"], row["record_key"]) in cache
                    and cache[(row["object_type"], row["record_key"])] is None]

    def _insert_new_records(self, rows: list[dict[str, Any]], value_fields: list[str]) -> None:
        """INSERT rows of records with no state straight into crm_sync_state, as the fold of their
        one entry would (the fields a row leaves out stay NULL). They leave the read cache (a read
        finds them in the state; a first push of a million records would otherwise keep its last
        20,000 states whole in memory), and those with open errors are noted clean or not, as a
        fold would note them, for `close_settled_errors` (noting every record cost 25 bytes a
        record: 25 MiB in a 1M push)."""
        columns = [(c.name, c.type) for c in CRM_SYNC_STATE.columns if c.name in (*_KEY, *value_fields)]
        for start in range(0, len(rows), JOURNAL_INSERT_ROWS):
            self._run(*q.insert_select("{crm_sync_state}", columns, rows[start:start + JOURNAL_INSERT_ROWS],
                                          never_shared=("record_key",)))
        if self._journal.open_errors is None:
            found, _ = self._run(q.OPEN_ERROR_RECORDS, (), fetch=True)
            with self._journal.lock:
                self._journal.open_errors = (set(), set())
            self._errors_opened(found)
        with self._journal.lock:
            keys, ids = self._journal.open_errors or (set(), set())
            for row in rows:
                key = (row["object_type"], row["record_key"])
                self._journal.cache.pop(key, None)
                if key in keys or row.get("crm_id") in ids:
                    self._journal.clean.note_record(row["object_type"], row["record_key"], row.get("crm_id"),
                                                    row.get("last_error") is None)

    def _errors_opened(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Error rows now open (read, or recorded by this process): kept up with once read."""
        with self._journal.lock:
            if self._journal.open_errors is None:
                return
            keys, ids = self._journal.open_errors
            for row in rows:
                if row.get("object_type") and row.get("record_key") is not None:
                    keys.add((row["object_type"], str(row["record_key"])))
                if row.get("crm_id"):
                    ids.add(row["crm_id"])

    # --- reading -------------------------------------------------------------------------------

    def read_sync_state(self, object_type: str, record_keys: Iterable[str | int]) -> dict[str, dict[str, Any]]:
        """Sync state rows by record_key (keys may be given as ints; they are stored as text)."""
        _check_object_type(object_type)
        keys = sorted({str(k) for k in record_keys})
        out: dict[str, dict[str, Any]] = {}
        missing = []
        with self._journal.lock:
            for key in keys:
                if (object_type, key) in self._journal.cache:
                    row = self._journal.cache[(object_type, key)]
                    if row is not None:
                        out[key] = _readable(row)
                else:
                    missing.append(key)
        if missing:
            found = self._read_through(object_type, missing)
            with self._journal.lock:
                for key in missing:
                    row = found.get(key)
                    self._journal.remember((object_type, key), row)
                    self._journal.unsettled.discard((object_type, key))
                    if row is not None:
                        out[key] = dict(row)
        return out

    def read_sync_state_by_crm_id(self, object_type: str, crm_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """Sync state rows by crm_id (the pull maps CRM records back to warehouse keys)."""
        _check_object_type(object_type)
        ids = sorted(set(crm_ids))
        if not ids:
            return {}
        rows, _ = self._run(_KEYS_BY_CRM_ID, (Scalar("object_type", STRING, object_type),
                                              KeySet("ids", STRING, ids)), fetch=True)
        wanted = set(ids)
        with self._journal.lock:
            # Keys now holding these ids only in this process's memory (saved, not yet read back).
            cached = [k for (obj, k), row in self._journal.cache.items()
                      if obj == object_type and row is not None and row.get("crm_id") in wanted]
        states = self.read_sync_state(object_type, {r["record_key"] for r in rows} | set(cached))
        return {s["crm_id"]: s for s in states.values() if s.get("crm_id") in wanted}

    def states_in_crm_id_order(self, object_type: str, *, batch_size: int = 5_000) -> Iterator[list[dict[str, Any]]]:
        """(crm_id, record_key, crm_hash, status) of every state row linked to Twenty, in crm_id order:
        four narrow columns of the state read once, for a walk over Twenty in id order
        (`sync --full`) that then reads the whole state of only the records that differ."""
        _check_object_type(object_type)
        self.fold_journal(force=True)  # read from the state table alone
        yield from self._stream(_LINKED_IN_ID_ORDER, (Scalar("object_type", STRING, object_type),), batch_size)

    def _read_through(self, object_type: str, keys: list[str]) -> dict[str, dict[str, Any]]:
        rows, _ = self._run(_READ, (Scalar("object_type", STRING, object_type), KeySet("keys", STRING, keys),
                                    self.folded_mark()), fetch=True)
        out: dict[str, dict[str, Any]] = {}
        for r in rows:
            entry = plain_row(r)
            for name in _JSON_COLUMNS:
                entry[name] = _read_json(entry[name])
            key = entry["record_key"]
            fields = [f for f in str(entry.pop("fields")).strip(",").split(",") if f]
            entry.pop("seq")
            out[key] = _apply(out.get(key) or _empty((object_type, key)), entry, fields)
        return out

    def _read_unsettled(self, object_type: str, keys: list[str]) -> None:
        """Read through, in one query, the state of those of `keys` saved (or, for a handle that
        may not fold, journalled) since the query that found them read the state table."""
        with self._journal.lock:
            wanted = [k for k in keys if (object_type, k) in self._journal.unsettled
                      and (object_type, k) not in self._journal.cache]
        if wanted:
            self.read_sync_state(object_type, wanted)

    def _settle_detected(self, object_type: str, key: str, carried: dict[str, Any] | None, *,
                         keep: bool) -> dict[str, Any] | None:
        """The state of a row change detection hands out: what this process knows when it saved the
        row since the query read it, else what the query carried (None: no state), which is then
        remembered when it is whole (`keep`), so that the push reads none of these rows' state again."""
        with self._journal.lock:
            if (object_type, key) in self._journal.cache:
                cached = self._journal.cache[(object_type, key)]
                return None if cached is None else _readable(cached)
            if (object_type, key) not in self._journal.unsettled:
                if keep or carried is None:
                    self._journal.remember((object_type, key), carried)
                return None if carried is None else dict(carried)
        return self.read_sync_state(object_type, [key]).get(key)

    # --- folding -------------------------------------------------------------------------------

    def fold_journal(self, *, forget: bool = False, force: bool = False) -> int:
        """Settle the journal's new entries (retry lists, records saved clean) and, when due or
        `force`d, fold it into crm_sync_state (one MERGE, then the folded entries are removed);
        returns how many entries were folded. Nothing is sent when this process knows there is
        nothing to do. `forget` also drops the read cache (at a run's start: another writer may
        have run)."""
        with self._journal.lock:
            if forget:
                self._journal.cache.clear()
                self._journal.kv = None
                self._journal.floor_known = False
                self._journal.dirty = None  # another writer may have left entries since
                self._journal.unfolded = None
                self._journal.clean = _SettledClean()
                self._journal.open_errors = None
            if self.read_only and not force:
                return 0  # a handle that only looks
        if self.read_only:
            # It may not fold, so a reader of the state table alone would see stale rows: the keys
            # with entries not folded are read through the journal instead (`_settle_detected`).
            self._unfolded_keys_unsettled()
            return 0
        with self._journal.lock:
            if self._journal.dirty is False and not (force and self._journal.unfolded is not False):
                return 0  # nothing new to settle, nor to fold
            seen = self._journal.last_seq  # entries this process wrote before the count below
        folded, settled = self.folded_mark(), self._settled_mark()
        rows, _ = self._run(_JOURNAL_LAST, (folded, Scalar("settled", INT64, settled)), fetch=True)
        count = int(rows[0]["n"] or 0) if rows else 0
        upto = int(rows[0]["upto"]) if count else 0
        done = 0
        if count:
            # Replaying entries over a state that already has them gives the same state, so a fold
            # killed between any two statements is simply done again by the next one: the marks
            # move once the state and the lists have them, and the entries are removed last.
            bound = Scalar("upto", INT64, upto)
            stale = int(rows[0]["stale"] or 0)
            if stale:
                log.warning("Dropped %d sync-state saves that landed after a later fold (a writer paused past "
                            "its lease); the state keeps the newer saves", stale)
                self._run(_JOURNAL_TRIM, (Scalar("upto", INT64, folded.value),))
            # What the journal says of the records its new entries touched: read in batches after
            # the fold (which leaves the entries in place until the trim below), a first sync of a
            # million records settles a million of them.
            says = (Scalar("upto", INT64, upto), folded, Scalar("settled", INT64, settled))
            if force or self._fold_due(count - stale):
                for low, high in self._fold_windows(folded.value or 0, upto, self.fold_window_rows):
                    self._fold_window(low, high, self.fold_window_rows)
                folded = Scalar("folded", INT64, upto)
                done = count
            if int(rows[0]["fresh"] or 0):
                self._settle_statuses(self._stream(_STATUS_SEEN, says, STATUS_CHUNK), bound, folded)
            if upto > settled:
                self._kv_set(_SETTLED_MARK, str(upto))
            if done:
                if upto > (self.folded_mark().value or 0):
                    self._kv_set(_FOLDED_MARK, str(upto))
                self._run(_JOURNAL_TRIM, (bound,))
        with self._journal.lock:
            self._journal.unsettled.clear()
            # Another thread of this process may have appended meanwhile: then there is more to do.
            self._journal.dirty = self._journal.last_seq > max(seen, upto)
            self._journal.unfolded = bool(count) and not done or self._journal.dirty
            if done:
                self._journal.saved_since_fold = 0
        return done

    def shed_read_cache(self) -> bool:
        """Drop the state rows this process keeps read (at a run's end: its closing fold then has
        their memory). Reads go through to the store again; keys whose cached row carried saves not
        yet folded are marked so that a row read before those saves is not taken at its word. Only
        where reads are free (a fold always due: DuckDB): on BigQuery each read through bills, and
        `serve`'s webhooks between runs read what the run left in the cache. True when dropped."""
        if self.journal_fold_share > 0:
            return False
        with self._journal.lock:
            self._journal.unsettled.update(key for key, row in self._journal.cache.items() if row is not None)
            self._journal.cache.clear()
        return True

    def fold_journal_while_idle(self) -> None:
        """The push waits for its last answers: fold what it saved so far now, so the fold after the
        last answer has only the last few requests' entries to take in. Only where a fold is always
        due (scans are free: DuckDB); on BigQuery every statement bills at least 10 MB a table, and
        the journal waits for its share as before. Nothing is sent when nothing new was saved. Nor
        when this process saved more than a fold window since its last fold (a first push of a
        million records): that fold would fill DuckDB's pool while the push still holds its rows
        and answers (peak RSS of a 1M push 440 -> 467 MiB); it waits for the push's end."""
        if self.journal_fold_share > 0 or self.read_only:
            return
        with self._journal.lock:
            saved = self._journal.saved_since_fold
        if self.fold_window_rows is None or saved <= self.fold_window_rows:
            self.fold_journal()

    def _unfolded_keys_unsettled(self) -> None:
        rows, _ = self._run(_UNFOLDED_KEYS, (self.folded_mark(),), fetch=True)
        with self._journal.lock:
            for r in rows:
                key = (r["object_type"], r["record_key"])
                self._journal.cache.pop(key, None)
                self._journal.unsettled.add(key)

    def _fold_window(self, low: int, high: int, entries: int | None) -> None:
        """MERGE the entries in (low, high] (at most `entries`; None: no bound) into the state. A
        window that does not fit the engine's memory (merge bases wider than the limit was chosen
        for) is folded in halves: the failed MERGE changed nothing, and halves give what it gives."""
        try:
            self._run(_FOLD, (Scalar("upto", INT64, high), Scalar("folded", INT64, low)))
        except WarehouseOutOfMemory:
            if entries is None or entries <= MIN_FOLD_WINDOW_ROWS:
                raise
            half = -(-entries // 2)
            log.warning("A fold window of %d journal entries did not fit the warehouse's memory limit: folding "
                        "it in windows of %d (a larger limit folds faster)", entries, half)
            for a, b in self._fold_windows(low, high, half):
                self._fold_window(a, b, half)
            return
        self._after_fold_window()

    def _fold_windows(self, folded: int, upto: int, size: int | None) -> list[tuple[int, int]]:
        """(after, upto] seq windows of at most `size` entries (None: one window), oldest first:
        folding them one after the other gives what one fold gives (each field takes its latest
        entry's value), and bounds the memory of each MERGE (DuckDB's is 120 MB by default; a first
        sync of a million contacts leaves a million entries)."""
        if not size:
            return [(folded, upto)]
        rows, _ = self._run(_FOLD_BOUNDS, (Scalar("folded", INT64, folded), Scalar("upto", INT64, upto),
                                           Scalar("window", INT64, size)), fetch=True)
        bounds = [int(r["seq"]) for r in rows if int(r["seq"]) < upto] + [upto]
        return list(zip([folded] + bounds[:-1], bounds))

    def _fold_due(self, entries: int) -> bool:
        """Whether folding `entries` journal entries now costs less than reading them beside the
        state until later: always where scans are free (share 0), else once they reach the share."""
        share = self.journal_fold_share
        return share <= 0 or entries >= share * self._state_rows()

    def folded_mark(self) -> Scalar:
        """@folded: the journal entries up to this seq are in crm_sync_state."""
        return Scalar("folded", INT64, int(self._kv_get(_FOLDED_MARK) or 0))

    def _settled_mark(self) -> int:
        return max(int(self._kv_get(_SETTLED_MARK) or 0), int(self._kv_get(_FOLDED_MARK) or 0))

    # --- the retry lists -------------------------------------------------------------------------

    def retry_keys(self, object_type: str) -> list[str] | None:
        """Keys whose last push failed or waits (for its company), as of the last fold; None when
        there are too many to keep as a list (change detection then reads them from the state)."""
        _check_object_type(object_type)
        return self._retry_lists().get(object_type, [])

    def _retry_lists(self) -> dict[str, list[str] | None]:
        lists: dict[str, list[str] | None] = {}
        for name in ("person", "company"):
            text = self._kv_get(_RETRY_PREFIX + name)
            if text is not None:
                value = json.loads(text or "[]")
                lists[name] = value if isinstance(value, list) else None
        if len(lists) < 2:
            # A warehouse from before the lists: read them from the state, once.
            state, _ = self._run(_RETRY_FROM_STATE, (), fetch=True)
            for name in ("person", "company"):
                if name not in lists:
                    lists[name] = sorted(r["record_key"] for r in state if r["object_type"] == name)
                    self._write_retry_list(name, lists[name])
        return lists

    def _write_retry_list(self, name: str, keys: list[str] | None) -> None:
        if self.read_only:
            return  # a dry run reads the lists it would write, and keeps nothing
        if keys is not None and len(keys) > RETRY_LIST_MAX:
            keys = None  # a list this long costs more to carry than to read from the state
        self._kv_set(_RETRY_PREFIX + name, json.dumps(keys))

    # --- crm_sync_kv, read once a run ------------------------------------------------------------

    def _kv_get(self, key: str) -> str | None:
        """A value of crm_sync_kv. The table is read whole once (one small query instead of one a
        value: on BigQuery each query bills at least 10 MB), then served from memory until the next
        run's start: the writer lease makes this process the table's only writer meanwhile."""
        with self._journal.lock:
            known = self._journal.kv
        if known is None:
            rows, _ = self._run(_KV_ALL, (), fetch=True)
            known = {r["key"]: r["value"] for r in rows}
            with self._journal.lock:
                self._journal.kv = known
        return known.get(key)

    def _kv_set(self, key: str, value: str) -> None:
        self._run(_KV_WRITE, (Scalar("key", STRING, key), Scalar("value", STRING, value)))
        with self._journal.lock:
            if self._journal.kv is not None:
                self._journal.kv[key] = value

    def _settle_statuses(self, seen: Iterable[list[dict[str, Any]]], upto: Scalar, folded: Scalar) -> None:
        """The records whose status the settled entries set go on or off the retry lists (failed or
        pending: on; synced or deleted: off), and the ones now clean (synced or deleted, no error)
        are remembered for `close_settled_errors`. `seen`: what the journal says of them, in batches
        (each record once); only the lists and the compact record of clean ones outlive a batch."""
        lists: dict[str, list[str] | None] = {}
        after: dict[str, set[str] | None] = {}
        for batch in seen:
            for name in ("person", "company"):
                states, unknown = self._statuses_known(name, [r for r in batch if r["object_type"] == name])
                for start in range(0, len(unknown), STATUS_CHUNK):
                    got, _ = self._run(_STATUS_OF, (Scalar("object_type", STRING, name), upto, folded,
                                                    KeySet("keys", STRING, unknown[start:start + STATUS_CHUNK])), fetch=True)
                    states += got
                if not states:
                    continue
                if not lists:
                    lists = self._retry_lists()
                    after = {name: None if listed is None else set(listed) for name, listed in lists.items()}
                with self._journal.lock:
                    for s in states:
                        clean = s["status"] in ("synced", "deleted") and s["last_error"] is None
                        self._journal.clean.note_record(name, s["record_key"], s["crm_id"], clean)
                kept = after.get(name)
                if kept is not None:
                    for s in states:
                        if s["status"] in ("failed", "pending"):
                            kept.add(s["record_key"])
                        else:
                            kept.discard(s["record_key"])
        for name in ("person", "company"):
            listed, kept = lists.get(name), after.get(name)
            if listed is not None and kept is not None and kept != set(listed):
                self._write_retry_list(name, sorted(kept))

    def _statuses_known(self, object_type: str, seen: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
        """(record_key, crm_id, status, last_error) of the records whose entries set both status and
        error, their Twenty id from the entries or this process's memory of the state (a clean
        record needs it); the keys of the rest, to read from the state."""
        known: list[dict[str, Any]] = []
        unknown: list[str] = []
        with self._journal.lock:
            for r in seen:
                key = r["record_key"]
                cached = self._journal.cache.get((object_type, key), _NOT_CACHED)
                crm_id = r["crm_id"] if r["set_crm_id"] else (
                    cached.get("crm_id") if isinstance(cached, dict) else None if cached is None else _NOT_CACHED)
                if r["set_status"] and r["set_last_error"] and crm_id is not _NOT_CACHED:
                    known.append({"record_key": key, "crm_id": crm_id, "status": r["status"], "last_error": r["last_error"]})
                else:
                    unknown.append(key)
        return known, sorted(unknown)

    def settled_since_forget(self, keys: Mapping[str, Iterable[str]] | None = None,
                             crm_ids: Iterable[str] | None = None) -> tuple[dict[str, set[str]], set[str]]:
        """Keys (per object type) and Twenty ids of the records saved clean since the last
        `fold_journal(forget=True)` (a run's start), as of the last fold; only those among `keys`
        and `crm_ids` when given (one pass over what the folds kept, whatever their number)."""
        with self._journal.lock:
            return self._journal.clean.clean(keys, crm_ids)

    def _after_fold_window(self) -> None:
        """Called after each fold MERGE: where an engine that keeps written rows in memory flushes them."""


_NOT_CACHED = object()
_INT64 = range(-2**63, 2**63)


class _SettledClean:
    """What the folds since a run's start found of each record they settled: clean (synced or
    deleted, no error) or not, the latest fold's word winning; and the Twenty ids of the clean ones.
    Kept compact, since a first sync of a million records settles a million: a key that is a whole
    number as 8 bytes and its word as one (sets of text took about 200 bytes a record with its id),
    a Twenty id that is a UUID as 16 bytes; any other key or id as text."""

    __slots__ = ("keys", "words", "other_keys", "ids", "other_ids")

    def __init__(self) -> None:
        self.keys = {"person": array.array("q"), "company": array.array("q")}
        self.words = {"person": bytearray(), "company": bytearray()}
        self.other_keys: dict[str, dict[str, bool]] = {"person": {}, "company": {}}
        self.ids = bytearray()
        self.other_ids: set[str] = set()

    def note(self, object_type: str, key: str, clean: bool) -> None:
        number = _whole(key)
        if number is None:
            self.other_keys[object_type][key] = clean
        else:
            self.keys[object_type].append(number)
            self.words[object_type].append(clean)

    def note_record(self, object_type: str, key: str, crm_id: str | None, clean: bool) -> None:
        """A record's word (clean or not), and its Twenty id when clean."""
        self.note(object_type, key, clean)
        if clean and crm_id:
            self.note_id(crm_id)

    def note_id(self, crm_id: str) -> None:
        packed = _uuid_bytes(crm_id)
        if packed is None:
            self.other_ids.add(crm_id)
        else:
            self.ids += packed

    def clean(self, among: Mapping[str, Iterable[str]] | None,
              among_ids: Iterable[str] | None) -> tuple[dict[str, set[str]], set[str]]:
        """The clean keys per object type and the clean ids: all of them, or those among the given."""
        keys: dict[str, set[str]] = {}
        for name in ("person", "company"):
            wanted = None if among is None else {str(k) for k in among.get(name, ())}
            latest: dict[int, int] = {}
            numbers = None if wanted is None else {n for n in map(_whole, wanted) if n is not None}
            for number, word in zip(self.keys[name], self.words[name]):
                if numbers is None or number in numbers:
                    latest[number] = word
            found = {str(n) for n, word in latest.items() if word}
            found.update(k for k, clean in self.other_keys[name].items() if clean and (wanted is None or k in wanted))
            keys[name] = found
        wanted_ids = None if among_ids is None else set(among_ids)
        packed = {p: i for i, p in ((i, _uuid_bytes(i)) for i in wanted_ids) if p is not None} if wanted_ids is not None else None
        ids = {i for i in self.other_ids if wanted_ids is None or i in wanted_ids}
        view = memoryview(self.ids)
        for start in range(0, len(view), 16):
            one = bytes(view[start:start + 16])
            if packed is None:
                ids.add(str(uuid.UUID(bytes=one)))
            elif one in packed:
                ids.add(packed[one])
        return keys, ids


def _whole(key: str) -> int | None:
    """A key that is a whole number written plainly (as the sync stores INT64 keys), else None."""
    try:
        number = int(key)
    except ValueError:
        return None
    return number if number in _INT64 and str(number) == key else None


def _uuid_bytes(crm_id: str) -> bytes | None:
    """A Twenty id written as a lowercase UUID (what Twenty hands out) as its 16 bytes, else None."""
    # What `uuid.UUID(crm_id).bytes` gives for the ids whose `str()` is the id itself, without
    # making the UUID (a million of them settle at the end of a first sync of a million records).
    return bytes.fromhex(crm_id.replace("-", "")) if _LOWER_UUID.fullmatch(crm_id) else None


_LOWER_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _check_object_type(object_type: str) -> None:
    if object_type not in ("person", "company"):
        raise ValueError(f"object_type must be one of ('person', 'company'), got {object_type!r}")


def _empty(key: tuple[str, str]) -> dict[str, Any]:
    return {"object_type": key[0], "record_key": key[1], **{c: None for c in _VALUE_COLUMNS}}


def _apply(state: dict[str, Any], entry: Mapping[str, Any], fields: Iterable[str]) -> dict[str, Any]:
    for name in fields:
        state[name] = entry.get(name)
    return state


class _SavedJson:
    """A JSON column's text as a save stored it (the base encoded), in the read cache until a read
    needs its value: most rows a push saves are not read again in the run, and parsing every saved
    base cost about as much as validating the row."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


def _unread(row: Mapping[str, Any]) -> dict[str, Any]:
    # Validated rows carry JSON as its canonical text: kept as such until read (`_readable`).
    out = dict(row)
    for name in _JSON_COLUMNS:
        if isinstance(out.get(name), str):
            out[name] = _SavedJson(out[name])
    return out


def _readable(cached: dict[str, Any]) -> dict[str, Any]:
    """A copy of a cached row as reads hand it out (JSON parsed, the base decoded); the cached row
    keeps the parsed value, so it is parsed once."""
    for name in _JSON_COLUMNS:
        value = cached.get(name)
        if type(value) is _SavedJson:
            cached[name] = _read_json(value.text)
    return dict(cached)


def _read_json(value: Any) -> Any:
    """A JSON column as stored (text or parsed) as the sync reads it (the only one, base, decoded)."""
    return base_keys.decode(json_value(value))
