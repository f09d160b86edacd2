"""`truth-forge serve`: one long-running process that takes Twenty's webhooks and runs the
scheduled two-way sync behind them.

Why it exists: webhooks make edits in Twenty reach the warehouse in about a second, but Twenty
sends each event once and drops some, so a scheduled sync (the ordinary `run_sync`) still runs
every few minutes for completeness. The process has two halves:

* the request path (Starlette on uvicorn): verify, store in the inbox, answer 200, all in a few
  milliseconds; it never touches the warehouse, so a slow MERGE or a running sync cannot make
  Twenty's 5-second delivery time out;
* the writer (one thread): holds the warehouse's writer lease for as long as the process runs,
  applies the inbox in micro-batches and runs the scheduled sync, one thing at a time. On shutdown
  it finishes what it is doing, applies what is already in the inbox (for a bounded time), then
  releases the lease.

`/healthz` says the process lives; `/readyz` says the writer holds the lease and works; `/status`
gives counts. It binds 127.0.0.1 unless told otherwise: the README shows a TLS reverse proxy.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from truth_forge.applier import ApplyStats, apply_events
from truth_forge.crm_schema import CrmSchema
from truth_forge.inbox import Inbox
from truth_forge.lease import WriterLease
from truth_forge.reporting import ErrorReporter
from truth_forge.secrets import redact
from truth_forge.sync.runner import run_sync
from truth_forge.twenty.client import TwentyClient
from truth_forge.webhooks import DEFAULT_TOLERANCE_MS, Rejected, parse_event, verify_delivery

log = logging.getLogger(__name__)

WEBHOOK_PATH = "/webhooks/twenty"


@dataclass
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 8787
    sync_interval: float = 600.0  # seconds between scheduled syncs
    sync_on_start: bool = True  # a first sync at start-up catches what came while the server was down
    tolerance_ms: int = DEFAULT_TOLERANCE_MS
    max_body_bytes: int = 1_048_576
    batch_size: int = 500  # events per micro-batch at most
    lease_ttl: dt.timedelta = dt.timedelta(seconds=60)
    lease_poll: float = 1.0  # seconds between attempts while another writer holds the lease
    drain_seconds: float = 30.0  # how long shutdown keeps applying what is already in the inbox
    retry_pause: float = 2.0  # after a failed batch


def now_ms() -> int:
    return time.time_ns() // 1_000_000


# --- the writer --------------------------------------------------------------------------------------


@dataclass
class WriterStatus:
    state: str = "starting"  # starting | waiting-for-lease | ready | stopping | stopped | failed
    detail: str = ""
    applied: ApplyStats = field(default_factory=ApplyStats)
    batches: int = 0
    failed_batches: int = 0
    syncs: int = 0
    last_sync: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"state": self.state, "detail": self.detail, "applied": self.applied.as_dict(),
                "batches": self.batches, "failed_batches": self.failed_batches, "syncs": self.syncs,
                "last_sync": self.last_sync}


class Writer:
    """The only thread that writes the warehouse; see the module docstring."""

    def __init__(self, *, inbox: Inbox, open_warehouse: Callable[[], Any], client: TwentyClient,
                 schema: CrmSchema, options: ServeOptions, secrets: tuple[str, ...] = ()) -> None:
        self.inbox = inbox
        self.open_warehouse = open_warehouse
        self.client = client
        self.schema = schema
        self.options = options
        self.secrets = (*secrets, *client.transport.secrets)
        self.status = WriterStatus()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="warehouse-writer", daemon=True)

    @property
    def ready(self) -> bool:
        return self.status.state == "ready"

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() or self.status.state == "stopped"

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Ask the writer to finish (current work, then the inbox for up to drain_seconds) and wait."""
        self._stop.set()
        self.inbox.arrived.set()
        self._thread.join(timeout if timeout is not None else self.options.drain_seconds + 30)

    def _run(self) -> None:
        try:
            warehouse = self.open_warehouse()
        except Exception as exc:
            self._fail(exc)
            return
        try:
            lease = WriterLease(warehouse, purpose="serve", ttl=self.options.lease_ttl)
            if self._claim(lease):
                try:
                    self._work(warehouse, lease)
                finally:
                    lease.release()
            self.status.state = "stopped"
        except Exception as exc:
            self._fail(exc)
        finally:
            warehouse.close()

    def _fail(self, exc: BaseException) -> None:
        self.status.state, self.status.detail = "failed", redact(f"{type(exc).__name__}: {exc}", *self.secrets)
        log.error("The warehouse writer stopped: %s", self.status.detail)

    def _claim(self, lease: WriterLease) -> bool:
        """Wait for the writer lease until we get it or are told to stop; events queue meanwhile."""
        while not self._stop.is_set():
            row = lease.try_acquire()
            if lease.held:
                lease.start_renewing()
                self.status.state, self.status.detail = "ready", ""
                return True
            self.status.state = "waiting-for-lease"
            self.status.detail = f"the warehouse's writer lease is held by {row.get('owner')!r}"
            log.info("Waiting: %s", self.status.detail)
            self._stop.wait(self.options.lease_poll)
        return False

    def _work(self, warehouse: Any, lease: WriterLease) -> None:
        run_id = warehouse.start_run()
        reporter = ErrorReporter(run_id, self.secrets)
        next_sync = time.monotonic() + (0.0 if self.options.sync_on_start else self.options.sync_interval)
        try:
            while not self._stop.is_set():
                if lease.lost and not self._claim(lease):
                    break
                if time.monotonic() >= next_sync:
                    self._scheduled_sync(warehouse, lease)
                    self.inbox.prune(now_ms(), self.options.tolerance_ms)
                    next_sync = time.monotonic() + self.options.sync_interval
                    continue
                self.inbox.arrived.clear()
                if self._apply_next_batch(warehouse, reporter):
                    continue
                self.inbox.arrived.wait(timeout=max(0.0, min(1.0, next_sync - time.monotonic())))
            self.status.state = "stopping"
            self._drain(warehouse, reporter, lease)
        finally:
            counts = {"webhooks": self.status.applied.as_dict(), "batches": self.status.batches,
                      "failed_batches": self.status.failed_batches, "syncs": self.status.syncs}
            reporter.flush(warehouse)
            warehouse.finish_run(run_id, "partial" if reporter.count else "succeeded", counts)
            warehouse.checkpoint()

    def _drain(self, warehouse: Any, reporter: ErrorReporter, lease: WriterLease) -> None:
        deadline = time.monotonic() + self.options.drain_seconds
        while time.monotonic() < deadline and not lease.lost:
            if not self._apply_next_batch(warehouse, reporter, pause_after_failure=False):
                return

    def _apply_next_batch(self, warehouse: Any, reporter: ErrorReporter, *, pause_after_failure: bool = True) -> bool:
        """Apply the oldest pending events; False when there were none (or the batch failed on shutdown)."""
        items = self.inbox.pending(self.options.batch_size)
        if not items:
            return False
        seqs = [item.seq for item in items]
        try:
            stats = apply_events(warehouse, self.client, self.schema, [i.event for i in items], reporter)
            reporter.flush(warehouse)
        except Exception as exc:
            message = redact(f"{type(exc).__name__}: {exc}", *self.secrets)
            log.error("Applying %d webhook events failed (they stay in the inbox): %s", len(items), message)
            self.inbox.mark_attempt_failed(seqs, message)
            self.status.failed_batches += 1
            reporter.record(object_type=None, operation="webhook", error=message)
            if pause_after_failure:
                self._stop.wait(self.options.retry_pause)
            return pause_after_failure
        self.inbox.mark_applied(seqs)
        self.status.applied.add(stats)
        self.status.batches += 1
        log.debug("Applied %d webhook events (oldest waited %d ms)", len(items), now_ms() - items[0].received_ms)
        return True

    def _scheduled_sync(self, warehouse: Any, lease: WriterLease) -> None:
        try:
            result = run_sync(warehouse, self.client, self.schema, lease=lease,
                              secrets=self.secrets)
        except Exception as exc:  # a warehouse outage, say: the next interval tries again
            self.status.last_sync = {"status": "failed", "error": redact(str(exc), *self.secrets)}
            log.error("Scheduled sync failed: %s", self.status.last_sync["error"])
        else:
            self.status.last_sync = {"run_id": result.run_id, "status": result.status, "counts": result.counts}
        self.status.syncs += 1


