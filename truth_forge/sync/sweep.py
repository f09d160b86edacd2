"""The rolling sweep: re-read a slice of every object each run, to catch edits the pull cannot see.

The incremental pull leaves out records whose `updatedBy` is our API key (own_writes.py). Some of
Twenty's writers move a record without stamping `updatedBy`: a merge of duplicates carries the
merged records' `updatedBy` over, older workflow "update record" steps wrote through the repository
without the stamping hooks, and a restore from the trash runs no hook at all. A record we wrote last
and then changed by one of those keeps our stamp, so the pull skips that change for good.

The sweep walks each object in id order (`id[gt]:"<last id>"`, ordered by id: ids are unique, so
no tie can stall it as one on `updatedAt` can), without the own-writes filter, a slice per run, and merges
every record whose values differ from the sync state (`crm_hash`) through the pull's own merge
(`pull.apply_records`, which reads the state by the slice's Twenty ids only). There such a change is
an edit, though it carries our stamp: a field the warehouse changed too is a conflict settled by
policy and recorded (the stamp makes values ours only where a write of ours lost its answer,
`own_writes.unsaved_write`). How far it reads each
run follows the clock: by `started + window * f` it has read the fraction `f` of the records it
expects (its last count, from Twenty's `totalCount`), less at most one page (it reads whole pages
until the window is over, then the rest), so every record is re-read at least once per `window`
plus one run interval, however often runs come, as long as `max_requests` pages a run keep up
(a run that cannot says so: `behind` in its counts, and a warning). A full walk costs what one `sync --full` read costs (about N/200 pages per object),
spread over the window instead of spent at once.

Its position lives in crm_sync_kv (`sweep:<object>:<server>`) and moves only after the records read
up to it are merged: a run killed midway reads that slice again. Deletions are not its business:
the pull sees every deletion (its filter never narrows them), and destruction needs a full walk.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from truth_forge.sync.context import SyncContext
from truth_forge.sync.objects import PERSON, SyncedObject, format_timestamp, now_utc, parse_timestamp
from truth_forge.sync.pull import PAGE_SIZE, PullStats, apply_records, read_again
from truth_forge.sync.store import per_server

if TYPE_CHECKING:
    from truth_forge.core.config import Settings

log = logging.getLogger(__name__)

DEFAULT_WINDOW = dt.timedelta(hours=24)
DEFAULT_MAX_REQUESTS = 50
RUN_MINUTES_OF_THE_DEFAULT_CAP = 10.0  # the cadence the default cap was chosen for (serve's scheduled syncs)


@dataclass(frozen=True)
class SweepPolicy:
    """Every record is re-read within `window`; a run spends at most `max_requests` requests on it.
    `clock` is the time the schedule follows and `page_size` the records per request (tests pass
    their own). The cap is checked before each page; writing back the key of a record created in
    Twenty that the slice takes in is a request too, counted, and may pass it by that write."""

    window: dt.timedelta = DEFAULT_WINDOW
    max_requests: int = DEFAULT_MAX_REQUESTS
    clock: Callable[[], dt.datetime] = now_utc
    page_size: int = PAGE_SIZE

    @property
    def enabled(self) -> bool:
        return self.window > dt.timedelta(0) and self.max_requests > 0

    @classmethod
    def from_settings(cls, settings: Settings) -> SweepPolicy:
        return cls(window=dt.timedelta(hours=settings.sweep_window_hours), max_requests=settings.sweep_max_requests)

    def per_run_of(self, minutes: float, *, explicit: bool) -> SweepPolicy:
        """The policy for runs `minutes` apart: the default cap is for runs ten minutes apart, so runs
        further apart get as much more (the same share of Twenty's rate, the same records a day);
        a cap someone set stays as set."""
        if explicit or minutes <= RUN_MINUTES_OF_THE_DEFAULT_CAP:
            return self
        return dataclasses.replace(self, max_requests=round(self.max_requests * minutes / RUN_MINUTES_OF_THE_DEFAULT_CAP))


DEFAULT_SWEEP = SweepPolicy()
OFF = SweepPolicy(window=dt.timedelta(0), max_requests=0)


@dataclass
class SweepStats:
    read: int = 0  # live records read
    drifted: int = 0  # merged: they differed from the sync state
    taken_in: int = 0  # records the warehouse did not know
    failed: int = 0
    requests: int = 0  # every request the sweep made (pages, and any key write-back)
    behind: int = 0  # records due by now but left for the next run (the request cap was reached)
    cycles_completed: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass
class _Position:
    """Where the walk of one object stands: the last id merged, when this walk began, how many
    records it has read, and how many Twenty said were left after them."""

    started: dt.datetime
    after: str | None = None
    swept: int = 0
    remaining: int | None = None

    def dump(self) -> str:
        return json.dumps({"started": format_timestamp(self.started), "after": self.after,
                           "swept": self.swept, "remaining": self.remaining})

    @classmethod
    def load(cls, raw: str | None) -> _Position | None:
        try:
            value = json.loads(raw) if raw else None
            started = parse_timestamp(value["started"]) if isinstance(value, dict) else None
        except (ValueError, KeyError, TypeError):
            return None
        if started is None or not isinstance(value, dict):
            return None
        return cls(started, value.get("after") or None, int(value.get("swept") or 0),
                   None if value.get("remaining") is None else int(value["remaining"]))


class SweepBudget:
    """The run's request cap, shared by the objects: each takes an even share of what is left, so
    a large object cannot starve the others, and what one leaves unused goes to the next."""

    def __init__(self, max_requests: int, objects: int) -> None:
        self.left, self.objects_left = max_requests, objects

    def share(self) -> int:
        share = math.ceil(self.left / max(1, self.objects_left))
        self.objects_left -= 1
        return share

    def spend(self, requests: int) -> None:
        self.left = max(0, self.left - requests)


def _mark(ctx: SyncContext, obj: SyncedObject) -> str:
    return per_server(f"sweep:{obj.object_type}", ctx.client.transport.base_url)


def restart(ctx: SyncContext, obj: SyncedObject, now: dt.datetime) -> None:
    """Begin a new walk now (a full pass has just re-read everything)."""
    ctx.warehouse.set_watermark(_mark(ctx, obj), _Position(now).dump())


def sweep_object(ctx: SyncContext, obj: SyncedObject, policy: SweepPolicy, allowance: int) -> SweepStats:
    """Read the slice of `obj` that the schedule says is due by now, within `allowance` requests."""
    stats = SweepStats()
    if not policy.enabled:
        return stats
    warehouse, transport = ctx.warehouse, ctx.client.transport
    now = policy.clock()
    position = _Position.load(warehouse.get_watermark(_mark(ctx, obj)))
    if position is None:
        # The first run that sweeps: the walk begins now; nothing is due yet.
        restart(ctx, obj, now)
        return stats
    due = _due(ctx, obj, position, policy, now)
    requests_before = transport.stats.requests
    pending: dict[str, dict[str, Any]] = {}
    read_to: _Position = dataclasses.replace(position)
    finished = False

    def spent() -> int:
        return transport.stats.requests - requests_before

    # Whole pages only, until the window is over: a run a few seconds after the last reads nothing.
    to_end = now - position.started >= policy.window
    while (due >= policy.page_size or (to_end and due > 0)) and spent() < allowance:
        filter_ = f'id[gt]:"{read_to.after}"' if read_to.after else None
        page = ctx.client.records.find_page(obj.plural, filter=filter_, order_by="id", limit=policy.page_size)
        for record in page.records:
            pending[record["id"]] = record
        stats.read += len(page.records)
        due -= len(page.records)
        if page.records:
            read_to.after = max(str(r["id"]) for r in page.records)
            read_to.swept += len(page.records)
        if page.total_count is not None:
            read_to.remaining = max(0, int(page.total_count) - len(page.records))
        ctx.emit("page_read", phase="sweep", object_type=obj.object_type, count=len(page.records),
                 total=page.total_count)
        finished = not page.has_next_page or not page.records
        if finished or len(pending) >= warehouse.pull_merge_records:
            _merge(ctx, obj, pending, stats)
            position = read_to if not finished else _Position(now, remaining=read_to.swept)
            warehouse.set_watermark(_mark(ctx, obj), position.dump())
            read_to = dataclasses.replace(position)
        if finished:
            stats.cycles_completed += 1
            log.info("Sweep of %s: a walk of %d records is complete; the next begins now", obj.object_type,
                     read_to.remaining or 0)
            break
    if pending:
        _merge(ctx, obj, pending, stats)
        warehouse.set_watermark(_mark(ctx, obj), read_to.dump())
    stats.requests = spent()
    if due >= policy.page_size and not finished:
        stats.behind = due
        log.warning("The sweep of %s is %d records behind its %s window (at most %d requests a run): raise "
                    "TRUTH_FORGE_SWEEP_MAX_REQUESTS or TRUTH_FORGE_SWEEP_WINDOW_HOURS", obj.object_type, due,
                    policy.window, policy.max_requests)
    return stats


def _due(ctx: SyncContext, obj: SyncedObject, position: _Position, policy: SweepPolicy, now: dt.datetime) -> int:
    """Records the walk should have read by now and has not: a straight line from none at its start
    to all of them one window later."""
    remaining = position.remaining
    if remaining is None:
        # Never counted yet: the warehouse's own count stands in until Twenty's totalCount arrives.
        remaining = max(0, ctx.warehouse.count_rows("contacts" if obj is PERSON else "businesses") - position.swept)
    total = position.swept + remaining
    fraction = min(1.0, max(0.0, (now - position.started) / policy.window))
    if fraction >= 1.0:
        return max(remaining, 1)  # the window is over: read to the end, however many there are now
    return math.floor(total * fraction) - position.swept


def _merge(ctx: SyncContext, obj: SyncedObject, pending: dict[str, dict[str, Any]], stats: SweepStats) -> None:
    """Through the pull's merge: records whose values hash as the state says are left alone there."""
    if not pending:
        return
    merged = PullStats()
    records = list(pending.values())
    pending.clear()
    failed = apply_records(ctx, obj, records, merged)
    if failed:
        read_again(ctx.warehouse, obj, failed)  # the next pull fetches them by id
    stats.drifted += merged.updated
    stats.taken_in += merged.created
    stats.failed += merged.failed
    ctx.reporter.flush(ctx.warehouse)
