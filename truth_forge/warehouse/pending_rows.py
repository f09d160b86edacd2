"""Values pulled from Twenty, appended at once and landed in `contacts`/`businesses` later.

Why it exists: on BigQuery every MERGE into a table that is not partitioned bills the whole target
table (docs/reference/standard-sql/dml-syntax, "On-demand query size calculation"), and `contacts`
is the user's table, laid out as they chose. Writing each pulled page or webhook batch straight in
billed the whole table per batch. Here a store that stages (`stage_pulled_rows`, on by default on
BigQuery) appends the merged rows to `crm_sync_pending` (an INSERT bills nothing) and lands them
with one MERGE per table once a run, or once an interval under `serve` (`pending_fold_minutes`).

Nothing is lost in between:
* Reads by key (`get_rows`, `row_hashes`) lay the pending values over the table's row, so the sync
  merges the next edit of a record against what it last decided, and the push sends nothing back.
  The row's hash reads `STAGED_HASH`, which the pull also records as the state's `warehouse_hash`.
* A staged row remembers the warehouse values its merge saw. Landing writes a field only where the
  warehouse still holds that value: a warehouse edit made in between is kept (and pushed, as any
  warehouse edit is), never overwritten by the older Twenty value. The same check makes landing
  idempotent, so a run killed half-way through lands the rest next time.
* Landing records the landed row's hash as synced only when the row had not moved since the merge
  read it (its stamp and every value but the JSON alike) and, for a merge that read no JSON, when
  the landed row holds what the merge base says (`check_landed_rows_with`, sync/landing.py);
  otherwise the state is left `pending` with no hash, and the next push sends what differs from
  the merge base: the other writer's edit goes out. A value kept back so is told to the sync
  (`check_landed_rows_with`), for the record history.
* If a warehouse writer changed a staged row before it landed, the next read of that row lands
  everything pending first, so the merge sees both sides as they are. Reads hold the lock landing
  takes, so no read sees a table row from before a landing without the values that landing wrote.
* Records created in Twenty are inserted at once (an INSERT bills nothing): a key allocated for
  them is never left free in the table, where another writer could take it.

Change detection needs no overlay: a staged row's table row carries no new stamp until it lands,
and landing stamps it and records its new hash in the state, so it is not sent back.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from truth_forge.warehouse import queries as q
from truth_forge.warehouse.binds import KeySet, RowSet, plain_row
from truth_forge.warehouse.schema import CRM_SYNC_PENDING, KEY_COLUMN, STRING

if TYPE_CHECKING:
    from truth_forge.warehouse.binds import Bind

log = logging.getLogger(__name__)

# The warehouse_hash of a record whose merged values wait in crm_sync_pending (never a real hash:
# those are hex digests). Landing replaces it with the landed row's hash.
STAGED_HASH = "staged"
# Judges landed rows against their merge base: (object type, landed rows by key, sync states by key)
# -> the keys whose row holds what the merge base says.
LandingCheck = Callable[[str, Mapping[int, Mapping[str, Any]], Mapping[str, Mapping[str, Any]]], set[int]]


@dataclass(frozen=True)
class KeptValue:
    """A staged Twenty value that did not land: the warehouse holds a newer one, set after the merge."""

    object_type: str
    key: int
    crm_id: str | None
    column: str
    twenty_value: Any
    warehouse_value: Any
    warehouse_stamp: Any  # the row's updated_at as landing read it


# Fields written together or not at all (the warehouse replaces a contact's emails/phones as a pair).
_PAIRS = (("primary_email", "additional_emails"), ("primary_phone", "additional_phones"))


def _text(value: Any) -> str:
    """One comparable text for a value as rows carry it (timestamps as ISO text)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=_iso)


def _iso(value: Any) -> str:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


@dataclass
class _Entry:
    """What waits for one record: the fields to write, the warehouse values (and row hash) the first
    staged merge saw, None for a row that did not exist yet."""

    fields: dict[str, Any]
    expected: dict[str, Any] | None
    expected_hash: str | None
    staged_at: dt.datetime
    batches: set[str] = field(default_factory=set)
    # The row as the first merge read it from the table (every value but the JSON, and its stamp):
    # landing records the row as synced only if it still reads so.
    seen: dict[str, Any] | None = None
    # Staged by a merge that read the row without its JSON (BigQuery bills every column read): the
    # merge could not see a JSON edit, so landing checks the landed row, JSON and all, against the
    # merge base before it records the row as synced (`check_landed_rows_with`).
    verify: bool = False

    def add(self, later: _Entry) -> None:
        self.fields.update(later.fields)
        self.seen = self.seen if self.seen is not None else later.seen
        self.verify = self.verify or later.verify
        if self.expected is not None and later.expected is not None:
            # A field first staged by the later merge was read from the table: its value is the truth.
            self.expected = {**later.expected, **self.expected}
        self.batches |= later.batches


