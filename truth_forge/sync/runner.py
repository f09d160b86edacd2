"""One sync run: pull Twenty's edits, push the warehouse's changes, record everything.

Pull goes first so that edits made in Twenty are in the warehouse before the push decides what
changed (the CRM wins for the fields people edit, by default). Every error becomes a row in
`crm_sync_errors` and an entry in the result's `sync_errors`; the run itself is a row in
`crm_sync_runs` with its counts and the requests it spent. Runs are safe to repeat or to kill:
what each write request stored is in the sync state before the next request goes out, and a
refused create is checked for "already ours" before it counts as a failure. Errors close when their
record next syncs cleanly; run-level errors close with the next run that succeeds.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Literal

from truth_forge.core import shutdown
from truth_forge.core.crm_schema import CrmSchema, verify_schema
from truth_forge.core.lease import DEFAULT_TTL, LeaseLost, WriterLease, writing
from truth_forge.core.memory import bound_heap, rarer_collections, release_free_memory
from truth_forge.core.reporting import ErrorReporter
from truth_forge.sync import changelog, landing, own_writes
from truth_forge.sync.context import ConflictPolicy, EventHook, SyncContext
from truth_forge.sync.early_pages import ChangedPages
from truth_forge.sync.objects import SYNC_ORDER, SyncedObject, format_timestamp, now_utc, parse_timestamp, selected
from truth_forge.sync.pull import DEFAULT_OVERLAP, first_pages_ahead, pull_object
from truth_forge.sync.push import PushAborted, push_object
from truth_forge.sync.reconcile import reconcile_object
from truth_forge.sync.store import SyncStore, per_server
from truth_forge.sync.sweep import DEFAULT_SWEEP, SweepBudget, SweepPolicy, restart, sweep_object
from truth_forge.twenty.client import TwentyClient
from truth_forge.twenty.errors import NextStep, TwentyConfigError, TwentyError
from truth_forge.warehouse.detection import DetectionPolicy

log = logging.getLogger(__name__)

Direction = Literal["both", "push", "pull"]


@dataclass
class SyncResult:
    run_id: str
    status: str  # "succeeded" | "partial" (some records failed) | "aborted" (stopped early) | "interrupted" (Ctrl-C)
    counts: dict[str, Any]
    sync_errors: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "status": self.status, "counts": self.counts,
                "sync_errors": [{k: (str(v) if k == "occurred_at" else v) for k, v in e.items()}
                                for e in self.sync_errors]}


class SetupIncomplete(TwentyConfigError):
    """The workspace lacks (or has conflicting) custom fields: nothing can sync until setup runs."""


# A workspace found complete is trusted this long before its metadata is read again; a run stopped
# by a setup problem (a field deleted in Twenty since, a refused key) forgets that at once.
SETUP_RECHECK = dt.timedelta(hours=1)


def _setup_mark(client: TwentyClient, schema: CrmSchema) -> str:
    fields = sorted(f"{f.object}.{f.name}:{f.type}" for f in schema.fields)
    digest = hashlib.sha256("\n".join([client.transport.base_url, *fields]).encode()).hexdigest()[:16]
    return f"setup-verified:{digest}"


def _forget_setup(warehouse: SyncStore, client: TwentyClient, schema: CrmSchema) -> None:
    warehouse.set_watermark(_setup_mark(client, schema), "")


def _batch_mark(client: TwentyClient) -> str:
    """Per server: the batch limit is the server's configuration, the same for every workspace on it."""
    return per_server("batch-size", client.transport.base_url)


def _recall_batch_size(warehouse: SyncStore, client: TwentyClient) -> int | None:
    """Start at the size this server took last time, unless the user set one. Returns what was stored."""
    stored = warehouse.get_watermark(_batch_mark(client))
    known = int(stored) if stored and stored.isdigit() else None
    if known is not None:
        client.records.adopt_batch_size(known)
    return known


def _remember_batch_size(warehouse: SyncStore, client: TwentyClient, known: int | None) -> None:
    """Keep what the server taught this run (a size the user set teaches nothing about the server)."""
    if client.records.batch_size_explicit or client.records.batch_size == known:
        return
    warehouse.set_watermark(_batch_mark(client), str(client.records.batch_size))


