"""Twenty -> warehouse: bring back what people edited in the CRM since the last pull, field by field.

Pages through records whose `updatedAt` or `deletedAt` is at or after the watermark (minus an
overlap, because clocks and commit order are not perfectly aligned), oldest first, checkpointing the
watermark after every page so a killed run resumes where it stopped. A record whose editable
values hash the same as the last ones seen is an echo of our own push and is skipped. Every other record is merged three
ways with the warehouse (`merge.py`): fields changed only in Twenty come here, fields changed only
in the warehouse are left for the push, fields changed on both sides are settled by the policy and
recorded. Records that fail are kept on a retry list and fetched again by id on the next run, since
the watermark has moved past them. The same query brings deletions (records in Twenty's trash).
People created in Twenty get a new contact_id, written back as their `contactId`.

The key fields (`contactId`, `businessId`) tie a Twenty record to its warehouse row, and the hash
leaves them out, so they are checked on their own on every record read: a record whose key was
retyped by hand is held (an open error naming the Twenty id, the key it should carry and the one it
carries; nothing merged, and the push writes nothing over it) until a person sets the key back; a
key cleared by hand is written back. A record holding a write of ours whose answer was never saved
(`own_writes.unsaved_write`, which asks more than our `updatedBy` stamp: a writer that never stamps
leaves ours in place) is merged with those values as the base (`merge.base_after_our_write`), so it
is not taken for a person's edit.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from truth_forge.sync import changelog, landing, own_writes, views
from truth_forge.sync.context import SyncContext
from truth_forge.sync.early_pages import ChangedPages
from truth_forge.sync.merge import FieldConflict, base_after_our_write, changed_since, merge_fields
from truth_forge.sync.objects import (
    PERSON,
    SyncedObject,
    format_timestamp,
    now_utc,
    parse_timestamp,
    write_by_field_set,
)
from truth_forge.sync.store import SyncStore
from truth_forge.twenty.errors import TwentyProtocolError, TwentyRecordRejected, TwentySchemaMismatch
from truth_forge.twenty.records import Page, RecordsApi
from truth_forge.warehouse.pending_rows import STAGED_HASH
from truth_forge.warehouse.queries import VIEW_JSON_COLUMNS

log = logging.getLogger(__name__)

DEFAULT_OVERLAP = dt.timedelta(minutes=2)
PAGE_SIZE = 200
MAX_KEY = 2**63 - 1  # the warehouse keys are INT64
# Emails and phones are written to the warehouse in pairs (primary with additional).
_PAIRS = (("primary_email", "additional_emails"), ("primary_phone", "additional_phones"))


@dataclass
class PullStats:
    updated: int = 0
    created: int = 0
    deleted: int = 0
    unchanged: int = 0
    conflicts: int = 0
    failed: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


# Naming deletedAt in a filter makes Twenty search the trash too (graphql-query.parser.ts), so one
# query per object brings live edits and deletions together.
EVERYTHING = "or(deletedAt[is]:NULL,deletedAt[is]:NOT_NULL)"


def changes_query(warehouse: SyncStore, obj: SyncedObject, overlap: dt.timedelta, not_ours: str | None = None) -> str:
    """Records edited or deleted since the watermark (less the overlap), live and soft-deleted alike.

    Matched on `updatedAt` or `deletedAt`, so a deletion that did not move `updatedAt` is seen too.
    Ordered by `updatedAt`, a record matched only by its deletion sorts before every record whose
    `updatedAt` moves the watermark, so a run killed between pages never skips one. (Older versions
    kept a second watermark for deletions; every deletion after their last pull is after this one.)
    `not_ours` (own_writes.filter_clause) leaves out edits whose last writer was this sync; it
    never narrows deletions, which Twenty does not stamp with their author.
    """
    mark = parse_timestamp(warehouse.get_watermark(_watermark(obj)))
    if mark is None:
        return EVERYTHING
    since = format_timestamp(mark - overlap)
    edited = f'updatedAt[gte]:"{since}"'
    if not_ours:
        edited = f"and({edited},{not_ours})"
    # `not_ours` last in every conjunction: an apostrophe in the key's name must have no comma after it
    # (own_writes.clause_for).
    return f'or(deletedAt[gte]:"{since}",{edited})'


def _watermark(obj: SyncedObject) -> str:
    return f"pull:{obj.object_type}"


def pull_object(ctx: SyncContext, obj: SyncedObject, *, overlap: dt.timedelta = DEFAULT_OVERLAP,
                early: ChangedPages | None = None) -> PullStats:
    """`early`: this object's pages of changes, their first asked for ahead (`changed_pages(ahead=True)`)."""
    stats = PullStats()
    warehouse, records_api = ctx.warehouse, ctx.client.records
    retry = _RetryList(warehouse, f"pull-retry:{obj.object_type}")
    if early is not None and retry.ids:
        # Read before the retry list's records, which are merged first: an older version of one of
        # them must not be merged over its newer one. Asked for again, after them.
        early.close()
        early = None
    # As many ids a request as keep its URL within the client's limit (records.py `in_runs`).
    for chunk in records_api.in_runs(obj.plural, "id", sorted(retry.ids)):
        found = records_api.find_in(obj.plural, "id", chunk)
        retry.update(found, apply_records(ctx, obj, found, stats))
        # Not live in Twenty (deleted: the deleted pass has them; destroyed: the next full walk
        # settles it). Only forgotten here: absence from a filtered answer never deletes anything.
        retry.forget(set(chunk) - {r["id"] for r in found})

    signpost: dt.datetime | None = None
    newest: dt.datetime | None = None
    # Records of several pages are merged together (the latest version of each): a merge's lookups
    # by key cost about the same for ten records as for thousands on BigQuery (`pull_merge_records`).
    pending: dict[str, dict[str, Any]] = {}
    pages = changed_pages(ctx, obj, overlap, early=early)
    for page in pages:
        if signpost is None:
            # The server's time no later than it ran the first page's query: every edit committed
            # before then was in this query's reach, so the next pull can start there (less the
            # overlap) whether or not this one found anything.
            signpost = pages.signpost
        for record in page.records:
            pending.pop(record["id"], None)  # seen again (edited while paging): its later version counts
            pending[record["id"]] = record
        if page.records:
            newest = parse_timestamp(_latest(page.records, "updatedAt"))
        if len(pending) >= warehouse.pull_merge_records:
            _apply_pending(ctx, obj, pending, retry, stats, newest)
        ctx.emit("page_read", phase="pull", object_type=obj.object_type, count=len(page.records),
                 total=page.total_count)
    _apply_pending(ctx, obj, pending, retry, stats, newest)
    changelog.flush(ctx)
    if signpost is not None and (newest is None or newest < signpost):
        warehouse.set_watermark(_watermark(obj), format_timestamp(signpost))
    return stats