@dataclass
class _Pending:
    """The entries of this store, shared by every handle of one process (the writer lease makes the
    process the only writer, so what it loaded and staged since is the table)."""

    entries: dict[tuple[str, int], _Entry] = field(default_factory=dict)
    loaded: bool = False
    lock: threading.RLock = field(default_factory=threading.RLock)
    # Which landed rows still read as their merge decided (object type, landed rows by key, their sync
    # states) -> keys; given by the sync, which knows what the merge base means. None: none is trusted.
    landing_check: LandingCheck | None = None
    # Staged values that landing kept back for a newer warehouse value -> their record history rows.
    on_kept: Callable[[list[KeptValue]], list[dict[str, Any]]] | None = None


class PendingRows:
    """Mixin of `Warehouse`: staging of pulled rows, the overlay on reads, and landing."""

    # Whether pulled rows are staged (BigQuery) or written at once (DuckDB, where a MERGE costs nothing).
    stage_pulled_rows = False
    # Staged rows land at the end of a run's pull once the oldest has waited this many minutes (0: every run).
    pending_fold_minutes = 0.0
    # Pulled records merged together (the latest version of each). On BigQuery a merge's lookups by
    # key read every storage block of the tables they touch whatever its size, so more at once would
    # be cheaper; but its statements carry the rows as parameters, and a request is limited to 10 MB.
    pull_merge_records = 2_000
    # Staged records one landing MERGE writes at most (about 200 bytes each as parameters).
    landing_records = 20_000

    if TYPE_CHECKING:  # provided by Warehouse and its other parts
        read_only: bool
        tables: Any

        def _run(self, template: str, binds: Sequence[Bind], *, fetch: bool = False) -> tuple[list[dict[str, Any]], int | None]:
            raise NotImplementedError

        def _existing_columns(self) -> dict[str, set[str]]:
            raise NotImplementedError

        def _validated(self, object_type: str, rows: Iterable[Mapping[str, Any]]) -> tuple[list[dict[str, Any]], tuple[str, ...]]:
            raise NotImplementedError

        def _table_rows(self, object_type: str, keys: Iterable[int], *, narrow: bool = False) -> list[dict[str, Any]]:
            raise NotImplementedError

        def upsert_contacts(self, rows: Iterable[Mapping[str, Any]]) -> int:
            raise NotImplementedError

        def upsert_businesses(self, rows: Iterable[Mapping[str, Any]]) -> int:
            raise NotImplementedError

        def insert_new_rows(self, object_type: str, rows: Sequence[Mapping[str, Any]]) -> int:
            raise NotImplementedError

        def read_sync_state(self, object_type: str, record_keys: Iterable[str | int]) -> dict[str, dict[str, Any]]:
            raise NotImplementedError

        def upsert_sync_state(self, rows: Iterable[Mapping[str, Any]]) -> int:
            raise NotImplementedError

        def append_history(self, rows: Iterable[Mapping[str, Any]]) -> int:
            raise NotImplementedError

    def _init_pending(self) -> None:
        self._pending = _Pending()

    def _share_pending(self, other: PendingRows) -> None:
        self._pending = other._pending

    def check_landed_rows_with(self, check: LandingCheck,
                               on_kept: Callable[[list[KeptValue]], list[dict[str, Any]]] | None = None) -> None:
        """How landing tells a row that holds what its merge decided (see `_Entry.verify`), and
        whom it tells of values kept back."""
        self._pending.landing_check, self._pending.on_kept = check, on_kept

    # --- staging -------------------------------------------------------------------------------

    def land_pulled(self, object_type: str, rows: Sequence[Mapping[str, Any]],
                    current: Mapping[int, Mapping[str, Any]]) -> set[int]:
        """Write rows a pull merged; `current` holds the warehouse rows the merge read, by key.

        Returns the keys staged for landing later (empty when written at once): their hash is
        `STAGED_HASH` until they land."""
        if not rows:
            return set()
        key_column = KEY_COLUMN[object_type]
        if not self.stage_pulled_rows:
            self._upsert_groups(object_type, rows)
            return set()
        for group in _by_field_set(rows):
            self._validated(object_type, group)  # a bad row fails here, as an upsert would, staging nothing
        new = [r for r in rows if int(r[key_column]) not in current]
        for group in _by_field_set(new):
            self.insert_new_rows(object_type, group)
        batch, now = uuid.uuid4().hex, dt.datetime.now(dt.UTC)
        narrow = (*q.NARROW_VIEW_COLUMNS[object_type], "updated_at")
        staged: list[tuple[int, _Entry]] = []
        for row in rows:
            key = int(row[key_column])
            seen = current.get(key)
            if seen is None:
                continue  # inserted above
            fields = {c: v for c, v in row.items() if c != key_column}
            from_table = seen.get("row_hash") != STAGED_HASH  # not laid over by an earlier entry
            staged.append((key, _Entry(fields, {c: seen.get(c) for c in fields},
                                       seen.get("row_hash") if from_table else None, now, {batch},
                                       {c: seen.get(c) for c in narrow} if from_table else None,
                                       verify=from_table and "row_hash" not in seen)))
        if not staged:
            return set()
        payloads = [{"batch_id": batch, "position": i, "object_type": object_type, "record_key": key,
                     "staged_at": now, "payload": _text({"fields": e.fields, "expected": e.expected,
                                                         "hash": e.expected_hash, "seen": e.seen,
                                                         "verify": e.verify})}
                    for i, (key, e) in enumerate(staged)]
        columns = [(c.name, c.type) for c in CRM_SYNC_PENDING.columns]
        with self._pending.lock:
            self._pending_entries()  # loaded before this batch joins them
            self._run(f"INSERT INTO {{crm_sync_pending}} ({', '.join(n for n, _ in columns)}) "
                      f"{q.source_select('rows', columns)}", (RowSet("rows", columns, payloads),))
            for key, entry in staged:
                self._remember(object_type, key, _decoded(entry))
        return {key for key, _ in staged}

    def _upsert_groups(self, object_type: str, rows: Iterable[Mapping[str, Any]]) -> None:
        """Upsert rows into their object's tables, one statement per set of fields they carry."""
        upsert = self.upsert_contacts if object_type == "person" else self.upsert_businesses
        for group in _by_field_set(rows):
            upsert(group)

    def _remember(self, object_type: str, key: int, entry: _Entry) -> None:
        held = self._pending.entries.get((object_type, key))
        if held is None:
            self._pending.entries[(object_type, key)] = entry
        else:
            held.add(entry)

    def _pending_entries(self) -> dict[tuple[str, int], _Entry]:
        with self._pending.lock:
            if not self._pending.loaded and self.read_only and not self._has_pending_table():
                self._pending.loaded = True  # a dry run on a store from before this table: nothing staged
            if not self._pending.loaded:
                rows, _ = self._run(
                    "SELECT p.batch_id AS batch_id, p.position AS position, p.object_type AS object_type, "
                    "p.record_key AS record_key, p.staged_at AS staged_at, p.payload AS payload "
                    "FROM {crm_sync_pending} AS p", (), fetch=True)
                for row in sorted((plain_row(r) for r in rows),
                                  key=lambda r: (r["staged_at"], r["batch_id"], r["position"])):
                    body = json.loads(row["payload"])
                    self._remember(row["object_type"], int(row["record_key"]),
                                   _Entry(body["fields"], body["expected"], body["hash"], row["staged_at"],
                                          {row["batch_id"]}, body.get("seen"), body.get("verify", False)))
                self._pending.loaded = True
            return self._pending.entries

    def _has_pending_table(self) -> bool:
        return self.tables[CRM_SYNC_PENDING.name] in self._existing_columns()

    def pending_keys(self, object_type: str, keys: Iterable[int]) -> list[int]:
        """Those of `keys` whose pulled values wait to land."""
        with self._pending.lock:
            entries = self._pending_entries()
            return [k for k in keys if (object_type, int(k)) in entries] if entries else []

    def pending_summary(self) -> tuple[int, dt.datetime | None]:
        """How many records wait to land, and since when the oldest has waited."""
        with self._pending.lock:
            entries = self._pending_entries()
            return len(entries), min((e.staged_at for e in entries.values()), default=None)

    def holding_pending(self) -> threading.RLock:
        """The lock landing takes: held across a read and what is decided from it (a pull's staging
        and the state it saves), no landing comes in between."""
        return self._pending.lock

    def forget_pending(self) -> None:
        """Read the staged rows again at next use: another writer may have held the lease since."""
        with self._pending.lock:
            self._pending.entries.clear()
            self._pending.loaded = False

    # --- reads ---------------------------------------------------------------------------------

    def _overlaid(self, object_type: str, rows: list[dict[str, Any]],
                  reread: Callable[[], list[dict[str, Any]]]) -> list[dict[str, Any]]:
        """The table rows of `keys` with pending values laid over them. A row some writer changed
        since its values were staged lands everything pending first, and all are read again
        (`reread`). Call with `holding_pending()` held since before the rows were read."""
        entries = self._pending_entries()
        if not entries:
            return rows
        key_column = KEY_COLUMN[object_type]
        out = []
        for row in rows:
            key = int(row[key_column])
            entry = entries.get((object_type, key))
            if entry is None:
                out.append(row)
            elif _as_staged(entry, row):
                out.append({**row, **entry.fields, "row_hash": STAGED_HASH})
            elif self.read_only:
                out.append(row)  # a dry run lands nothing: it sees the table
            else:
                self.fold_pending(force=True)
                return reread()
        return out

    # --- landing -------------------------------------------------------------------------------

    def fold_pending(self, *, force: bool = False) -> int:
        """Land staged rows in contacts/businesses: all of them when forced, else when the oldest has
        waited `pending_fold_minutes`. Returns the records landed."""
        if self.read_only:
            return 0
        with self._pending.lock:
            entries = self._pending_entries()
            if not entries:
                return 0
            oldest = min(e.staged_at for e in entries.values())
            waited = dt.datetime.now(dt.UTC) - oldest
            if not force and waited < dt.timedelta(minutes=self.pending_fold_minutes):
                return 0
            kept_theirs = 0
            for object_type in ("company", "person"):
                of_type = sorted(((k, e) for (t, k), e in entries.items() if t == object_type), key=lambda item: item[0])
                # A backlog lands in parts: each MERGE carries its rows as query parameters (BigQuery
                # limits a request to 10 MB), at the price of one whole-table MERGE per part.
                for start in range(0, len(of_type), self.landing_records):
                    kept_theirs += self._land(object_type, dict(of_type[start:start + self.landing_records]))
            batches = sorted({b for e in entries.values() for b in e.batches})
            # Only after everything landed: a kill before this lands the same entries again, harmlessly.
            self._run("DELETE FROM {crm_sync_pending} WHERE batch_id IN {keys_batches}",
                      (KeySet("batches", STRING, batches),))
            landed = len(entries)
            entries.clear()
        log.info("landed %d pulled rows (staged up to %.0f s ago)%s", landed, waited.total_seconds(),
                 f"; {kept_theirs} kept a warehouse edit made meanwhile" if kept_theirs else "")
        return landed

    def _land(self, object_type: str, entries: Mapping[int, _Entry]) -> int:
        """Write what still applies of each entry; record the landed hash where nothing was kept back.
        Returns how many records kept a warehouse value changed after their merge read it."""
        key_column = KEY_COLUMN[object_type]
        # The values Twenty edits, without the JSON (most of a row's bytes: BigQuery bills the columns
        # read); a row whose staged fields include a JSON column is read whole.
        narrow = set(q.NARROW_VIEW_COLUMNS[object_type])
        wide = [k for k, e in entries.items() if not set(e.fields) <= narrow]
        current = {int(r[key_column]): r for r in self._table_rows(object_type, entries.keys() - set(wide),
                                                                   narrow=True)}
        current.update((int(r[key_column]), r) for r in self._table_rows(object_type, wide))
        writes, clean, to_check, unsure, kept = [], [], [], [], 0
        kept_values: list[KeptValue] = []
        for key, entry in entries.items():
            row = current.get(key)
            if row is None and entry.expected is not None:
                kept += 1  # removed outright by another writer since: not revived (the audit reports it)
                continue
            write, kept_back = _still_applies(entry, row)
            if write:
                writes.append({key_column: key, **write})
            if kept_back:
                kept += 1
                unsure.append(key)
                assert row is not None  # nothing is kept back from a row that is not there
                kept_values += [KeptValue(object_type, key, None, c, entry.fields[c], row.get(c),
                                          row.get("updated_at")) for c in sorted(kept_back)]
            elif entry.verify:
                to_check.append(key)
            elif _unmoved(entry, row):
                clean.append(key)
            else:
                unsure.append(key)
        self._upsert_groups(object_type, writes)
        states = self._record_landed(object_type, clean, to_check, unsure)
        if kept_values and self._pending.on_kept is not None:
            # The record history said Twenty's value was applied when it was staged.
            # Appended by this handle: landing may run on another thread than the run's own.
            self.append_history(self._pending.on_kept([
                dataclasses.replace(k, crm_id=states.get(str(k.key), {}).get("crm_id")) for k in kept_values]))
        return kept

    def _record_landed(self, object_type: str, clean: list[int], to_check: list[int], unsure: list[int]
                       ) -> dict[str, dict[str, Any]]:
        """The state of landed records: the landed row's hash where it holds what the merge decided
        (`clean`, or `to_check` and passing the landing check), else no hash and `pending`, so the
        next push compares the row with the merge base and sends what differs (another writer's
        edit, or a JSON edit the merge could not see). Only states still at `STAGED_HASH` change:
        any other was settled since by a newer merge or push."""
        key_column = KEY_COLUMN[object_type]
        if not (clean or to_check or unsure):
            return {}
        # Landing stamped the rows it wrote: read by that stamp, whole rows cost a block or so.
        landed = {int(r[key_column]): r for r in self._table_rows(object_type, [*clean, *to_check])}
        states = self.read_sync_state(object_type, [*clean, *to_check, *unsure])
        check = self._pending.landing_check
        checked = check(object_type, {k: landed[k] for k in to_check if k in landed}, states) \
            if check is not None and to_check else set()
        good = (set(clean) | checked) & landed.keys()
        still_staged = [k for k in (*clean, *to_check, *unsure)
                        if states.get(str(k), {}).get("warehouse_hash") == STAGED_HASH]
        for rows in (
            # Synced as of now: the landing's own stamp is no edit since (sync/pull.py `_json_unseen`).
            [{"object_type": object_type, "record_key": str(k), "warehouse_hash": landed[k]["row_hash"],
              "last_synced_at": dt.datetime.now(dt.UTC)}
             for k in still_staged if k in good],
            # (A record deleted on both sides keeps its status: nothing of it is sent.)
            [{"object_type": object_type, "record_key": str(k), "warehouse_hash": None, "status": "pending"}
             for k in still_staged if k not in good and states[str(k)].get("status") != "deleted"],
        ):
            if rows:
                self.upsert_sync_state(rows)
        return states


