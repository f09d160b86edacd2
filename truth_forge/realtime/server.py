"""`truth-forge serve`: one long-running process that takes Twenty's webhooks and runs the
scheduled two-way sync behind them.

Why it exists: webhooks make edits in Twenty reach the warehouse in about a second, but Twenty
sends each event once and drops some, so a scheduled sync (the ordinary `run_sync`) still runs
every few minutes for completeness. The process has two halves:

* the request path (uvicorn with httptools): verify, store in the inbox (deliveries arriving
  together in one commit, truth_forge/realtime/group_commit.py), answer 200, all in a few
  milliseconds; it never touches the warehouse, so a slow MERGE or a running sync cannot make
  Twenty's 5-second delivery time out;
* the writer (a child process, truth_forge/realtime/writer.py, started again if it dies:
  truth_forge/realtime/supervisor.py): holds the warehouse's writer lease for as
  long as the server runs, applies the inbox in micro-batches and runs the scheduled sync, one
  thing at a time. On shutdown (after uvicorn has finished the requests in flight) it finishes what
  it is doing, applies what is already in the inbox (for a bounded time), then releases the lease.

`/healthz` says the process lives; `/readyz` says the writer holds the lease and works (it has
shown progress within `stall_seconds`); `/status` gives counts. It binds 127.0.0.1 unless told otherwise: the README shows a TLS reverse proxy.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Iterable
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from truth_forge.realtime.console_app import serve_console_routes
from truth_forge.realtime.group_commit import GroupCommit
from truth_forge.realtime.inbox import Arrival, Inbox
from truth_forge.realtime.supervisor import WriterProcess
from truth_forge.realtime.webhooks import (
    NONCE_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    Rejected,
    parse_event,
    verify_delivery,
)
from truth_forge.realtime.writer import ServeOptions, WriterSpec, now_ms

log = logging.getLogger(__name__)

WEBHOOK_PATH = "/webhooks/twenty"


# --- the request path ------------------------------------------------------------------------------


class WebhookApp:
    """The HTTP side: it verifies and stores; the writer does everything else.

    The webhook route is a bare ASGI handler in front of Starlette (which serves the status and
    console routes): at 1,000 events a second Starlette's request and response objects were a third of
    the request path's CPU, and the handler needs none of what they offer.
    """

    def __init__(self, *, secret: str, inbox: Inbox, writer: WriterProcess, options: ServeOptions) -> None:
        self._secret = secret
        self.inbox = inbox
        self.writer = writer
        self.options = options
        self.commit = GroupCommit(inbox)

    async def receive(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] != "POST":
            await _answer(send, 405, {"detail": "Method Not Allowed"}, ((b"allow", b"POST"),))
            return
        headers = _delivery_headers(scope["headers"])
        try:
            body = await _read_limited(headers, receive, self.options.max_body_bytes)
        except _ClientGone:
            return  # nothing to answer, nothing stored
        if body is None:
            await _refuse(send, Rejected(413, f"body larger than {self.options.max_body_bytes} bytes"))
            return
        received = now_ms()
        try:
            delivery = verify_delivery(self._secret, headers, body, now_ms=received,
                                       tolerance_ms=self.options.tolerance_ms)
            outcome = await self.commit.store(Arrival(delivery, parse_event(body), body, received))
        except Rejected as rejected:
            await _refuse(send, rejected)
            return
        except Exception:  # the inbox could not store it (logged by the commit thread): not acknowledged
            await _answer(send, 500, {"error": "the event could not be stored"})
            return
        await send(_START[outcome])
        await send({"type": "http.response.body", "body": _BODY[outcome]})

    async def healthz(self, request: Request) -> JSONResponse:
        ok = self.writer.alive
        return JSONResponse({"status": "ok" if ok else "writer stopped"}, status_code=200 if ok else 503)

    async def readyz(self, request: Request) -> JSONResponse:
        status = self.writer.status()
        state, detail = status["state"], status.get("detail", "")
        silent_s = (now_ms() - int(status.get("beat_ms") or now_ms())) / 1000
        if state == "ready" and silent_s > self.options.stall_seconds:
            # A writer stuck (on a Twenty request, a warehouse call) is not a working one.
            state, detail = "stalled", f"the writer has shown no progress for {silent_s:.0f} s"
        ready = state == "ready" and self.writer.alive
        return JSONResponse({"ready": ready, "state": state, "detail": detail}, status_code=200 if ready else 503)

    async def status(self, request: Request) -> JSONResponse:
        return JSONResponse({"writer": self.writer.status(), "inbox": self.inbox.counts(),
                             "receiver": {"commits": self.commit.commits}})

    def build(self) -> ASGIApp:
        @contextlib.asynccontextmanager
        async def lifespan(app: Starlette) -> AsyncIterator[None]:
            self.commit.start()
            self.writer.start()
            try:
                yield
            finally:
                # uvicorn has stopped accepting and finished in-flight requests: now the writer drains.
                loop = asyncio.get_running_loop()
                await loop.run_in_executor(None, self.commit.stop)
                await loop.run_in_executor(None, self.writer.stop)

        other_routes = Starlette(routes=[
            Route("/healthz", self.healthz, methods=["GET"]),
            Route("/readyz", self.readyz, methods=["GET"]),
            Route("/status", self.status, methods=["GET"]),
            *serve_console_routes(self),  # `/`, `/record`, `/metrics`: read-only, token beyond loopback
        ], lifespan=lifespan)

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "http" and scope["path"] == WEBHOOK_PATH:
                await self.receive(scope, receive, send)
            else:
                await other_routes(scope, receive, send)

        return app


class _ClientGone(Exception):
    """The client disconnected before its body was read."""


_WANTED_HEADERS = frozenset(name.encode("latin-1")
                            for name in (TIMESTAMP_HEADER, SIGNATURE_HEADER, NONCE_HEADER, "content-length"))


def _delivery_headers(raw: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """The headers a delivery is checked by, names lower-cased (ASGI servers give them so: only the
    wanted ones are decoded); the first of repeated ones, as Starlette's `headers.get` would."""
    found: dict[str, str] = {}
    for name, value in raw:
        if name in _WANTED_HEADERS:
            key = name.decode("latin-1")
            if key not in found:
                found[key] = value.decode("latin-1")
    return found


