"""The warehouse writer of `truth-forge serve`: a child process that holds the writer lease,
applies the webhook inbox in micro-batches and runs the scheduled sync, one thing at a time.

Why a process of its own: applying a batch is Python-heavy (mapping, hashing, bookkeeping) and
would compete for the interpreter lock with the request path, whose whole job is to answer
Twenty within milliseconds. Measured on 2 cores, a writer thread halved the acknowledgement rate
and let the inbox fall behind; as a process it costs the request path nothing. The two halves
share only the inbox file: the request path stores events, the writer takes them and reports its
state in the same file (`/readyz` and `/status` read it from there).

The writer runs at a lower CPU priority than the server (`WRITER_NICENESS`): when the cores are
busy the request path, whose answers Twenty waits for, goes first, and the writer, whose work
waits durably in the inbox, catches up in what is left. Measured on 2 cores paced at 1,000
events/s, this took the acknowledgement p99 from 65-70 ms to 37-50 ms (BENCHMARKS.md).

The writer stops when told (finishing what it is doing, then applying what is already in the
inbox for up to `drain_seconds`) or when its parent disappears (a SIGKILLed server): it then
finishes the batch or sync page under way, releases the lease and exits within about a second,
without draining: nobody is left to supervise it, and the next server applies what waits.
A writer that dies is replaced by the server (truth_forge/realtime/supervisor.py). A scheduled sync under
way is stopped the way SIGTERM stops `truth-forge sync` (truth_forge/core/shutdown.py): no new request
to Twenty leaves, those on the wire finish within their deadline and are recorded, the run closes
as aborted. So a shutdown never waits on a stalled Twenty.

The writer also beats: its published status carries the time it last made progress (a loop turn,
a page or batch of a sync). `/readyz` stops saying ready when the beat is older than
`stall_seconds`, so a writer stuck on a request is seen as not ready, not taken for a working one.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Protocol

from truth_forge.core import shutdown
from truth_forge.core.crm_schema import CrmSchema
from truth_forge.core.lease import WriterLease
from truth_forge.core.reporting import ErrorReporter
from truth_forge.core.secrets import redact
from truth_forge.operations.logs import current_run_id, set_run_id, tracking_run_id, use_json_logs
from truth_forge.operations.snapshot import Throttle, write_snapshot
from truth_forge.realtime.applier import ApplyStats, apply_events
from truth_forge.realtime.inbox import MAX_ATTEMPTS, Inbox
from truth_forge.realtime.webhooks import DEFAULT_TOLERANCE_MS
from truth_forge.sync.context import SyncContext
from truth_forge.sync.runner import run_sync
from truth_forge.sync.sweep import SweepPolicy
from truth_forge.twenty.client import TwentyClient
from truth_forge.warehouse.detection import DetectionPolicy

log = logging.getLogger(__name__)

POLL_SECONDS = 0.05  # how often an idle writer looks at the inbox
BEAT_SECONDS = 1.0  # how often the writer's status is republished to show it is making progress
WRITER_NICENESS = 10  # added to the writer's nice value: the request path gets the CPU first
RETRY_PAUSE_MAX = 60.0  # seconds between attempts once failures in a row have doubled the pause this far


@dataclass
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 8787
    sync_interval: float = 600.0  # seconds between scheduled syncs
    sync_on_start: bool = True  # a first sync at start-up catches what came while the server was down
    tolerance_ms: int = DEFAULT_TOLERANCE_MS
    max_body_bytes: int = 1_048_576
    batch_size: int = 500  # events per micro-batch at most
    # A batch costs about the same for 10 events as for 300 (a fixed number of statements), so the
    # writer lets a partial batch gather for up to this long; it is the floor of the apply delay.
    batch_window: float = 0.25
    # Minutes pulled values wait in crm_sync_pending before a scheduled sync lands them (BigQuery).
    fold_minutes: float = 0.0
    lease_ttl: dt.timedelta = dt.timedelta(seconds=60)
    detection: DetectionPolicy = field(default_factory=DetectionPolicy)  # how scheduled syncs find changes
    sweep: SweepPolicy = field(default_factory=SweepPolicy)  # how scheduled syncs pace the rolling re-read
    lease_poll: float = 1.0  # seconds between attempts while another writer holds the lease
    drain_seconds: float = 30.0  # how long shutdown keeps applying what is already in the inbox
    # A writer that dies is replaced after this pause, doubled after each quick failure up to the max
    # (truth_forge/realtime/supervisor.py).
    restart_backoff: float = 1.0
    restart_backoff_max: float = 60.0
    retry_pause: float = 2.0  # after a failed batch; doubled after each failure in a row, up to RETRY_PAUSE_MAX
    # No progress for this long (no loop turn, no page or batch of a sync) and `/readyz` says stalled;
    # the default is two request deadlines: one request at its longest, and as long again around it.
    stall_seconds: float = 240.0
    # Asked of the console and /metrics when `host` is beyond loopback (realtime/console_app.py).
    console_token: str | None = field(default=None, repr=False)


@dataclass
class WriterSpec:
    """Everything the writer process needs, as plain picklable values (it starts from nothing)."""

    inbox_path: str
    warehouse_url: str
    twenty_base_url: str
    api_key: str = field(repr=False)
    options: ServeOptions
    warehouse_tables: dict[str, str] = field(default_factory=dict)
    schema_file: Path | None = None
    client_options: dict[str, Any] = field(default_factory=dict)
    secrets: tuple[str, ...] = field(default=(), repr=False)  # never written anywhere
    log_level: int = logging.INFO
    log_format: str = "text"  # "json": the writer's lines as JSON objects too (truth_forge/operations/logs.py)


class StopSignal(Protocol):
    def is_set(self) -> bool: ...
    def wait(self, timeout: float | None = None) -> bool: ...


class StopPipe:
    """The writer's end of a pipe from the server: readable (a byte, or end of file once the
    server closed its end or died) means stop. A pipe rather than a shared multiprocessing.Event:
    a writer SIGKILLed inside the Event's lock would leave it held, and the server's `set()` on its
    next stop would wait forever."""

    def __init__(self, end: Connection) -> None:
        self._end = end

    def is_set(self) -> bool:
        return self.wait(0)

    def wait(self, timeout: float | None = None) -> bool:
        try:
            return self._end.poll(timeout)
        except OSError:  # closed on this side: nothing more to wait for
            return True


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class WriterStatus:
    state: str = "starting"  # starting | waiting-for-lease | ready | stopping | stopped | failed
    detail: str = ""
    applied: ApplyStats = field(default_factory=ApplyStats)
    batches: int = 0
    failed_batches: int = 0
    syncs: int = 0
    last_sync: dict[str, Any] | None = None
    beat_ms: int = 0  # when the writer last showed progress (its clock, milliseconds since the epoch)
    # The client's request budget as last seen: requests sent since start, tokens left, bucket size
    # (only this process holds the client; /metrics reads it from here).
    twenty: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"state": self.state, "detail": self.detail, "applied": self.applied.as_dict(),
                "batches": self.batches, "failed_batches": self.failed_batches, "syncs": self.syncs,
                "last_sync": self.last_sync, "beat_ms": self.beat_ms, "twenty": self.twenty}


def writer_main(spec: WriterSpec, stop_end: Connection, parent_pid: int, previous_exit: str | None = None) -> None:
    """Entry point of the writer process. `stop_end`: the reading end of the server's stop pipe;
    `previous_exit`: why the writer before this one ended (recorded as an error row once the lease
    is held)."""
    stop = StopPipe(stop_end)
    os.nice(WRITER_NICENESS)
    # Ctrl-C or a service manager's SIGTERM reaches the whole process group; the parent decides
    # when the writer stops (after uvicorn finished its requests), so the writer ignores both.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(level=spec.log_level, format="%(asctime)s %(levelname)s %(name)s[writer]: %(message)s")
    if spec.log_format == "json":
        use_json_logs()
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.INFO)
    from truth_forge.warehouse import open_warehouse

    threading.Thread(target=_stop_requests_when_told, args=(stop, parent_pid), name="writer-stop",
                     daemon=True).start()
    inbox = Inbox(spec.inbox_path, fsync_commits=False)  # what it writes there is safe to lose (inbox.py)
    client = TwentyClient(spec.twenty_base_url, spec.api_key, **spec.client_options)
    try:
        Writer(inbox=inbox, open_warehouse=lambda: open_warehouse(spec.warehouse_url, tables=spec.warehouse_tables),
               client=client, schema=CrmSchema.load(spec.schema_file), options=spec.options, stop=stop,
               parent_pid=parent_pid, secrets=(spec.api_key, *spec.secrets), warehouse_url=spec.warehouse_url,
               previous_exit=previous_exit).run()
    finally:
        client.close()
        inbox.close()


def _stop_requests_when_told(stop: StopSignal, parent_pid: int) -> None:
    """Once the server says stop (or is gone), no new request to Twenty leaves this process."""
    while not stop.wait(1.0):
        if os.getppid() != parent_pid:
            break
    shutdown.request_stop("serve is stopping")


class Writer:
    """The loop of the writer process; see the module docstring."""

    def __init__(self, *, inbox: Inbox, open_warehouse: Any, client: TwentyClient, schema: CrmSchema,
                 options: ServeOptions, stop: StopSignal, parent_pid: int, secrets: tuple[str, ...] = (),
                 warehouse_url: str | None = None, previous_exit: str | None = None) -> None:
        self.inbox = inbox
        self.previous_exit = previous_exit
        # Where status, runs and errors find what this process holds the DuckDB file for (snapshot.py).
        self.warehouse_url = warehouse_url
        self.snapshots = Throttle()
        self.open_warehouse = open_warehouse
        self.client = client
        self.schema = schema
        self.options = options
        self.stop = stop
        self.parent_pid = parent_pid
        self.secrets = (*secrets, *client.transport.secrets)
        self.status = WriterStatus()
        # After a failed batch: how many events the next attempt takes, and not before when.
        self._batch_limit = options.batch_size
        self._failed_in_a_row = 0
        self._retry_at = 0.0

    def _stopping(self) -> bool:
        return self.stop.is_set() or self._orphaned()

    def _orphaned(self) -> bool:
        return os.getppid() != self.parent_pid

    def _pause(self, seconds: float) -> None:
        self.stop.wait(min(seconds, 1.0))  # never longer than a second: the parent may be gone

    def _publish(self, state: str | None = None, detail: str | None = None) -> None:
        if state is not None:
            self.status.state = state
        if detail is not None:
            self.status.detail = detail
        self.status.beat_ms = now_ms()
        transport = self.client.transport
        self.status.twenty = {"requests": transport.stats.requests, "tokens_left": transport.budget.tokens_left(),
                              "capacity": transport.budget.capacity, "per_minute": transport.budget.rate * 60}
        self.inbox.save_writer_status(self.status.as_dict())

    def _beat(self, *_event: Any) -> None:
        """Show progress, at most once a `BEAT_SECONDS` (also the event hook of scheduled syncs)."""
        if now_ms() - self.status.beat_ms >= BEAT_SECONDS * 1000:
            self._publish()

    def run(self) -> None:
        self._publish("starting")
        try:
            warehouse = self.open_warehouse()
        except Exception as exc:
            self._fail(exc)
            return
        warehouse.pending_fold_minutes = self.options.fold_minutes
        try:
            lease = WriterLease(warehouse, purpose=f"serve (server pid {self.parent_pid})", ttl=self.options.lease_ttl)
            setting_out = dt.datetime.now(dt.UTC)
            if self._claim(lease):
                # Runs still `running` from before we sought the lease belong to writers that are gone.
                warehouse.close_stale_runs(before=setting_out, closed_by=f"serve (server pid {self.parent_pid})")
                try:
                    self._work(warehouse, lease)
                finally:
                    lease.release()
            self._publish("stopped", "")
        except Exception as exc:
            self._fail(exc)
        finally:
            warehouse.close()

    def _fail(self, exc: BaseException) -> None:
        self._publish("failed", redact(f"{type(exc).__name__}: {exc}", *self.secrets))
        log.error("The warehouse writer stopped: %s", self.status.detail)

    def _claim(self, lease: WriterLease) -> bool:
        """Wait for the writer lease until we get it or must stop; events keep queueing meanwhile."""
        while not self._stopping():
            row = lease.try_acquire()
            if lease.held:
                lease.start_renewing()
                self._publish("ready", "")
                return True
            self._publish("waiting-for-lease", f"the warehouse's writer lease is held by {row.get('owner')!r}")
            log.info("Waiting: %s", self.status.detail)
            deadline = time.monotonic() + self.options.lease_poll
            while time.monotonic() < deadline and not self._stopping():
                self._pause(deadline - time.monotonic())
        return False

    def _work(self, warehouse: Any, lease: WriterLease) -> None:
        run_id = warehouse.start_run()
        set_run_id(run_id)  # the webhook run: what the writer logs between scheduled syncs belongs to it
        reporter = ErrorReporter(run_id, self.secrets)
        ctx = SyncContext(warehouse, self.client, self.schema, reporter, via="webhook")
        if self.previous_exit:  # the writer before this one died: a run-level error, as other failures are
            reporter.record(object_type=None, operation="writer", error=self.previous_exit)
            reporter.flush(warehouse)
        next_sync = time.monotonic() + (0.0 if self.options.sync_on_start else self.options.sync_interval)
        try:
            while not self._stopping():
                self._beat()
                if lease.lost:
                    if not self._claim(lease):
                        break
                    warehouse.forget_pending()  # another writer may have staged or landed values meanwhile
                if time.monotonic() >= next_sync:
                    self._scheduled_sync(warehouse, lease)
                    self.inbox.prune(now_ms(), self.options.tolerance_ms)
                    next_sync = time.monotonic() + self.options.sync_interval
                elif not self._apply_next_batch(ctx):
                    self._pause(min(POLL_SECONDS, max(0.0, next_sync - time.monotonic())))
            self._publish("stopping")
            if not self._orphaned():
                self._drain(ctx, lease)
        finally:
            counts = {"webhooks": self.status.applied.as_dict(), "batches": self.status.batches,
                      "failed_batches": self.status.failed_batches, "syncs": self.status.syncs}
            reporter.flush(warehouse)
            warehouse.finish_run(run_id, "partial" if reporter.count else "succeeded", counts)
            warehouse.checkpoint()
            self._snapshot(warehouse)

    def _drain(self, ctx: SyncContext, lease: WriterLease) -> None:
        deadline = time.monotonic() + self.options.drain_seconds
        while time.monotonic() < deadline and not lease.lost and not self._orphaned():
            if not self._apply_next_batch(ctx, draining=True):
                return

    def _apply_next_batch(self, ctx: SyncContext, *, draining: bool = False) -> bool:
        """Apply the oldest pending events; False when there were none, while a batch gathers or a
        failed one waits for its retry, or when a batch failed while draining."""
        if not draining and time.monotonic() < self._retry_at:
            return False
        limit = self._batch_limit
        arrivals = self.inbox.pending_arrivals(limit)
        if not arrivals:
            return False
        if len(arrivals) < limit and not draining:
            self._pause(self._gathering(arrivals[0]))  # a second at most: the loop must stay responsive
            if self._gathering(arrivals[0]) > 0:
                return False  # still gathering: the loop comes back (a window can be minutes long)
        items = self.inbox.pending(limit)  # read (and decoded) once, after the wait
        seqs = [item.seq for item in items]
        try:
            stats = apply_events(ctx, [i.event for i in items])
            ctx.reporter.flush(ctx.warehouse)
        except Exception as exc:
            self._batch_failed(ctx, seqs, redact(f"{type(exc).__name__}: {exc}", *self.secrets))
            return not draining
        self._failed_in_a_row, self._batch_limit = 0, self.options.batch_size
        self.inbox.mark_applied(seqs)
        self.status.applied.add(stats)
        self.status.batches += 1
        self._publish()
        if self.snapshots.due():
            self._snapshot(ctx.warehouse)
        log.debug("Applied %d webhook events (oldest waited %d ms)", len(items), now_ms() - items[0].received_ms)
        return True

    def _batch_failed(self, ctx: SyncContext, seqs: list[int], message: str) -> None:
        """A batch that failed as a whole says nothing of any one of its events (a warehouse outage
        fails them all), so none is counted against it: the next attempt takes half as many, and an
        event that cannot be applied ends up alone. Only an event failing alone is counted, and set
        aside after `inbox.MAX_ATTEMPTS` (the scheduled pull still reads its record). Retries back off,
        doubling from `retry_pause` up to RETRY_PAUSE_MAX: a long outage sets aside one event per
        five retries at most, not a whole window's batch within seconds."""
        if len(seqs) == 1:
            self.inbox.mark_attempt_failed(seqs, message)
            log.error("Applying a webhook event failed (it stays in the inbox until it has failed %d times): %s",
                      MAX_ATTEMPTS, message)
        else:
            self._batch_limit = max(1, len(seqs) // 2)
            log.error("Applying %d webhook events failed (they stay in the inbox; the next attempt takes %d): %s",
                      len(seqs), self._batch_limit, message)
        self._failed_in_a_row += 1
        pause = min(self.options.retry_pause * 2 ** min(self._failed_in_a_row - 1, 16), RETRY_PAUSE_MAX)
        self._retry_at = time.monotonic() + pause
        self.status.failed_batches += 1
        ctx.reporter.record(object_type=None, operation="webhook", error=message)
        self._publish()

    def _gathering(self, oldest_arrival_ms: int) -> float:
        """Seconds the batch whose oldest event arrived then may still gather."""
        return max(0.0, self.options.batch_window - (now_ms() - oldest_arrival_ms) / 1000)

    def _scheduled_sync(self, warehouse: Any, lease: WriterLease) -> None:
        webhook_run = current_run_id()
        try:
            result = run_sync(warehouse, self.client, self.schema, lease=lease, secrets=self.secrets,
                              detection=self.options.detection, sweep=self.options.sweep,
                              on_event=tracking_run_id(self._beat))
        except Exception as exc:  # a warehouse outage, say: the next interval tries again
            self.status.last_sync = {"status": "failed", "error": redact(str(exc), *self.secrets)}
            set_run_id(webhook_run)
            log.error("Scheduled sync failed: %s", self.status.last_sync["error"])
        else:
            self.status.last_sync = {"run_id": result.run_id, "status": result.status, "counts": result.counts}
        self.status.syncs += 1
        self._publish()
        self._snapshot(warehouse)

    def _snapshot(self, warehouse: Any) -> None:
        if self.warehouse_url is not None:
            write_snapshot(warehouse, self.warehouse_url)