def _require_setup(warehouse: SyncStore, client: TwentyClient, schema: CrmSchema, *, remember: bool = True) -> None:
    """Stop before any write when our fields are missing (every record would be refused alike).
    One metadata read, at most once an hour per workspace and schema: a complete setup is remembered
    (unless `remember` is off: a dry run writes nothing, not even that)."""
    mark = _setup_mark(client, schema)
    last = parse_timestamp(warehouse.get_watermark(mark))
    if last is not None and now_utc() - last < SETUP_RECHECK:
        return
    report = verify_schema(client, schema)
    if report["all_complete"]:
        if remember:
            warehouse.set_watermark(mark, format_timestamp(now_utc()))
        return
    problems = [f"{obj}.{name} missing" for obj in ("person", "company") for name in report[obj]["missing"]]
    problems += [f"{obj}.{m['field']}: {'; '.join(m['problems'])}"
                 for obj in ("person", "company") for m in report[obj]["mismatched"]]
    raise SetupIncomplete(
        "The Twenty workspace is not set up for truth-forge (" + ", ".join(problems[:5])
        + (", ..." if len(problems) > 5 else "") + "): run `truth-forge setup`"
    )


def _start_name_check(warehouse: SyncStore, client: TwentyClient) -> tuple[str, Future[own_writes.NameCheck]] | None:
    """The unchecked name's check, sent on the client's pool (None: no name to check yet)."""
    name = own_writes.name_to_check(warehouse, client.transport.base_url)
    return None if name is None else (name, client.pool.submit(own_writes.check_key_name, client, name))


def _name_checked(started: tuple[str, Future[own_writes.NameCheck]] | None) -> tuple[str, own_writes.NameCheck] | None:
    return None if started is None else (started[0], started[1].result())


def _on_this_thread(fold: Callable[[], None]) -> Callable[[], None]:
    """`fold`, run only when called from this thread: the warehouse's connection is not thread-safe,
    and another thread's stream on the same client must not reach it."""
    mine = threading.get_ident()

    def on_mine() -> None:
        if threading.get_ident() == mine:
            fold()
    return on_mine


def run_sync(
    warehouse: SyncStore,
    client: TwentyClient,
    schema: CrmSchema,
    *,
    direction: Direction = "both",
    conflict_policy: ConflictPolicy | Mapping[str, ConflictPolicy] = "crm_wins",
    pull_overlap: dt.timedelta = DEFAULT_OVERLAP,
    secrets: tuple[str, ...] = (),
    on_event: EventHook | None = None,
    full: bool = False,
    lease: WriterLease | None = None,
    lease_wait: float = 0.0,
    detection: DetectionPolicy | None = None,
    lease_ttl: dt.timedelta = DEFAULT_TTL,
    sweep: SweepPolicy = DEFAULT_SWEEP,
    objects: Sequence[str] | None = None,
) -> SyncResult:
    """One run, as the warehouse's only writer.

    `conflict_policy` settles a field edited on both sides: one policy for every field, or per
    warehouse column (`{"category_code": "warehouse_wins", "*": "crm_wins"}`; `deleted_at` settles an
    edit on one side against a deletion on the other). `on_event` receives progress. `full` replaces
    the incremental pull with a full pass over Twenty (`reconcile.py`), which also finds records
    destroyed there. The writer lease (`truth_forge/core/lease.py`) is taken for the run, or the caller's
    `lease` is used; another writer is waited for up to `lease_wait` seconds (then WarehouseBusy).
    `detection` says how the push finds changed rows (incremental with a periodic audit by default;
    `full` always audits). The lease fences the run's warehouse and Twenty writes: once it is lost,
    the run stops before its next write and ends "aborted". `sweep` paces the rolling re-read that
    catches edits the pull's own-writes filter cannot see (sweep.py; `sweep.OFF` turns it off).
    `objects` limits the run to some object types ("person", "company"; None: both).
    """
    order = selected(objects)  # an unknown name fails before the lease is taken
    bound_heap()  # before the run's threads allocate: one arena, large buffers mapped (core/memory.py)
    policy = detection or DetectionPolicy()
    if full:
        policy = dataclasses.replace(policy, audit=True)
    # Run rows still `running` that started before we set out to take the lease are not alive: closed below.
    stale_before = None if lease is not None and lease.held else now_utc()
    with rarer_collections(), \
            writing(warehouse, purpose="sync", held=lease, wait=lease_wait, ttl=lease_ttl) as holder, \
            holder.fencing(client.transport):
        return _run_as_writer(warehouse, client, schema, direction, conflict_policy, pull_overlap, secrets,
                              on_event, full, policy, stale_before, sweep, order)