# --- the request path ------------------------------------------------------------------------------


class WebhookApp:
    """The HTTP side: it verifies and stores; the writer does everything else."""

    def __init__(self, *, secret: str, inbox: Inbox, writer: Writer, options: ServeOptions) -> None:
        self._secret = secret
        self.inbox = inbox
        self.writer = writer
        self.options = options

    async def receive(self, request: Request) -> JSONResponse:
        body = await _read_limited(request, self.options.max_body_bytes)
        if body is None:
            return _refuse(Rejected(413, f"body larger than {self.options.max_body_bytes} bytes"))
        received = now_ms()
        try:
            delivery = verify_delivery(self._secret, request.headers, body, now_ms=received,
                                       tolerance_ms=self.options.tolerance_ms)
            outcome = self.inbox.accept(delivery, parse_event(body), body, received)
        except Rejected as rejected:
            return _refuse(rejected)
        return JSONResponse({"status": outcome})

    async def healthz(self, request: Request) -> JSONResponse:
        ok = self.writer.alive
        return JSONResponse({"status": "ok" if ok else "writer stopped"}, status_code=200 if ok else 503)

    async def readyz(self, request: Request) -> JSONResponse:
        status = self.writer.status
        return JSONResponse({"ready": self.writer.ready, "state": status.state, "detail": status.detail},
                            status_code=200 if self.writer.ready else 503)

    async def status(self, request: Request) -> JSONResponse:
        return JSONResponse({"writer": self.writer.status.as_dict(), "inbox": self.inbox.counts()})

    def build(self) -> Starlette:
        @contextlib.asynccontextmanager
        async def lifespan(app: Starlette) -> AsyncIterator[None]:
            self.writer.start()
            try:
                yield
            finally:
                # uvicorn has stopped accepting and finished in-flight requests: now the writer drains.
                self.writer.stop()

        return Starlette(routes=[
            Route(WEBHOOK_PATH, self.receive, methods=["POST"]),
            Route("/healthz", self.healthz, methods=["GET"]),
            Route("/readyz", self.readyz, methods=["GET"]),
            Route("/status", self.status, methods=["GET"]),
        ], lifespan=lifespan)


