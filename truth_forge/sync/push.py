"""Warehouse -> Twenty: send the rows whose hash changed, in batches, and remember what landed.

Change detection happens in the warehouse (`changed_rows`), so only changed rows reach Python.
Rows Twenty already has are updated through a batch upsert keyed on their Twenty id, carrying only
the fields that changed since the merge base; before they are written, a read by id list per 200 of
them (a few requests: the client keeps URLs short) brings the records as Twenty has them now, and
edits made there meanwhile are merged first (`pull.apply_records`). A record that read lacks is
asked for by id; only a 404 there settles it as destroyed. New rows are created whole (an upsert would also match on a unique email and
take over someone else's record); `PushStats.upserted` counts both.

Requests overlap: read-backs, update writes, creates and deletes share the client's request pool
(several on the wire, within the one token bucket), and a write only leaves after its own rows' read
is merged. What every write request stored is saved in the sync state on this thread, in the order
the writes were cut: the answers handed over in one go are saved together, before the stream waits
for another answer or goes back to the push (one INSERT for several requests), so a run killed
anywhere loses at most the answers of the requests on the wire and of the few handed over since
the last save, and the next run recovers those by rule: an update by id is simply sent again, and a
refused create is always checked for "is this record already ours" (our key, live or soft-deleted)
before it is reported. Record-level refusals never stop a run; only what no record can get past does (auth,
missing fields, an outage that outlasted the retries several writes in a row).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from truth_forge.core.memory import release_free_memory
from truth_forge.core.secrets import redact
from truth_forge.sync import changelog, mapping, own_writes, views
from truth_forge.sync.context import SyncContext
from truth_forge.sync.merge import changed_since
from truth_forge.sync.objects import PERSON, SyncedObject, now_utc, parse_timestamp, write_by_field_set
from truth_forge.sync.pull import (
    PullStats,
    apply_deletions,
    apply_records,
    broken_tie_message,
    read_again,
    tie_broken,
)
from truth_forge.sync.read_ahead import ReadAhead
from truth_forge.sync.reconcile import settle_destroyed
from truth_forge.sync.store import SyncStore
from truth_forge.twenty.batch_stream import RecordFailure
from truth_forge.twenty.errors import (
    NextStep,
    TwentyError,
    TwentyNotFound,
    TwentyRecordRejected,
    TwentyRequestTooLong,
)
from truth_forge.twenty.pool import settle
from truth_forge.twenty.records import MAX_PAGE_SIZE
from truth_forge.warehouse.detection import ChangeScan

log = logging.getLogger(__name__)

READ_BATCH = 600  # rows fetched from the warehouse at a time: ten write batches of 60, three of 200
READ_BACK = MAX_PAGE_SIZE  # rows whose records are read back together before their update (one batch)
# Records a read-back answer lacked, checked one by one (GET by id) per read-back: past this, the
# rest wait for the next run (a lossy proxy must not turn every update into a GET).
CONFIRM_BY_ID = 20
# Answers' states kept at most before they are saved, pause or not.
SAVE_ROWS = 1_000
RECOVER_AT = 200  # refused creates held before their holders are looked up (and at the end of the push)
# Write requests in a row that failed after every retry: past this, Twenty is taken to be down and
# the rest of the push waits for the next run. Fewer failures are recorded and the push goes on.
CONSECUTIVE_FAILURE_BUDGET = 3


class PushAborted(Exception):
    """Twenty stopped answering usefully (auth, missing fields, outage): the rest waits for the next run."""

    def __init__(self, cause: TwentyError) -> None:
        self.cause = cause
        self.stats: PushStats | None = None  # what the push did before it stopped
        super().__init__(str(cause))


@dataclass
class PushStats:
    upserted: int = 0
    deleted: int = 0
    failed: int = 0
    # Records edited in Twenty while this run was pushing, merged before their write went out.
    caught_up: int = 0
    # How the changed rows were found (warehouse/detection.py): mode, candidates, audit findings;
    # the runner reports it beside these counts.
    detection: dict[str, Any] = field(default_factory=dict, repr=False)

    def as_dict(self) -> dict[str, int]:
        return {k: v for k, v in self.__dict__.items() if k != "detection"}


@dataclass
class _ReadBack:
    """Records as Twenty has them now, by id; of the ids its list answer lacked, those a GET by id
    found gone (404: positive evidence) and those left unchecked (no evidence either way)."""

    found: dict[str, dict[str, Any]]
    gone: set[str] = field(default_factory=set)
    unchecked: set[str] = field(default_factory=set)


@dataclass
class _Item:
    """One row on its way to Twenty: its body, and whether it still waits for its company."""

    row: Mapping[str, Any]
    body: dict[str, Any]
    waiting: bool
    left_out: list[str]
    base: dict[str, Any] | None = None  # the merge base once this body has landed
    # What the body changes, for the record history: (field, base value, warehouse value); None: whole.
    changes: list[changelog.Change] | None = None
    ahead: _Mapped | None = None  # the row as the read-ahead thread mapped it, until its view is taken


def push_object(ctx: SyncContext, obj: SyncedObject) -> PushStats:
    """Push every changed row of one object type; raises PushAborted when Twenty cannot go on."""
    try:  # garbage collections are rarer meanwhile: run_sync makes them so for the whole run
        return _push_object(ctx, obj)
    finally:
        release_free_memory()  # what the push freed, back before the run's closing fold fills DuckDB's pool


def _push_object(ctx: SyncContext, obj: SyncedObject) -> PushStats:
    # Detection reads on a handle of its own, a batch ahead of the push (read_ahead.py); the push
    # records what lands on this thread's handle, as before.
    reader = ctx.warehouse.for_another_thread()
    if reader is not ctx.warehouse:
        reader.before_write = ctx.warehouse.before_write  # its folds and watermark obey the writer lease too
    try:
        scan = reader.detect_changes(obj.object_type, batch_size=READ_BATCH, policy=ctx.detection)
        # The read-ahead thread also maps each batch's rows (bodies and merge views: pure work on the
        # row), so the push's own thread, which the requests wait for, does not.
        ahead = ReadAhead(scan, prepare=lambda rows: _map_ahead(ctx, obj, rows))
        try:
            stats = _push_batches(ctx, obj, _reported(ctx, obj, scan, ahead))
        finally:
            ahead.close()  # first: the read in progress ends before its stream is closed
            # A push that stops early must not leave the warehouse's result stream open (DuckDB cannot
            # checkpoint with a read still running).
            scan.close()
        # Every row detection handed out is settled (landed, or failed and on the retry list): the
        # next run may look from this detection's start on. A push that stopped early never gets here.
        scan.commit()
    finally:
        if reader is not ctx.warehouse:
            reader.close()
    stats.detection = scan.report
    return stats


def _reported(ctx: SyncContext, obj: SyncedObject, scan: ChangeScan, batches: Iterable[_Batch]) -> Iterator[_Batch]:
    """The scan's batches (as read ahead), with its progress told: once incremental detection has
    its candidates the push's total is known (an audit's is not, until it ends), and candidates that
    turn out unchanged count as looked at."""
    if scan.mode == "incremental":
        ctx.emit("changes_found", phase="push", object_type=obj.object_type, total=scan.report.get("candidates", 0))
    told = 0
    for rows in batches:
        unchanged = scan.report.get("unchanged", 0)
        if unchanged > told:
            ctx.emit("records_unchanged", phase="push", object_type=obj.object_type, count=unchanged - told)
            told = unchanged
        yield rows
    unchanged = scan.report.get("unchanged", 0)
    if unchanged > told:
        ctx.emit("records_unchanged", phase="push", object_type=obj.object_type, count=unchanged - told)


def push_keys(ctx: SyncContext, obj: SyncedObject, keys: Sequence[int]) -> PushStats:
    """Push these rows now, if they changed since they were last synced (one contact, say)."""
    states = ctx.warehouse.read_sync_state(obj.object_type, keys)
    rows = []
    for row in ctx.warehouse.get_rows(obj.object_type, keys):
        state = states.get(str(row[obj.key_column]), {})
        if state and row["row_hash"] == state.get("warehouse_hash") and state.get("status") not in ("failed", "pending"):
            continue  # nothing new since the last sync: nothing to send
        if not state and row.get("deleted_at") is not None:
            continue  # never in Twenty, nothing to delete there
        rows.append({**row, "crm_id": state.get("crm_id")})
    return _push_batches(ctx, obj, [_Batch(rows)])


@dataclass
class _Mapped:
    """A row's body and merge view as `_Push._item` and `_landed_view` make them (the body before
    its company link and Twenty id), or the error either raised, to be raised where it would have been."""

    body: dict[str, Any] | None
    left_out: list[str]
    view: dict[str, Any] | None = None
    error: BaseException | None = None


@dataclass
class _Batch:
    """Rows detection handed out, and what was mapped of them ahead (by id, with the row itself,
    which keeps that id from being reused while the entry lives)."""

    rows: list[dict[str, Any]]
    mapped: dict[int, tuple[Mapping[str, Any], _Mapped]] = field(default_factory=dict)


def _map_ahead(ctx: SyncContext, obj: SyncedObject, rows: list[dict[str, Any]]) -> _Batch:
    """On the read-ahead thread: the rows the push will map whole (not deleted, not duplicated)."""
    batch = _Batch(rows)
    for row in rows:
        if row.get("deleted_at") is None and (row.get("copies") or 1) <= 1:
            batch.mapped[id(row)] = (row, _mapped(ctx, obj, row))
    return batch


def _mapped(ctx: SyncContext, obj: SyncedObject, row: Mapping[str, Any]) -> _Mapped:
    left_out: list[str] = []
    try:
        body = _body(ctx, obj, row, left_out)
    except Exception as exc:  # raised again by _item, on the push's thread, as if it had mapped the row
        return _Mapped(None, left_out, error=exc)
    try:
        return _Mapped(body, left_out, view=_view_of(ctx, obj, row, body))
    except Exception as exc:  # raised again by _landed_view
        return _Mapped(body, left_out, error=exc)


def _body(ctx: SyncContext, obj: SyncedObject, row: Mapping[str, Any], left_out: list[str]) -> dict[str, Any]:
    """A row's whole body, before the push adds its company link and Twenty id."""
    if obj is PERSON:
        return mapping.contact_to_person(row, ctx.schema, default_region=ctx.default_region, left_out=left_out)
    return mapping.business_to_company(row, ctx.schema, left_out=left_out)