def _run_as_writer(
    warehouse: SyncStore, client: TwentyClient, schema: CrmSchema, direction: Direction,
    conflict_policy: ConflictPolicy | Mapping[str, ConflictPolicy], pull_overlap: dt.timedelta,
    secrets: tuple[str, ...], on_event: EventHook | None, full: bool, detection: DetectionPolicy,
    stale_before: dt.datetime | None = None, sweep: SweepPolicy = DEFAULT_SWEEP,
    order: Sequence[SyncedObject] = SYNC_ORDER,
) -> SyncResult:
    warehouse.ensure_tables()
    # What a killed run saved but never folded goes into the state before anything reads it.
    warehouse.fold_journal(forget=True)
    warehouse.forget_pending()  # the same for pulled values staged beside the tables
    started_at = now_utc()
    run_id = warehouse.start_run(started_at=started_at)
    if stale_before is not None:
        warehouse.close_stale_runs(before=stale_before, closed_by=run_id)
    reporter = ErrorReporter(run_id, (*secrets, *client.transport.secrets))
    ctx = SyncContext(warehouse, client, schema, reporter, conflict_policy, on_event, detection=detection)
    landing.check_landings(ctx)  # pulled values staged earlier may land during this run
    requests_before = client.transport.stats.requests
    own_before = own_writes.status(warehouse, client.transport.base_url)
    billed_before = warehouse.statements.snapshot()
    known_batch_size = _recall_batch_size(warehouse, client)
    counts: dict[str, Any] = {}
    name_check: tuple[str, Future[own_writes.NameCheck]] | None = None
    aborted = interrupted = False
    ctx.emit("run_started", detail={"run_id": run_id, "direction": direction})
    early: dict[str, ChangedPages] = {}
    try:
        if direction in ("both", "pull") and not full:
            # Every object's first page of changes goes out now, beside the setup check: none is
            # merged before the check's verdict, each in its turn (early_pages.py).
            early = first_pages_ahead(ctx, order, pull_overlap)
        _require_setup(warehouse, client, schema)
        if full:
            # A full pass sees what the own-writes filter cannot; whether the server stamps our
            # writes is learnt again from this run's answers (a server upgraded, a key renamed).
            own_writes.forget(warehouse, client.transport.base_url)
        if direction in ("both", "pull"):
            phase = "reconcile" if full else "pull"
            budget = SweepBudget(sweep.max_requests, len(order))
            for obj in order:
                ctx.emit("phase_started", phase=phase, object_type=obj.object_type)
                done = reconcile_object(ctx, obj) if full else pull_object(
                    ctx, obj, overlap=pull_overlap, early=early.pop(obj.object_type, None))
                counts[f"{phase}_{obj.object_type}"] = done.as_dict()
                ctx.emit("phase_finished", phase=phase, object_type=obj.object_type, detail=done.as_dict())
                if full and sweep.enabled:
                    restart(ctx, obj, sweep.clock())  # everything was just re-read: the next walk starts now
                elif sweep.enabled:
                    swept = sweep_object(ctx, obj, sweep, budget.share())
                    budget.spend(swept.requests)
                    if swept.requests or swept.behind:  # a run with nothing due keeps its counts as they were
                        counts[f"sweep_{obj.object_type}"] = swept.as_dict()
            # Pulled values staged on BigQuery land once a run (or, under serve, once an interval).
            warehouse.fold_pending()
            # Change detection compares with the folded state: what the pull merged is not sent back.
            warehouse.fold_journal()
        if direction in ("both", "push"):
            # While a push waits for its last answers, what it saved so far is folded (DuckDB), so
            # the run's own fold after the last answer is small.
            client.transport.while_waiting = _on_this_thread(warehouse.fold_journal_while_idle)
            for obj in order:
                # The name our writes are stamped with is learnt from the first answers; its check (one
                # read) goes out now, on the pool, so its round trip overlaps this push instead of
                # following the last one. Its outcome is applied after the push, as before.
                name_check = name_check or _start_name_check(warehouse, client)
                ctx.emit("phase_started", phase="push", object_type=obj.object_type)
                try:
                    pushed = push_object(ctx, obj)
                    counts[f"push_{obj.object_type}"] = pushed.as_dict()
                    counts[f"detect_{obj.object_type}"] = pushed.detection
                except PushAborted as stop:
                    counts[f"push_{obj.object_type}"] = stop.stats.as_dict() if stop.stats else {}
                    raise
                ctx.emit("phase_finished", phase="push", object_type=obj.object_type,
                         detail=counts[f"push_{obj.object_type}"])
        # Our key's name, once learnt: is it ours alone? (One request, once per name.)
        named = own_writes.check_key_name_once(warehouse, client, _name_checked(name_check))
        if named is not None and named.outcome == "unknown":
            ctx.warn(f"own-writes filter unverified: {named.said}")
        # The filter turned off during this run (a refused filter, an unstamped answer, a shared
        # name): said in the run's counts once, the run it happened.
        own_after = own_writes.status(warehouse, client.transport.base_url)
        if own_after != own_before and own_after.startswith("off"):
            ctx.warn(f"own-writes filter {own_after}", logged=True)
    except LeaseLost as exc:
        # Another writer holds the warehouse now: write nothing more of the sync's (the run's own
        # row and error rows are not fenced: they say how it ended).
        aborted = True
        reporter.record(object_type=None, operation="run", error=exc)
    except PushAborted as exc:
        aborted = True
        reporter.record(object_type=None, operation="push", error=exc.cause)
        if exc.cause.next_step is NextStep.FIX_CONFIG:
            _forget_setup(warehouse, client, schema)
    except TwentyError as exc:
        aborted = True
        reporter.record(object_type=None, operation="run", error=exc)
        if exc.next_step is NextStep.FIX_CONFIG:
            _forget_setup(warehouse, client, schema)
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt) or shutdown.interrupted():
            # Ctrl-C (DuckDB reports one that lands mid-statement as its own error): a person stopped
            # the run on purpose. It ends "interrupted", with no error to fix.
            interrupted = True
            raise
        # Not Twenty's doing (a warehouse failure, a bug): close the run as aborted, then re-raise.
        aborted = True
        reporter.record(object_type=None, operation="run", error=exc)
        raise
    finally:
        client.transport.while_waiting = None
        ChangedPages.close_unread(early)
        counts["errors"] = reporter.count
        counts["requests"] = client.transport.stats.requests - requests_before
        if ctx.warnings:
            counts["warnings"] = list(ctx.warnings)
        status = "interrupted" if interrupted else "aborted" if aborted else (
            "partial" if reporter.count else "succeeded")
        reporter.flush(warehouse)
        counts["errors_closed"] = 0
        try:
            _remember_batch_size(warehouse, client, known_batch_size)
            changelog.flush(ctx)  # the history of a run that stopped half-way through a phase
            # The closing fold gets the read cache's memory (a first push of 1M left 20,000 rows with
            # their bases) where reads are free (DuckDB; on BigQuery serve's webhooks read it, shed_read_cache).
            if warehouse.shed_read_cache():
                release_free_memory()  # each push released its own already: only the cache is new
            # Folds the run's journal first, then closes what the run saved clean.
            counts["errors_closed"] = warehouse.close_settled_errors(run_id=run_id,
                                                                     run_succeeded=status == "succeeded")
            # The record history past its retention, once a day (on BigQuery: the expired partitions only).
            expired = warehouse.expire_history_daily()
            if expired:
                counts["history_expired"] = expired
        except LeaseLost as exc:  # lost now, or earlier: the sync's bookkeeping stays as the new holder has it
            if not any(e["error_class"] == "LeaseLost" for e in reporter.sync_errors):
                reporter.record(object_type=None, operation="run", error=exc)
                reporter.flush(warehouse)
            status = "aborted"
            counts["errors"] = reporter.count
        spent = warehouse.statements.since(billed_before)
        counts["warehouse_statements"] = (spent["statements"] or 0) + 1  # and the finish_run below
        if spent["bytes_billed"] is not None:
            counts["bytes_billed"] = spent["bytes_billed"]
        warehouse.finish_run(run_id, status, counts)
        warehouse.checkpoint()
        ctx.emit("run_finished", detail={"run_id": run_id, "status": status, "counts": counts})
    log.info("Sync run %s %s: %s", run_id, status, counts)
    return SyncResult(run_id, status, counts, list(reporter.sync_errors))