def _still_applies(entry: _Entry, row: Mapping[str, Any] | None) -> tuple[dict[str, Any], list[str]]:
    """The fields of `entry` to write over `row`, and those kept back: they hold a value another
    writer set after the merge read it (the newer edit wins, as any warehouse edit does)."""
    if row is None:
        return dict(entry.fields), []
    expected = entry.expected or {}
    write: dict[str, Any] = {}
    kept: list[str] = []
    for column, value in entry.fields.items():
        now = _text(row.get(column))
        if now == _text(value):
            continue  # already there (landed before a kill, or both sides agree)
        if column in expected and now == _text(expected[column]):
            write[column] = value
        else:
            kept.append(column)
    for pair in _PAIRS:
        if any(c in write for c in pair):
            if any(c in entry.fields and c not in write and _text(row.get(c)) != _text(entry.fields[c])
                   for c in pair):
                # Half a pair cannot be written: the warehouse keeps both.
                kept += [c for c in pair if c in write]
                for c in pair:
                    write.pop(c, None)
            else:
                write.update({c: write.get(c, entry.fields.get(c, row.get(c))) for c in pair})
    return write, kept


def _as_staged(entry: _Entry, row: Mapping[str, Any]) -> bool:
    """Whether a table row still reads as it did when its values were staged: by its hash where both
    have one, else by the values the merge saw that the row carries (a narrow row, or only a hash
    and stamp; an edit the columns read cannot show is checked again when the values land)."""
    if entry.expected_hash is not None and "row_hash" in row:
        return bool(row["row_hash"] == entry.expected_hash)
    return _reads_as_seen(entry, row)


def _unmoved(entry: _Entry, row: Mapping[str, Any] | None) -> bool:
    """Whether the table row reads as the first merge saw it: nothing but this landing changed it."""
    if row is None:
        return entry.expected is None
    return _reads_as_seen(entry, row)


def _reads_as_seen(entry: _Entry, row: Mapping[str, Any]) -> bool:
    """Whether the values of `row` read as the first merge saw them (those the row carries)."""
    if entry.seen is None:
        return False
    return all(_text(row[c]) == _text(v) for c, v in entry.seen.items() if c in row)


def _decoded(entry: _Entry) -> _Entry:
    """The entry as it reads back from the table (timestamps as text), so a fresh process and this
    one compare the same values."""
    body = json.loads(_text({"fields": entry.fields, "expected": entry.expected, "seen": entry.seen}))
    return _Entry(body["fields"], body["expected"], entry.expected_hash, entry.staged_at, set(entry.batches),
                  body["seen"], entry.verify)


def _by_field_set(rows: Iterable[Mapping[str, Any]]) -> list[list[dict[str, Any]]]:
    """Rows grouped by the fields they carry: an upsert writes one set of fields per statement."""
    groups: dict[frozenset[str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(frozenset(row), []).append(dict(row))
    return list(groups.values())