def _apply_pending(ctx: SyncContext, obj: SyncedObject, pending: dict[str, dict[str, Any]], retry: _RetryList,
                   stats: PullStats, newest: dt.datetime | None) -> None:
    """Merge the records read so far, then move the watermark past them (never before: a run killed
    in between reads those pages again)."""
    if not pending:
        return
    records = list(pending.values())
    pending.clear()
    live = [r for r in records if not r.get("deletedAt")]
    gone = [r for r in records if r.get("deletedAt")]
    if live:
        retry.update(live, apply_records(ctx, obj, live, stats))
    if gone:
        apply_deletions(ctx, obj, gone, stats)
    if newest is not None:
        ctx.warehouse.set_watermark(_watermark(obj), format_timestamp(newest))
    ctx.reporter.flush(ctx.warehouse)


def changed_pages(ctx: SyncContext, obj: SyncedObject, overlap: dt.timedelta, *,
                  remember: bool = True, ahead: bool = False, early: ChangedPages | None = None) -> ChangedPages:
    """The pages of changes since the watermark, our own writes left out where the server can tell.
    A server that refuses the filter on `updatedBy` gets the plain query, now and (unless
    `remember` is off: a dry run writes nothing) from then on. With `ahead`, the first page is asked
    for at once, on the client's pool (early_pages.py). `early`, pages asked for ahead before, are
    read instead of asking again while their query is still the one asked now (the watermark and the
    own-writes filter unchanged since); else they are dropped."""
    base_url, records_api = ctx.client.transport.base_url, ctx.client.records
    not_ours = own_writes.filter_clause(ctx.warehouse, base_url)
    query = changes_query(ctx.warehouse, obj, overlap, not_ours)
    if early is not None:
        if early.query == query:
            return early
        early.close()

    def plain(refused: TwentyRecordRejected | TwentySchemaMismatch) -> ChangedPages:
        if remember:
            # Twenty's own words, not the error's advice (a SchemaMismatch says "run setup", wrong here).
            said = "; ".join(refused.messages) or refused.summary
            own_writes.disable(ctx.warehouse, base_url, f"Twenty refused the pull's filter on updatedBy "
                                                        f"(HTTP {refused.status}: {said})")
        unfiltered = changes_query(ctx.warehouse, obj, overlap)
        return ChangedPages(unfiltered, walk_by_updated_at(records_api, obj.plural, unfiltered), ctx.client.transport)

    return ChangedPages(query, walk_by_updated_at(records_api, obj.plural, query), ctx.client.transport,
                        pool=ctx.client.pool if ahead else None, fallback=None if not_ours is None else plain)


def first_pages_ahead(ctx: SyncContext, objects: Sequence[SyncedObject], overlap: dt.timedelta, *,
                      remember: bool = True) -> dict[str, ChangedPages]:
    """Each object's pages of changes by object type, every first page asked for now on the client's
    pool (early_pages.py); if asking fails half-way, the pages already asked for are closed."""
    early: dict[str, ChangedPages] = {}
    try:
        for obj in objects:
            early[obj.object_type] = changed_pages(ctx, obj, overlap, remember=remember, ahead=True)
    except BaseException:
        ChangedPages.close_unread(early)
        raise
    return early