async def _read_limited(headers: dict[str, str], receive: Receive, limit: int) -> bytes | None:
    """The raw body, or None as soon as it is known to exceed `limit` (the rest is never read)."""
    declared = headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    message = await receive()
    if message["type"] == "http.disconnect":
        raise _ClientGone
    first: bytes = message.get("body", b"")
    if len(first) > limit:
        return None
    if not message.get("more_body", False):
        return first  # the whole body in one piece, the usual case: no copy
    body = bytearray(first)
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGone
        body += message.get("body", b"")
        if len(body) > limit:
            return None
        if not message.get("more_body", False):
            return bytes(body)


def _json_bytes(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _response_start(status: int, body: bytes, extra: tuple[tuple[bytes, bytes], ...] = ()) -> dict[str, Any]:
    return {"type": "http.response.start", "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *extra]}


# The acknowledgements, built once.
_BODY = {outcome: _json_bytes({"status": outcome}) for outcome in ("stored", "duplicate", "ignored")}
_START = {outcome: _response_start(200, body) for outcome, body in _BODY.items()}


async def _answer(send: Send, status: int, payload: dict[str, Any],
                  extra: tuple[tuple[bytes, bytes], ...] = ()) -> None:
    body = _json_bytes(payload)
    await send(_response_start(status, body, extra))
    await send({"type": "http.response.body", "body": body})


async def _refuse(send: Send, rejected: Rejected) -> None:
    # The reason says which check failed; it never holds the secret, the signature or the body.
    log.warning("Webhook refused (%d): %s", rejected.status, rejected.reason)
    await _answer(send, rejected.status, {"error": rejected.reason})


# --- running it ----------------------------------------------------------------------------------


def build_server(*, secret: str, inbox: Inbox, spec: WriterSpec) -> WebhookApp:
    return WebhookApp(secret=secret, inbox=inbox, writer=WriterProcess(spec, inbox), options=spec.options)


def uvicorn_server(app: WebhookApp, *, graceful_seconds: float = 10.0, own_logging: bool = True) -> uvicorn.Server:
    # httptools (C) parses a request in about half the CPU of h11 (pure Python): 0.07 against 0.15 ms
    # a request measured with a bare app, a fifth of the request path's CPU once the rest was lean.
    config = uvicorn.Config(app.build(), lifespan="on", log_level="warning", access_log=False, http="httptools",
                            loop="asyncio", timeout_graceful_shutdown=int(graceful_seconds), proxy_headers=False,
                            # uvicorn's own handlers print text; without them its lines reach the root's (JSON).
                            log_config=uvicorn.config.LOGGING_CONFIG if own_logging else None)
    return uvicorn.Server(config)