def _view_of(ctx: SyncContext, obj: SyncedObject, row: Mapping[str, Any], body: Mapping[str, Any]) -> dict[str, Any]:
    """What both sides hold once this body landed (a company link still waiting left in: the push
    takes it out). A view reads no key the push adds to a body (its company link, its Twenty id)."""
    if ctx.default_region is None:
        return views.body_view(obj, ctx.schema, row, body)  # the row is mapped once
    # Views read phones without a region (as the pull's and the plan's do): mapped again so they agree.
    return views.warehouse_view(obj, ctx.schema, row)


def _push_batches(ctx: SyncContext, obj: SyncedObject, batches: Iterable[_Batch]) -> PushStats:
    push = _Push(ctx, obj)
    try:
        # Leaving on an exception stops both streams; what their requests on the wire stored is still saved.
        try:
            with push.updates.stream, push.creates.stream:
                for batch in batches:
                    push.mapped = batch.mapped
                    rows = push.refuse_duplicates(batch.rows)
                    push.delete([r for r in rows if r.get("deleted_at") is not None])
                    push.upsert([r for r in rows if r.get("deleted_at") is None])
                push.updates.stream.finish()
                push.creates.stream.finish()
        finally:
            push.save_landed()  # what the answers on the wire stored, when the push stopped early
        push.recover()
        push.went_through()  # no outage stopped it: failed batches' rows get their errors
        changelog.flush(ctx)
    except PushAborted as stop:
        stop.stats = push.stats
        raise
    return push.stats