def walk_by_updated_at(records_api: RecordsApi, plural: str, query: str) -> Iterator[Page]:
    """The pages of `query` oldest `updatedAt` first, each record once, on every Twenty version.

    Newer servers page with the id as a tie-breaker; older ones compare the cursor's millisecond
    with `>` against the microseconds Postgres keeps, so a page that ends inside a tie on
    `updatedAt` (one batch write, one `updatedAt`) is followed by that tie again from its first
    row, and a tie as large as a page gives the same page forever (docs/twenty-facts.md, "Paging
    through a tie"). Records seen again at the newest `updatedAt` are dropped; when a page brings
    a tie again and still ends inside it, the tie is read on its own ordered by id (exact
    everywhere) and the walk starts afresh after it. On a server that pages exactly none of this
    happens: one request per page, as plain cursor paging.
    """
    cursor: str | None = None
    after_tie: str | None = None  # where the walk starts again once a tie was read by id
    tail_stamp: str | None = None  # the newest `updatedAt` read so far, and the ids read at it
    tail_ids: set[str] = set()
    walked_ties: set[str] = set()
    repeats = False  # whether this server was seen to send a tie again
    while True:
        # Our conditions first: the pull's query ends in the own-writes clause, which must stay last
        # (an apostrophe in the key's name would swallow any comma after it: own_writes.clause_for).
        query_now = query if after_tie is None else f'and(updatedAt[gte]:"{after_tie}",{query})'
        page = records_api.find_page(plural, filter=query_now, order_by="updatedAt", limit=PAGE_SIZE,
                                     starting_after=cursor)
        fresh, repeated = [], None  # repeated: the `updatedAt` of records read a second time
        for record in page.records:
            stamp = record.get("updatedAt")
            if stamp == tail_stamp and record["id"] in tail_ids:
                repeated = stamp
                continue
            if stamp != tail_stamp:
                tail_stamp, tail_ids = stamp, set()
            tail_ids.add(record["id"])
            fresh.append(record)
        yield Page(records=fresh, has_next_page=page.has_next_page, end_cursor=page.end_cursor,
                   total_count=page.total_count)
        if not page.has_next_page or not page.records:
            return
        last_stamp = page.records[-1].get("updatedAt")
        repeats = repeats or repeated is not None
        # The next page would start at the tie this page ends in again, and bring nothing new if
        # that tie fills a page: a tie that came again and still runs on past the page, a page
        # that is one tie on a server known to repeat ties, a cursor that does not move.
        tie_again = (repeated is not None and last_stamp == repeated) \
            or (repeats and page.records[0].get("updatedAt") == last_stamp)
        stuck = not fresh or not page.end_cursor or page.end_cursor == cursor
        if not (stuck or tie_again):
            cursor = page.end_cursor
            continue
        if tail_stamp is None or tail_stamp in walked_ties:
            # Nothing left that reading by id could fix: stop rather than loop.
            raise TwentyProtocolError("Twenty said there are more pages but gave no new cursor",
                                      method="GET", path=f"/rest/{plural}")
        walked_ties.add(tail_stamp)
        yield from _walk_tie(records_api, plural, query, tail_stamp, tail_ids)
        after_tie, cursor, tail_stamp, tail_ids = _next_millisecond(tail_stamp), None, None, set()


def _walk_tie(records_api: RecordsApi, plural: str, query: str, stamp: str, seen: set[str]) -> Iterator[Page]:
    """Every record of `query` updated in `stamp`'s millisecond that is not in `seen`, by id. A
    range, not `[eq]`: on older servers an equality with a millisecond never matches the
    microseconds stored."""
    in_tie = f'and(updatedAt[gte]:"{stamp}",updatedAt[lt]:"{_next_millisecond(stamp)}",{query})'
    for page in records_api.iter_pages(plural, filter=in_tie, order_by="id", page_size=PAGE_SIZE):
        fresh = [r for r in page.records if r["id"] not in seen]
        seen |= {r["id"] for r in fresh}
        yield Page(records=fresh, has_next_page=page.has_next_page, end_cursor=page.end_cursor,
                   total_count=page.total_count)