async def _read_limited(request: Request, limit: int) -> bytes | None:
    """The raw body, or None as soon as it is known to exceed `limit` (the rest is never read)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


def _refuse(rejected: Rejected) -> JSONResponse:
    # The reason says which check failed; it never holds the secret, the signature or the body.
    log.warning("Webhook refused (%d): %s", rejected.status, rejected.reason)
    return JSONResponse({"error": rejected.reason}, status_code=rejected.status)


# --- running it ----------------------------------------------------------------------------------


def build_server(*, secret: str, inbox: Inbox, open_warehouse: Callable[[], Any], client: TwentyClient,
                 schema: CrmSchema, options: ServeOptions) -> WebhookApp:
    writer = Writer(inbox=inbox, open_warehouse=open_warehouse, client=client, schema=schema, options=options,
                    secrets=(secret,))
    return WebhookApp(secret=secret, inbox=inbox, writer=writer, options=options)


def bind_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP so asyncio sets TCP_NODELAY (without it small answers wait on Nagle's algorithm).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


def uvicorn_server(app: WebhookApp, *, graceful_seconds: float = 10.0) -> uvicorn.Server:
    config = uvicorn.Config(app.build(), lifespan="on", log_level="warning", access_log=False, http="h11",
                            timeout_graceful_shutdown=int(graceful_seconds), proxy_headers=False)
    return uvicorn.Server(config)