class _Push:
    """One object's push: who it talks to, what it counted, and the bookkeeping after every write."""

    def __init__(self, ctx: SyncContext, obj: SyncedObject) -> None:
        self.ctx, self.obj = ctx, obj
        self.warehouse, self.client, self.schema, self.reporter = ctx.warehouse, ctx.client, ctx.schema, ctx.reporter
        self.stats = PushStats()
        self.push_only = frozenset(views.push_only_columns(obj, self.schema))  # asked for per record landed
        self.failures_in_a_row = 0
        # Whole-batch failures whose error rows wait for a write that lands (see _outage).
        self.waiting_errors: list[tuple[TwentyError, Sequence[Mapping[str, Any]], str]] = []
        self.links: dict[str, Any] = {}  # business_id -> Twenty id, for every row of this push so far
        self.company_keys: dict[str, int] = {}  # the other way round (Twenty id -> business_id), to read answers
        # business_ids that contacts link to but the warehouse has no row for: those links wait, with an error.
        self.missing_businesses: set[str] = set()
        self.mapped: dict[int, tuple[Mapping[str, Any], _Mapped]] = {}  # this batch's rows mapped ahead
        # States of answers handed over and not saved yet: saved together at the stream's next pause
        # (`on_pause`: before it waits for an answer or returns), or sooner past SAVE_ROWS.
        self.landed: list[dict[str, Any]] = []
        # One stream each for the whole push, so batches flow across the warehouse's read batches.
        self.updates = _Lane(self, upsert=True)
        self.creates = _Lane(self, upsert=False)

    # -- bookkeeping --------------------------------------------------------------------------

    def _save(self, states: list[dict[str, Any]]) -> None:
        """Write what one request changed (one statement per set of fields), with its error rows;
        the answers handed over before it first, so the journal keeps the order things happened in."""
        self.save_landed()
        self._store(states)

    def save_landed(self) -> None:
        """Save the states of the answers handed over since the last save (`_Lane.on_write`)."""
        if self.landed:
            states, self.landed = self.landed, []
            self._store(states)

    def _store(self, states: list[dict[str, Any]]) -> None:
        write_by_field_set(self.warehouse.upsert_sync_state, states)
        self.reporter.flush(self.warehouse)
        landed = sum(1 for s in states if s.get("status") in ("synced", "pending", "deleted"))
        if landed:
            self.ctx.emit("batch_written", phase="push", object_type=self.obj.object_type, count=landed)
        if len(states) > landed:
            self.ctx.emit("records_failed", phase="push", object_type=self.obj.object_type, count=len(states) - landed)

    def _state(self, row: Mapping[str, Any], **values: Any) -> dict[str, Any]:
        return {"object_type": self.obj.object_type, "record_key": str(row[self.obj.key_column]), **values}

    def _failed(self, row: Mapping[str, Any], error: BaseException | str, operation: str = "push") -> dict[str, Any]:
        entry = self.reporter.record(object_type=self.obj.object_type, operation=operation, error=error,
                                     record_key=row[self.obj.key_column], crm_id=row.get("crm_id"))
        self.stats.failed += 1
        # warehouse_hash stays as it was, so the row is still "changed" and is retried next run.
        return self._state(row, status="failed", last_error=entry["error_message"][:1000], last_synced_at=now_utc())

    def _landed(self, item: _Item, record: Mapping[str, Any], at: dt.datetime) -> dict[str, Any]:
        """The state of a record one answer stored (`at`: when that answer was taken in)."""
        self.stats.upserted += 1
        note = "; ".join(item.left_out) or None
        if note:
            # Synced without a value Twenty would refuse: the error stays open until the row changes.
            self.reporter.record(object_type=self.obj.object_type, operation="push", record_key=item.row[self.obj.key_column],
                                 crm_id=record["id"], error=f"synced without a value: {note}")
        return self._state(
            item.row, crm_id=record["id"], crm_hash=self._crm_hash(item, record),
            crm_updated_at=parse_timestamp(record.get("updatedAt")), last_synced_at=at,
            # A row still waiting for its company keeps no hash, so the next run sends it again.
            warehouse_hash=None if item.waiting else item.row["row_hash"],
            status="pending" if item.waiting else "synced", attempts=0, last_error=note, base=item.base,
        )

    def _crm_hash(self, item: _Item, record: Mapping[str, Any]) -> str | None:
        """The hash of what Twenty answered, when its two-way fields are what we think both sides now
        hold. Otherwise someone edited a field we did not send in the instant before our write: no
        hash, so the next pull takes the record as changed and merges that edit instead of losing it."""
        editable = self.obj.editable_from_crm(record, self.schema)  # read once for the view and the hash
        if item.base is None or views.agrees(self.obj, record, editable, item.base, self.company_keys, self.push_only):
            return self.obj.crm_hash(record, self.schema, editable)
        return None

    def _outage(self, error: TwentyError, rows: Sequence[Mapping[str, Any]], operation: str) -> None:
        """A write that failed as a whole: its rows are saved as failed (retried next run); abort when
        Twenty looks down or misconfigured. Their error rows wait: writes that go on failing are one
        outage, which the run records once (PushAborted), not one error and warning a record."""
        if error.next_step is NextStep.FIX_CONFIG:
            raise PushAborted(error)
        said = redact(str(error), *self.reporter.secrets)[:1000]
        self._save([self._state(row, status="failed", last_error=said, last_synced_at=now_utc()) for row in rows])
        self.stats.failed += len(rows)
        self.waiting_errors.append((error, rows, operation))
        self.failures_in_a_row += 1
        if self.failures_in_a_row >= CONSECUTIVE_FAILURE_BUDGET:
            raise PushAborted(error)

    def went_through(self) -> None:
        """A write landed (or the push ended without an outage): the rows of the whole-batch failures
        before it get their own errors, as failures of their batches rather than of Twenty."""
        self.failures_in_a_row = 0
        waiting, self.waiting_errors = self.waiting_errors, []
        for error, rows, operation in waiting:
            for row in rows:
                self.reporter.record(object_type=self.obj.object_type, operation=operation, error=error,
                                     record_key=row[self.obj.key_column], crm_id=row.get("crm_id"))
        if waiting:
            self.reporter.flush(self.warehouse)

    # -- broken keys --------------------------------------------------------------------------

    def refuse_duplicates(self, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """Rows whose key the warehouse holds more than once (the tables have no key constraint: an
        ETL reused an id) are not sent: either copy would overwrite the other in Twenty on every run.
        One open error per key names the copies; it closes once a single row is left and syncs."""
        keep, refused = [], []
        copies: dict[Any, list[Mapping[str, Any]]] = {}
        for row in rows:
            if (row.get("copies") or 1) > 1:
                copies.setdefault(row[self.obj.key_column], []).append(row)
            else:
                keep.append(row)
        for key, found in copies.items():
            table = "contacts" if self.obj is PERSON else "businesses"
            names = ", ".join(repr(r.get("canonical_name") or r.get("business_name")) for r in found)
            refused.append(self._failed(found[0], (
                f"the warehouse table {table} holds {found[0]['copies']} rows with {self.obj.key_column} {key} "
                f"({names}); none is synced until one is left: remove the extra rows or give them keys of their own")))
        if refused:
            self._save(refused)
        return keep

    # -- deletions ----------------------------------------------------------------------------

    def delete(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Soft-delete in Twenty, by id, a batch per request; records already gone count as done."""
        in_twenty = [r for r in rows if r.get("crm_id")]
        done = [self._gone(r) for r in rows if not r.get("crm_id")]
        if done:
            self._save(done)
        size = self.client.records.batch_size
        chunks = [in_twenty[start : start + size] for start in range(0, len(in_twenty), size)]
        sent = [self.client.pool.submit(self.client.records.delete_many, self.obj.plural,
                                        [r["crm_id"] for r in chunk], soft=True) for chunk in chunks]
        try:
            for chunk, answer in zip(chunks, sent):
                try:
                    answer.result()
                except TwentyError as exc:
                    self._outage(exc, chunk, "delete")
                    continue
                self.went_through()
                self._save([self._gone(r) for r in chunk])
                changelog.append(self.ctx, changelog.pushed_deletions(self.ctx, self.obj, chunk))
        except BaseException:
            settle(sent)  # a delete sent again next run is harmless; one left on the wire is not
            raise

    def _gone(self, row: Mapping[str, Any]) -> dict[str, Any]:
        self.stats.deleted += 1
        return self._state(row, status="deleted", warehouse_hash=row["row_hash"], last_synced_at=now_utc(),
                           last_error=None)

    # -- creates and updates ------------------------------------------------------------------

    def upsert(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Reads back the rows Twenty has (a page per request, all sent at once), starts the creates,
        then merges each read in turn and streams its updates; writes go out as batches fill."""
        if not rows:
            return
        if self.obj is PERSON:
            found = _company_links(self.warehouse, rows)
            not_yet = [int(key) for key, link in found.items() if link is _NOT_YET]
            if not_yet:
                present = self.warehouse.row_hashes("company", not_yet)
                self.missing_businesses.update(str(key) for key in not_yet if key not in present)
            self.links.update(found)
            self.company_keys.update({crm_id: int(key) for key, crm_id in found.items() if isinstance(crm_id, str)})
        known = [r for r in rows if r.get("crm_id")]
        groups = [known[start : start + READ_BACK] for start in range(0, len(known), READ_BACK)]
        reads = [self.client.pool.submit(self._read_back, group) for group in groups]
        try:
            self.creates.send(self._items([r for r in rows if not r.get("crm_id")]))
            for group, read in zip(groups, reads):
                self.updates.send(self._update(group, read))
        except BaseException:
            settle(reads)
            raise
        if len(self.creates.refused) >= RECOVER_AT:
            self.recover()

    def recover(self) -> None:
        """Creates refused for a taken unique value so far: their holders are looked up now (every
        create sent before them is answered first, so a holder we created is found)."""
        if self.creates.refused:
            self.creates.stream.finish()
            refused, self.creates.refused = self.creates.refused, []
            self._recover(refused)

    def _items(self, rows: Sequence[Mapping[str, Any]]) -> list[_Item]:
        """Whole bodies; a row Twenty could not take (a NUL, an unreadable phone...) fails alone."""
        items, refused = [], []
        for row in rows:
            try:
                item = self._item(row)
            except ValueError as exc:
                refused.append(self._failed(row, exc))
                continue
            item.base = self._landed_view(item)
            items.append(item)
        if refused:
            self._save(refused)
        return items

    def _landed_view(self, item: _Item) -> dict[str, Any]:
        """What both sides hold once this item's body landed (a link still waiting is not among it)."""
        ahead, item.ahead = item.ahead, None
        if ahead is None:
            view = _view_of(self.ctx, self.obj, item.row, item.body)
        elif ahead.view is None:
            raise ahead.error  # type: ignore[misc]  # the view's own error, as if raised here
        else:
            view = ahead.view
        if item.waiting:
            view.pop(views.COMPANY_LINK, None)
        return view

    def _update(self, rows: Sequence[Mapping[str, Any]], read: Future[_ReadBack]) -> list[_Item]:
        """Rows Twenty has: catch up with edits made there meanwhile (`read`: these records as Twenty
        has them now), then return what changed, to be sent."""
        rows, states = self._catch_up(rows, read)
        items, quiet = [], []
        for item in self._items(rows):
            state = states.get(str(item.row[self.obj.key_column]), {})
            base = views.comparable_base(self.obj, self.schema, state.get("base"))
            if base is None or state.get("status") == "deleted":
                # Never merged before, or back from a deletion (an upsert by id revives it): whole.
                items.append(item)
                continue
            ours = item.base or {}
            changed = changed_since(base, ours)
            if not changed:
                quiet.append(self._state(item.row, warehouse_hash=None if item.waiting else item.row["row_hash"],
                                         status="pending" if item.waiting else "synced", last_synced_at=now_utc(),
                                         last_error=None))
                continue
            send = views.body_keys(self.obj, self.schema, changed) | {"id"}
            item.body = {k: v for k, v in item.body.items() if k in send}
            item.base = {**base, **changed}
            item.changes = [(name, base.get(name), value) for name, value in changed.items()]
            items.append(item)
        if quiet:
            self._save(quiet)
        return items

    def _read_back(self, rows: Sequence[Mapping[str, Any]]) -> _ReadBack:
        """On a worker: these records as Twenty has them now, soft-deleted ones too (`id[in]` lists,
        as many requests as keep the URL short). An id the answer lacks is asked for by id: being
        missing from a list is no proof (a proxy or a partial answer can lose records); a 404 is."""
        ids = [r["crm_id"] for r in rows]
        answer = _ReadBack({r["id"]: r for r in self.client.records.find_in(self.obj.plural, "id", ids,
                                                                             with_deleted=True)})
        for n, crm_id in enumerate(i for i in ids if i not in answer.found):
            if n >= CONFIRM_BY_ID:
                answer.unchecked.add(crm_id)
                continue
            try:
                answer.found[crm_id] = self.client.records.get(self.obj.plural, crm_id)
            except TwentyNotFound:
                answer.gone.add(crm_id)
            except TwentyError as exc:
                if exc.next_step is not NextStep.SKIP_RECORD:
                    raise
                answer.unchecked.add(crm_id)
        return answer

    def _catch_up(self, rows: Sequence[Mapping[str, Any]], read: Future[_ReadBack],
                  ) -> tuple[list[Mapping[str, Any]], dict[str, dict[str, Any]]]:
        """Merge what changed in Twenty since we last saw these records (`read`: as Twenty has them
        now), so a write never overwrites an edit made while this run was going. Returns the rows as
        they are after that, without the ones now deleted, and their sync state."""
        by_id = {r["crm_id"]: r for r in rows}
        try:
            answer = read.result()
        except TwentyError as exc:
            self._outage(exc, rows, "push")
            return [], {}
        found = answer.found
        if answer.unchecked:
            # Neither seen nor shown gone: not written over blind, and not deleted either; the row
            # stays changed, so the next run reads it again.
            self._save([self._failed(row, "Twenty's answer to a read of these ids (id[in]) lacked this record, "
                                          "and no more were checked one by one this run: not written, and not "
                                          "taken as deleted; read again next run")
                        for row in rows if row["crm_id"] in answer.unchecked])
            rows = [r for r in rows if r["crm_id"] not in answer.unchecked]
        states = self.warehouse.read_sync_state(self.obj.object_type, [r[self.obj.key_column] for r in rows])
        broken = [by_id[r["id"]] for r in found.values()
                  if tie_broken(self.obj, r, by_id[r["id"]][self.obj.key_column])]
        if broken:
            # Its key was retyped in Twenty: not written over until a person sets the key back.
            self._save([self._failed(row, broken_tie_message(self.obj, row["crm_id"], row[self.obj.key_column],
                                                             found[row["crm_id"]].get(self.obj.key_field)), "key")
                        for row in broken])
            held = {row["crm_id"] for row in broken}
            rows = [r for r in rows if r["crm_id"] not in held]
            found = {crm_id: r for crm_id, r in found.items() if crm_id not in held}
        moved = [r for r in found.values() if not r.get("deletedAt")
                 and states.get(str(by_id[r["id"]][self.obj.key_column]), {}).get("crm_hash")
                 != self.obj.crm_hash(r, self.schema)]
        # Deleted in Twenty since the pull; not ones already settled (deleted here, or to be revived
        # whole, which is what a state without a base says).
        deleted = [r for r in found.values() if r.get("deletedAt")
                   and states.get(str(by_id[r["id"]][self.obj.key_column]), {}).get("status") != "deleted"
                   and states.get(str(by_id[r["id"]][self.obj.key_column]), {}).get("base") is not None]
        destroyed = [r for r in rows if r["crm_id"] in answer.gone]  # a 404 by id, nothing less
        if not (moved or deleted or destroyed):
            return list(rows), states
        caught = PullStats()
        if moved:
            apply_records(self.ctx, self.obj, moved, caught)
        if deleted:
            apply_deletions(self.ctx, self.obj, deleted, caught)
        if destroyed:
            # The same rule as `sync --full`: deleted here too, or created again when the warehouse wins.
            settle_destroyed(self.ctx, self.obj, [(str(r[self.obj.key_column]), r["crm_id"]) for r in destroyed])
        self.stats.caught_up += len(moved) + len(deleted) + len(destroyed)
        self.reporter.flush(self.warehouse)
        keys = [r[self.obj.key_column] for r in rows]
        fresh = {r[self.obj.key_column]: r for r in self.warehouse.get_rows(self.obj.object_type, keys)}
        states = self.warehouse.read_sync_state(self.obj.object_type, keys)
        out: list[Mapping[str, Any]] = []
        for key in keys:
            row, state = fresh.get(key), states.get(str(key), {})
            # A record to be created again has no Twenty id now: the next run's push creates it.
            if row is not None and row.get("deleted_at") is None and state.get("crm_id"):
                out.append({**row, "crm_id": state["crm_id"]})
        return out, states

    def _item(self, row: Mapping[str, Any]) -> _Item:
        ahead = self.mapped.pop(id(row), None)
        ready = ahead[1] if ahead is not None and ahead[0] is row else None  # used once: _item adds to it
        if ready is None:
            left_out: list[str] = []
            body = _body(self.ctx, self.obj, row, left_out)
        elif ready.body is None:
            raise ready.error  # type: ignore[misc]  # the mapping's own error, as if raised here
        else:
            body, left_out = ready.body, ready.left_out
        waiting = False
        if self.obj is PERSON:
            link = None if row.get("business_id") is None else self.links.get(str(row["business_id"]), _NOT_YET)
            if link is _NOT_YET:
                waiting = True  # sent without a link now; linked on a later run, once the company is there
                if str(row["business_id"]) in self.missing_businesses:
                    # Nothing will ever link it unless someone adds that business: say so (an open error
                    # until the contact is synced with its link, or with another business).
                    left_out.append(f"company link: business {row['business_id']} is not in the warehouse's "
                                    f"businesses; the contact waits, unlinked, until that business is added")
            else:
                body["companyId"] = link
        if row.get("crm_id"):
            body["id"] = row["crm_id"]
        return _Item(row, body, waiting, left_out, ahead=ready)

    def _write(self, items: Sequence[_Item], *, upsert: bool) -> list[tuple[_Item, TwentyRecordRejected]]:
        """These items now, on a stream of their own (the claims and retries of `_recover`).

        Returns the creates refused for a taken unique value, for `_recover`; every other refusal
        is recorded as that record's failure.
        """
        lane = _Lane(self, upsert=upsert)
        try:
            with lane.stream:
                lane.send(items)
                lane.stream.finish()
        finally:
            self.save_landed()  # what the answers on the wire stored, when the stream stopped early
        return lane.refused

    def _recover(self, refused: Sequence[tuple[_Item, TwentyRecordRejected]], *, last_try: bool = False) -> None:
        """Creates refused for a taken unique value. A record holding our key is ours (a run died
        before saving, or someone typed the key in Twenty; soft-deleted ones included, and claiming
        it by id revives it); a value held by another record fails this row, naming the holder; a
        refusal with no holder in sight (two new rows sharing an email) is created once more, record
        by record where refused again, and what is still refused comes back here for its holder."""
        holders = self._holders([item for item, _ in refused])
        # Who our state ties each key holder to: a record tied to another key is never claimed by this one.
        ties = self.warehouse.read_sync_state_by_crm_id(self.obj.object_type,
                                                        [r["id"] for r in holders.by_key.values()]
                                                        ) if holders.by_key else {}
        claim: list[_Item] = []
        again: list[_Item] = []
        failed: list[dict[str, Any]] = []
        for item, error in refused:
            key = str(item.row[self.obj.key_column])
            mine = holders.by_key.get(key)
            other = holders.by_unique.get(_unique_value(self.obj, item.body) or "")
            tied = ties.get(mine["id"]) if mine is not None else None
            if mine is not None and tied is not None and str(tied["record_key"]) != key:
                failed.append(self._failed(item.row, _tied_elsewhere_message(self.obj, key, mine, tied["record_key"]),
                                           "key"))
            elif mine is not None:
                claim.append(_Item(item.row, {**item.body, "id": mine["id"]}, item.waiting, item.left_out, item.base))
            elif other is not None:
                failed.append(self._failed(item.row, _taken_message(self.obj, item.body, other)))
            elif last_try:
                failed.append(self._failed(item.row, error))
            else:
                again.append(item)
        if failed:
            self._save(failed)
        size = self.client.records.batch_size
        for start in range(0, len(claim), size):
            self._write(claim[start : start + size], upsert=True)
        still_refused: list[tuple[_Item, TwentyRecordRejected]] = []
        for start in range(0, len(again), size):
            refused_again = self._write(again[start : start + size], upsert=False)
            for item, _error in refused_again if len(refused_again) > 1 else ():
                still_refused += self._write([item], upsert=False)
            if len(refused_again) == 1:
                still_refused += refused_again
        if still_refused:
            self._recover(still_refused, last_try=True)

    def _holders(self, items: Sequence[_Item]) -> _Holders:
        """Twenty records, live or soft-deleted, holding these items' keys, then (for the items whose
        key is not there) their unique values: a read per run of values that keeps the URL short."""
        holders = _Holders({}, {})
        self._look_up(holders, self.obj.key_field, [str(i.row[self.obj.key_column]) for i in items])
        unclaimed = [i for i in items if str(i.row[self.obj.key_column]) not in holders.by_key]
        # Twenty's `in` splits on every comma, quoted or not: such a value cannot be looked up.
        uniques = [v for v in (_unique_value(self.obj, i.body) for i in unclaimed) if v and "," not in v]
        self._look_up(holders, "emails.primaryEmail" if self.obj is PERSON else "domainName.primaryLinkUrl", uniques)
        return holders

    def _look_up(self, holders: _Holders, field: str, values: Sequence[str]) -> None:
        records = self.client.records
        # As many values a request as keep its URL within the client's limit; soft-deleted holders too.
        try:
            runs = records.in_runs(self.obj.plural, field, values, with_deleted=True)
        except TwentyRequestTooLong as exc:  # one value longer than a whole request may be
            log.warning("Could not look up which records hold %s values: %s", field, exc)
            return
        for run in runs:
            try:
                found = records.find_in(self.obj.plural, field, run, with_deleted=True)
            except TwentyError as exc:
                if exc.next_step is not NextStep.SKIP_RECORD:
                    raise PushAborted(exc) from exc
                log.warning("Could not look up which records hold %s values: %s", field, exc)
                continue
            for record in found:
                if record.get(self.obj.key_field) not in (None, ""):
                    holders.by_key.setdefault(str(record[self.obj.key_field]), record)
                value = _unique_value(self.obj, record)
                if value:
                    holders.by_unique.setdefault(value, record)


class _Lane:
    """A stream of batch writes (updates by Twenty id, or creates by our key) and its bookkeeping.

    The stream hands every answer over on the push's thread, in the order the batches were cut;
    `on_write` saves what one request stored before the next answer is looked at.
    """

    def __init__(self, push: _Push, *, upsert: bool) -> None:
        self.push, self.upsert = push, upsert
        self.items: dict[int, _Item] = {}  # sent and not yet answered, by stream index
        self.refused: list[tuple[_Item, TwentyRecordRejected]] = []  # creates refused for a taken value
        # Updates always carry the Twenty id; creates always carry our key.
        key = "id" if upsert else push.obj.key_field
        self.stream = push.client.records.stream(push.obj.plural, upsert=upsert, match_key=key,
                                                 on_write=self.on_write, on_failures=self.on_failures,
                                                 on_abort=self.on_abort, on_pause=push.save_landed)

    def send(self, items: Sequence[_Item]) -> None:
        first = self.stream.next_index  # registered first: add() may hand answers over at once
        self.items.update(zip(range(first, first + len(items)), items))
        self.stream.add([item.body for item in items])

    def on_write(self, landed: list[tuple[int, dict[str, Any]]]) -> None:
        """The push's on_write: what one request stored, kept for the sync state. Saved with the
        other answers handed over before the stream next waits or returns (`on_pause`): one INSERT
        for several requests, where each INSERT costs DuckDB milliseconds whatever its size."""
        push = self.push
        own_writes.observe(push.warehouse, push.client.transport.base_url, (record for _, record in landed))
        items = [(self.items.pop(i), record) for i, record in landed]
        at = now_utc()  # one time for the whole answer: the journal binds it once, not a copy per row
        states = [push._landed(item, record, at) for item, record in items]
        late = [s["crm_id"] for s in states if s.get("crm_hash") is None]
        if late:
            read_again(push.warehouse, push.obj, late)  # our stamp now hides that edit from the pull's filter
        push.landed += states
        if len(push.landed) >= SAVE_ROWS:
            push.save_landed()
        changelog.append(push.ctx, changelog.pushed(push.ctx, push.obj,
                                                    ((item.row, record, item.changes) for item, record in items)))
        push.went_through()

    def on_failures(self, failures: list[RecordFailure]) -> None:
        failed = []
        for failure in failures:
            item, error = self.items.pop(failure.index), failure.error
            if not self.upsert and isinstance(error, TwentyRecordRejected) and error.is_duplicate:
                self.refused.append((item, error))
            else:
                failed.append(self.push._failed(item.row, error))
        if failed:
            self.push._save(failed)

    def on_abort(self, error: TwentyError, first: int, not_stored: list[int]) -> bool:
        """A batch failed as a whole: its rows fail (retried next run); PushAborted when Twenty looks down."""
        self.push._outage(error, [self.items.pop(i).row for i in not_stored], "push")
        return True


@dataclass
class _Holders:
    by_key: dict[str, dict[str, Any]]  # our external key -> the Twenty record that carries it
    by_unique: dict[str, dict[str, Any]]  # primary email / website -> the Twenty record that holds it


def _unique_value(obj: SyncedObject, body: Mapping[str, Any]) -> str | None:
    """The standard unique value of a body or record: a person's primary email, a company's website."""
    composite = body.get("emails" if obj is PERSON else "domainName")
    if not isinstance(composite, Mapping):
        return None
    value = composite.get("primaryEmail" if obj is PERSON else "primaryLinkUrl")
    return str(value).lower().rstrip("/") if value else None


def _taken_message(obj: SyncedObject, body: Mapping[str, Any], holder: Mapping[str, Any]) -> str:
    what = "primary email" if obj is PERSON else "website"
    owner = f"Twenty {obj.object_type} {holder['id']}"
    if holder.get(obj.key_field):
        owner += f" ({obj.key_field} {holder[obj.key_field]})"
    if holder.get("deletedAt"):
        return (f"{what} {_unique_value(obj, body)} is held by {owner}, which is in Twenty's trash (deleted "
                f"{holder['deletedAt']}); Twenty keeps unique values of deleted records. Restore that record and "
                f"set its {obj.key_field}, or delete it permanently from the trash, then sync again")
    return (f"{what} {_unique_value(obj, body)} already belongs to {owner}; Twenty allows one {obj.object_type} "
            f"per {what}. Merge the two in the warehouse or change one {what}, then sync again")


def _tied_elsewhere_message(obj: SyncedObject, key: str, holder: Mapping[str, Any], tied_to: str) -> str:
    noun = "contact" if obj is PERSON else "business"
    return (f"{obj.key_field} {key} is carried by Twenty {obj.object_type} {holder['id']}, which truth-forge ties "
            f"to warehouse {noun} {tied_to} (its {obj.key_field} was changed in Twenty by hand). Twenty keeps "
            f"{obj.key_field} unique, so {noun} {key} cannot be created, and that record is not taken over: set "
            f"its {obj.key_field} back to {tied_to} in Twenty, then sync again")


# A company link to a business that has no Twenty record yet cannot be sent; None means "unlink".
_NOT_YET = object()


def _company_links(warehouse: SyncStore, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """business_id -> its Twenty id, None when the business is deleted, _NOT_YET when never pushed.
    Rows from change detection carry their company's state (`company_state`); the rest is read."""
    business_ids = {r["business_id"] for r in rows if r.get("business_id") is not None}
    found = {str(r["business_id"]): r["company_state"] for r in rows
             if r.get("business_id") is not None and "company_state" in r and r["company_state"] is not None}
    carried = {str(r["business_id"]) for r in rows if "company_state" in r}
    found.update(warehouse.read_sync_state("company", [b for b in business_ids if str(b) not in carried]))
    links: dict[str, Any] = {}
    for key in map(str, business_ids):
        state = found.get(key)
        if state is None or not state.get("crm_id"):
            links[key] = _NOT_YET
        else:
            links[key] = None if state.get("status") == "deleted" else state["crm_id"]
    return links