def _next_millisecond(stamp: str) -> str:
    moment = parse_timestamp(stamp)
    assert moment is not None
    return format_timestamp(moment.replace(microsecond=moment.microsecond // 1000 * 1000)
                            + dt.timedelta(milliseconds=1))


def pull_records(ctx: SyncContext, obj: SyncedObject, records: Sequence[Mapping[str, Any]]) -> PullStats:
    """Apply given Twenty records to the warehouse (one record fetched by id, a webhook's record...)."""
    stats = PullStats()
    live = [r for r in records if not r.get("deletedAt")]
    if live:
        apply_records(ctx, obj, live, stats)
    gone = [r for r in records if r.get("deletedAt")]
    if gone:
        apply_deletions(ctx, obj, gone, stats)
    ctx.reporter.flush(ctx.warehouse)
    changelog.flush(ctx)
    return stats


def read_again(warehouse: SyncStore, obj: SyncedObject, crm_ids: Iterable[str]) -> None:
    """Fetch these records by id on the next pull, whatever the watermark and the own-writes filter
    say (a record edited by someone else in the instant before our write carries our stamp now)."""
    retry = _RetryList(warehouse, f"pull-retry:{obj.object_type}")
    retry.update((), set(crm_ids) | retry.ids)


class _RetryList:
    """Twenty ids whose pull failed, kept in the warehouse until they go through."""

    def __init__(self, warehouse: SyncStore, name: str) -> None:
        self.warehouse, self.name = warehouse, name
        self.ids: set[str] = set(json.loads(warehouse.get_watermark(name) or "[]"))

    def update(self, records: Iterable[Mapping[str, Any]], failed: set[str]) -> None:
        before = set(self.ids)
        self.ids = (self.ids - {r["id"] for r in records}) | failed
        if self.ids != before:
            self.warehouse.set_watermark(self.name, json.dumps(sorted(self.ids)))

    def forget(self, ids: set[str]) -> None:
        if ids & self.ids:
            self.ids -= ids
            self.warehouse.set_watermark(self.name, json.dumps(sorted(self.ids)))


def _latest(records: Sequence[Mapping[str, Any]], field: str) -> str:
    stamps = [t for t in (parse_timestamp(r.get(field)) for r in records) if t is not None]
    return format_timestamp(max(stamps))


def _typed_key(obj: SyncedObject, record: Mapping[str, Any]) -> int | None:
    """The warehouse key someone typed into Twenty's external-id field, if any."""
    raw = record.get(obj.key_field)
    if raw in (None, ""):
        return None
    try:
        key = int(str(raw).strip())
    except ValueError:
        key = 0
    if not 0 < key <= MAX_KEY:
        raise ValueError(f"{obj.key_field} {raw!r} in Twenty is not a warehouse key "
                         f"(a whole number from 1 to {MAX_KEY})")
    return key


# How a broken tie's message (and the sync state's last_error) begins: the pull knows by it that a
# record it held back may be merged again once its key is set back.
BROKEN_TIE = "Key changed in Twenty"


def tie_broken(obj: SyncedObject, record: Mapping[str, Any], record_key: str | int) -> bool:
    """Whether a Twenty record we tie to `record_key` now carries another key (typed by hand).

    An empty key field is not a broken tie: it is how a record created in Twenty looks until its key
    is written back, and no other row can claim a record by an empty key.
    """
    typed = record.get(obj.key_field)
    return typed not in (None, "") and str(typed).strip() != str(record_key)


def was_broken(state: Mapping[str, Any]) -> bool:
    return state.get("status") == "failed" and str(state.get("last_error") or "").startswith(BROKEN_TIE)


def broken_tie_message(obj: SyncedObject, crm_id: str, record_key: str | int, typed: Any) -> str:
    noun = "contact" if obj is PERSON else "business"
    return (f"{BROKEN_TIE}: Twenty {obj.object_type} {crm_id} is tied to warehouse {noun} {record_key}, but its "
            f"{obj.key_field} now reads {typed!r} (edited by hand). truth-forge leaves this record alone both ways "
            f"until its {obj.key_field} is {record_key} again: set it back in Twenty (the {obj.key_field} is "
            f"truth-forge's key, not meant to be edited)")


class _Apply:
    """Merging one page of changed Twenty records into the warehouse."""

    def __init__(self, ctx: SyncContext, obj: SyncedObject, records: Sequence[Mapping[str, Any]],
                 stats: PullStats) -> None:
        self.ctx, self.obj, self.stats = ctx, obj, stats
        self.warehouse = ctx.warehouse
        self.states = ctx.warehouse.read_sync_state_by_crm_id(obj.object_type, [r["id"] for r in records])
        self.company_keys = _company_keys(ctx.warehouse, records) if obj is PERSON else {}
        self.failed: set[str] = set()
        # Our API key's name on this server: with the runs that ended unclean, it tells a write of ours
        # whose answer was never saved from a person's edit (`own_writes.unsaved_write`).
        self.our_name = own_writes.our_api_key_name(ctx.warehouse, ctx.client.transport.base_url)
        # Records our own create made whose bookkeeping a killed run never saved: merged here (see keys_for).
        self.adopted: set[str] = set()
        self.conflicts: list[dict[str, Any]] = []  # field conflicts, appended with the page's history

    def fail(self, record: Mapping[str, Any], error: BaseException | str) -> None:
        self.ctx.reporter.record(object_type=self.obj.object_type, operation="pull", error=error, crm_id=record["id"])
        self.stats.failed += 1
        self.failed.add(record["id"])

    def keys_for(self, records: Sequence[Mapping[str, Any]]) -> dict[str, int | None]:
        """Each changed record's warehouse key: from the sync state, or typed in Twenty, or None (new).

        A key typed in Twenty is taken only when nothing else claims it; a key that already names a
        warehouse row is left for the push, which links the two with the warehouse's values, unless
        Twenty says we created the record (its `createdBy` is our API key): then a run that created it
        was killed before saving that, and the record is adopted here, so that what people edited in
        Twenty since is merged, not overwritten (`_adopted_state`).
        """
        keys: dict[str, int | None] = {}
        typed: dict[int, Mapping[str, Any]] = {}
        for record in records:
            state = self.states.get(record["id"])
            if state is not None:
                keys[record["id"]] = int(state["record_key"])
                continue
            try:
                key = _typed_key(self.obj, record)
            except ValueError as exc:
                self.fail(record, exc)
                continue
            if key is None:
                keys[record["id"]] = None
            else:
                typed[key] = record
        if typed:
            claimed = self.warehouse.read_sync_state(self.obj.object_type, typed)
            existing = self.warehouse.row_hashes(self.obj.object_type, typed)
            for key, record in typed.items():
                owner = claimed.get(str(key))
                if owner is not None and owner.get("crm_id") not in (None, record["id"]):
                    self.fail(record, f"{self.obj.key_field} {key} already belongs to Twenty record "
                                      f"{owner['crm_id']}; two Twenty records cannot share it")
                elif key in existing and own_writes.created_by_us(record, self.our_name):
                    keys[record["id"]] = key
                    self.adopted.add(record["id"])
                elif key in existing:
                    # Our key on a record we do not know, typed there by someone: the push claims it
                    # by this key, with the warehouse's values.
                    log.info("%s %s %s in Twenty names an existing warehouse row; the push links them",
                             self.obj.object_type, self.obj.key_field, key)
                else:
                    keys[record["id"]] = key
        return keys

    def hold_broken_ties(self, broken: Sequence[tuple[Mapping[str, Any], Mapping[str, Any]]]) -> None:
        """Records whose key field no longer names the row our state ties them to: an open error
        each, and their state failed, so neither side writes over the other until a person sets the
        key back in Twenty (the record stays on the retry list meanwhile, read again every run)."""
        now, held = now_utc(), []
        for record, state in broken:
            message = broken_tie_message(self.obj, record["id"], state["record_key"], record.get(self.obj.key_field))
            self.ctx.reporter.record(object_type=self.obj.object_type, operation="key", error=message,
                                     record_key=state["record_key"], crm_id=record["id"])
            self.stats.failed += 1
            self.failed.add(record["id"])
            held.append({"object_type": self.obj.object_type, "record_key": str(state["record_key"]),
                         "status": "failed", "last_error": message[:1000], "last_synced_at": now})
        self.warehouse.upsert_sync_state(held)

    def conflict(self, key: int, crm_id: str, message: str, field: FieldConflict | None = None) -> None:
        self.stats.conflicts += 1
        self.ctx.reporter.record(object_type=self.obj.object_type, operation="conflict", record_key=key,
                                 crm_id=crm_id, error=message, settled=True)
        if field is not None:  # kept with its three values, for review (`truth-forge conflicts`)
            self.conflicts.append(changelog.conflict_row(self.ctx, self.obj, key, crm_id, field))


def apply_records(ctx: SyncContext, obj: SyncedObject, records: Sequence[Mapping[str, Any]], stats: PullStats) -> set[str]:
    """Merge Twenty records into the warehouse, field by field; returns the Twenty ids that failed."""
    page = _Apply(ctx, obj, records, stats)
    schema, warehouse = ctx.schema, ctx.warehouse
    changed, broken = [], []
    for record in records:
        state = page.states.get(record["id"])
        if state is not None and tie_broken(obj, record, state["record_key"]):
            broken.append((record, state))  # checked whatever the hash says: the hash leaves the key out
            continue
        if state is not None and state.get("crm_hash") == obj.crm_hash(record, schema) \
                and state.get("status") != "deleted" and not was_broken(state) \
                and record.get(obj.key_field) not in (None, ""):  # a key cleared by hand is written back
            stats.unchanged += 1  # our own push coming back, or a change to fields we do not pull
            continue
        changed.append(record)
    if broken:
        page.hold_broken_ties(broken)
    if not changed:
        return page.failed
    keys = page.keys_for(changed)
    changed = [r for r in changed if r["id"] in keys]
    new = [r for r in changed if keys[r["id"]] is None]
    for record, key in zip(new, warehouse.allocate_ids(obj.object_type, len(new)), strict=True):
        keys[record["id"]] = key
    fresh = [r for r in changed if r["id"] not in page.states]
    if fresh:
        # Claim the key before the row exists, so a run killed in between reuses it instead of
        # allocating a second contact for the same Twenty record.
        warehouse.upsert_sync_state([{"object_type": obj.object_type, "record_key": str(keys[r["id"]]),
                                      "crm_id": r["id"], "status": "pending"} for r in fresh])

    if warehouse.stage_pulled_rows:
        landing.check_landings(ctx)  # (serve's webhook batches come here with no run of their own)
    # From the read of the rows to the saved state, no landing of staged values comes in between
    # (the read-ahead thread may land them): what is staged and what the state says stay one.
    narrow = _reads_narrow(ctx, obj)
    with warehouse.holding_pending():
        current = {r[obj.key_column]: r for r in warehouse.get_rows(
            obj.object_type, [k for k in keys.values() if k], narrow=narrow)}
        if narrow:
            _hash_rows_without_base(page, changed, keys, current)
        plans = [_plan(page, record, keys[record["id"]], current.get(keys[record["id"]])) for record in changed]  # type: ignore[arg-type]
        # Written at once, or staged to land later (BigQuery: warehouse/pending_rows.py).
        staged = warehouse.land_pulled(obj.object_type, [p.row for p in plans if p.row is not None], current)
        # A row read without its JSON and left as it was keeps the hash its state had: recording its
        # hash now would cover a JSON edit nobody checked (the push and the audit compare it instead).
        kept: dict[int, str | None] = {p.key: (page.states.get(p.record["id"]) or {}).get("warehouse_hash")
                                       for p in plans if narrow and p.key in current and p.key not in staged}
        hashes_after: dict[int, str | None] = {**warehouse.row_hashes(
            obj.object_type, [p.key for p in plans if p.key not in staged and p.key not in kept]), **kept}
        hashes_after.update(dict.fromkeys(staged, STAGED_HASH))

        now, state_rows, to_key = now_utc(), [], []
        for plan in plans:
            record = plan.record
            state_row = {"object_type": obj.object_type, "record_key": str(plan.key), "crm_id": record["id"],
                         "crm_hash": obj.crm_hash(record, schema), "crm_updated_at": parse_timestamp(record.get("updatedAt")),
                         "last_synced_at": now, "status": "synced", "last_error": None, "base": plan.base,
                         # Nothing left to send: the warehouse row is what Twenty has, so the push must not
                         # send it back. Fields the warehouse won still have to go out (no hash).
                         "warehouse_hash": None if plan.to_twenty else hashes_after.get(plan.key)}
            if str(record.get(obj.key_field) or "") != str(plan.key):
                # Two steps: the row is written, the key is not yet in Twenty. Pending, with no hash,
                # until the write-back is confirmed; if it never is, the push sends the row with its key.
                state_row.update(status="pending", warehouse_hash=None)
                to_key.append((record, plan.key, None if plan.to_twenty else hashes_after.get(plan.key), plan.base))
            state_rows.append(state_row)
            if record["id"] in page.states:
                stats.updated += 1
            else:
                stats.created += 1
        write_by_field_set(warehouse.upsert_sync_state, state_rows)
    changelog.append(ctx, changelog.pulled(ctx, obj, ((p.record, p.key, p.changes) for p in plans if p.row is not None)))
    if page.conflicts:
        warehouse.append_conflicts(page.conflicts)
    ctx.emit("records_pulled", phase="pull", object_type=obj.object_type, count=len(plans),
             detail={"keys": [p.key for p in plans if p.row is not None]})
    if to_key:
        _write_back_keys(ctx, obj, to_key)
    return page.failed


@dataclass
class _Plan:
    """What merging one Twenty record decided: the warehouse row to write, the new base, and
    whether some fields the warehouse won still have to be sent."""

    record: Mapping[str, Any]
    key: int
    row: dict[str, Any] | None
    base: dict[str, Any]
    to_twenty: bool
    # What the row's write changes, for the record history: (field, warehouse value, Twenty's value).
    changes: list[changelog.Change] = dataclasses.field(default_factory=list)


def _plan(page: _Apply, record: Mapping[str, Any], key: int, row: Mapping[str, Any] | None) -> _Plan:
    ctx, obj = page.ctx, page.obj
    theirs = views.twenty_view(obj, ctx.schema, record, page.company_keys)
    state = page.states.get(record["id"])
    if state is None and record["id"] in page.adopted and row is not None:
        state = _adopted_state(obj, ctx, record, key, row)
    revive = (state is not None and state.get("status") == "deleted") or row is None
    deleted_here = row is not None and row.get("deleted_at") is not None and not revive
    if deleted_here and _unsaved_write_of_ours(page, record, state):
        # Our own write, not an edit: the deletion made here since simply goes out.
        return _Plan(record, key, None, dict(state.get("base") or {}) if state else {}, True)
    if deleted_here:
        # Deleted in the warehouse, edited in Twenty since: a whole-record conflict.
        policy = ctx.policy_for("deleted_at")
        page.conflict(key, record["id"], f"edited in Twenty (updatedAt {record.get('updatedAt')}) and deleted in the "
                                         f"warehouse since the last sync; resolved by {policy}")
        if policy == "warehouse_wins":  # the push sends the deletion
            return _Plan(record, key, None, dict(state.get("base") or {}) if state else {}, True)
        revive = True
    if revive or state is None or row is None:
        # New to the warehouse, or alive again in Twenty: Twenty's values, whole.
        written = {obj.key_column: key, **theirs, **({"deleted_at": None} if row is not None else {})}
        event = changelog.CREATED if row is None else changelog.RESTORED
        return _Plan(record, key, written, dict(theirs), False, [(event, None, None)])
    ours = views.warehouse_view(obj, ctx.schema, row)
    base = views.comparable_base(obj, ctx.schema, state.get("base"))
    if base is None:
        # Synced before bases were kept: if the warehouse row is unchanged since, its values are the base.
        # (A row read without its hash is not known unchanged: no base, so each field is a conflict.)
        same = row.get("row_hash") is not None and row.get("row_hash") == state.get("warehouse_hash")
        base = ours if same else None
    if _unsaved_write_of_ours(page, record, state):
        # A write of ours whose answer was never saved: see merge.base_after_our_write.
        base = base_after_our_write(base, views.two_way(obj, ctx.schema, ours), theirs)
    result = merge_fields(base and views.two_way(obj, ctx.schema, base), views.two_way(obj, ctx.schema, ours),
                          theirs, ctx.policy_for)
    for conflict in result.conflicts:
        page.conflict(key, record["id"], conflict.describe(), conflict)
    written = {obj.key_column: key, **result.to_warehouse}
    for pair in _PAIRS:
        if any(c in written for c in pair):
            written.update({c: written.get(c, row.get(c)) for c in pair})
    # Computed fields changed here since they were last sent still have to go out too.
    computed = {c: ours[c] for c in views.push_only_columns(obj, ctx.schema) if c in ours and c in row}
    to_send = bool(result.to_twenty) or base is None or bool(changed_since(base, computed)) \
        or _json_unseen(row, state)
    return _Plan(record, key, written if len(written) > 1 else None, {**(base or {}), **result.base}, to_send,
                 [(name, ours.get(name), value) for name, value in result.to_warehouse.items()])


def _hash_rows_without_base(page: _Apply, records: Sequence[Mapping[str, Any]], keys: Mapping[str, int | None],
                            current: dict[int, dict[str, Any]]) -> None:
    """Rows read without their JSON whose state has no merge base (synced by a truth-forge from before
    bases were kept) get their hash, so `_plan` can still tell an unchanged row (its values are the
    base) from one to merge field by field."""
    legacy = [k for r in records if (k := keys.get(r["id"])) in current and "row_hash" not in current[k]
              and (state := page.states.get(r["id"])) is not None and state.get("base") is None]
    for key, row_hash in page.warehouse.row_hashes(page.obj.object_type, legacy).items():
        current[key] = {**current[key], "row_hash": row_hash}


def _json_unseen(row: Mapping[str, Any], state: Mapping[str, Any]) -> bool:
    """Whether a row read without its JSON (`_reads_narrow`) may hold a JSON edit: stamped since its
    last sync, so the push compares it whole. One made without a stamp is found when the merged values
    land (sync/landing.py)."""
    if "row_hash" in row:
        return False  # read whole, or laid over by staged values whose landing checks them
    return _stamped_since_sync(row, state)


def _stamped_since_sync(row: Mapping[str, Any], state: Mapping[str, Any]) -> bool:
    """Whether a writer stamped the row after its last sync (or either time is unknown)."""
    stamp, synced = row.get("updated_at"), state.get("last_synced_at")
    return stamp is None or synced is None or stamp > synced


def _edited_since_sync(ctx: SyncContext, obj: SyncedObject, state: Mapping[str, Any],
                       row: Mapping[str, Any] | None) -> bool:
    """Whether the warehouse changed this row since it was last synced. By its hash where it was
    read with one; a row read without its JSON (`_reads_narrow`) by its stamp and its two-way values
    against the merge base (a JSON edit made without a new stamp is not seen: the record is deleted
    either way, and its warehouse values are kept)."""
    if row is None:
        return False
    if row.get("row_hash") is not None:
        return bool(row["row_hash"] != state.get("warehouse_hash"))
    if state.get("warehouse_hash") is None or _stamped_since_sync(row, state):
        return True
    base = views.comparable_base(obj, ctx.schema, state.get("base"))
    return base is None or bool(changed_since(base, views.two_way(obj, ctx.schema,
                                                                  views.warehouse_view(obj, ctx.schema, row))))


def _reads_narrow(ctx: SyncContext, obj: SyncedObject) -> bool:
    """Whether the merge reads rows without their JSON columns: where pulled values are staged (so
    landing checks the JSON, sync/landing.py) and no JSON column is edited in Twenty."""
    if not ctx.warehouse.stage_pulled_rows:
        return False
    return not any(s.sync == "both" and s.column in VIEW_JSON_COLUMNS for s in ctx.schema.for_object(obj.object_type))


def _unsaved_write_of_ours(page: _Apply, record: Mapping[str, Any], state: Mapping[str, Any] | None) -> bool:
    """Whether Twenty's values on this record come from a write of ours whose answer was never saved
    (own_writes.unsaved_write): our stamp alone is not enough, since writers that do not stamp leave
    it on their edits. The run windows it may need are read once per run, when a record we stamped
    is first met (the pull's filter leaves most of those out)."""
    ctx = page.ctx
    return own_writes.unsaved_write(record, page.our_name, state,
                                    lambda: own_writes.unsaved_windows(ctx.warehouse, ctx.reporter.run_id))


def _adopted_state(obj: SyncedObject, ctx: SyncContext, record: Mapping[str, Any], key: int,
                   row: Mapping[str, Any]) -> dict[str, Any]:
    """The state a record we created would have had, had the run that created it saved it: its merge
    base is the warehouse row as it is now when that row has not changed since the create (the create
    carried exactly those values), else unknown, so that a field the two sides hold differently is a
    conflict settled by its policy, never a silent overwrite."""
    created, stamped = parse_timestamp(record.get("createdAt")), row.get("updated_at")
    unchanged = created is not None and stamped is not None and stamped <= created
    base = views.warehouse_view(obj, ctx.schema, row) if unchanged else None
    return {"object_type": obj.object_type, "record_key": str(key), "crm_id": record["id"], "status": "pending",
            "base": base, "warehouse_hash": None}


def _company_keys(warehouse: SyncStore, records: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    crm_ids = {r["companyId"] for r in records if r.get("companyId")}
    found = warehouse.read_sync_state_by_crm_id("company", crm_ids)
    return {crm_id: int(s["record_key"]) for crm_id, s in found.items()}


def _write_back_keys(
    ctx: SyncContext, obj: SyncedObject,
    pending: Sequence[tuple[Mapping[str, Any], int, str | None, dict[str, Any]]],
) -> None:
    """Give records created in Twenty their warehouse key, so every later write matches them; each
    confirmed write-back turns its pending state into synced before the next request goes out."""
    bodies = [{"id": r["id"], obj.key_field: str(k)} for r, k, _, _ in pending]

    def confirmed(landed: list[tuple[int, dict[str, Any]]]) -> None:
        own_writes.observe(ctx.warehouse, ctx.client.transport.base_url, (record for _, record in landed))
        now = now_utc()
        # The hash and time of the record as it was merged, not of the answer: an edit made in Twenty
        # since the read is in the answer, and would read as synced (the hash leaves the key out).
        ctx.warehouse.upsert_sync_state([
            {"object_type": obj.object_type, "record_key": str(pending[i][1]), "crm_id": record["id"],
             "crm_hash": obj.crm_hash(pending[i][0], ctx.schema),
             "crm_updated_at": parse_timestamp(pending[i][0].get("updatedAt")),
             "warehouse_hash": pending[i][2], "last_synced_at": now, "status": "synced", "last_error": None,
             "base": {**pending[i][3], obj.key_column: str(pending[i][1])}}
            for i, record in landed
        ])

    outcome = ctx.client.records.create_many(obj.plural, bodies, upsert=True, match_key="id", on_write=confirmed)
    for failure in outcome.failures:
        record, key, _, _ = pending[failure.index]
        ctx.reporter.record(object_type=obj.object_type, operation="write_key", error=failure.error, record_key=key,
                            crm_id=record["id"])
    if outcome.aborted is not None:
        ctx.reporter.record(object_type=obj.object_type, operation="write_key", error=outcome.aborted)


def apply_deletions(ctx: SyncContext, obj: SyncedObject, records: Sequence[Mapping[str, Any]],
                    stats: PullStats) -> None:
    """Records soft-deleted (or destroyed) in Twenty: deleted in the warehouse too, unless the
    warehouse edited them since and its policy wins."""
    warehouse = ctx.warehouse
    states = warehouse.read_sync_state_by_crm_id(obj.object_type, [r["id"] for r in records])
    live = {int(s["record_key"]): s for s in states.values() if s.get("status") != "deleted"}
    if _reads_narrow(ctx, obj):
        rows = {r[obj.key_column]: r for r in warehouse.get_rows(obj.object_type, live, narrow=True)}
    else:
        rows = {k: {"row_hash": h} for k, h in warehouse.row_hashes(obj.object_type, live).items()}
    policy = ctx.policy_for("deleted_at")
    keys, revive = [], []
    for key, state in live.items():
        if _edited_since_sync(ctx, obj, state, rows.get(key)):
            stats.conflicts += 1
            ctx.reporter.record(object_type=obj.object_type, operation="conflict", record_key=key,
                                crm_id=state["crm_id"], settled=True,
                                error=f"deleted in Twenty and edited in the warehouse since the last sync; "
                                      f"resolved by {policy}")
            if policy == "warehouse_wins":
                revive.append(key)  # sent whole (no base) by the push, which brings it back in Twenty
                continue
        keys.append(key)
    if revive:
        warehouse.upsert_sync_state([{"object_type": obj.object_type, "record_key": str(k), "base": None}
                                     for k in revive])
    if not keys:
        return
    stats.deleted += warehouse.soft_delete(obj.object_type, keys, pulled=True)
    by_crm_id = {r["id"]: r for r in records}
    changelog.append(ctx, changelog.pulled_deletions(ctx, obj, ((by_crm_id[live[k]["crm_id"]], k) for k in keys)))
    staged = set(warehouse.pending_keys(obj.object_type, keys)) if warehouse.stage_pulled_rows else set()
    after = {**warehouse.row_hashes(obj.object_type, [k for k in keys if k not in staged]),
             **dict.fromkeys(staged, STAGED_HASH)}
    warehouse.upsert_sync_state([
        {"object_type": obj.object_type, "record_key": str(k), "status": "deleted", "warehouse_hash": after.get(k),
         "last_synced_at": now_utc(), "last_error": None}
        for k in keys
    ])
