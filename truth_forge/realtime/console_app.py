"""The console's HTTP side: `/`, `/record` and (in `serve`) `/metrics`, behind a token whenever the
server listens beyond the loopback interface.

Why it exists: the same read-only pages are answered by `serve` (next to its webhooks) and by
`truth-forge console` alone, so the routes, the token check and the off-loop reads live here once.
The pages are read in a worker thread (a warehouse read must never stall the webhook path).

Access: on 127.0.0.1 (or ::1, localhost) no token is asked. Bound elsewhere, every console and
metrics request must carry the token, as `Authorization: Bearer TOKEN` (Prometheus' bearer_token)
or as the cookie a browser gets by opening any page once with `?token=TOKEN` (it is then sent back
to the same URL without the token, so the token does not stay in the address bar or history).
The token is compared in constant time and never logged nor shown.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlencode

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from truth_forge.core.secrets import redact
from truth_forge.operations import console_page, metrics
from truth_forge.operations.console_reads import CACHE_SECONDS as CACHE_SECONDS_IN_SERVE
from truth_forge.operations.console_reads import ConsoleReads, Overview
from truth_forge.warehouse.errors import WarehouseError

log = logging.getLogger(__name__)

COOKIE = "truth_forge_console"
TOKEN_SETTING = "TRUTH_FORGE_CONSOLE_TOKEN"
_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff",
            # No script runs on these pages, from anywhere; styles are inline.
            "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; "
                                       "form-action 'self'; frame-ancestors 'none'",
            "Referrer-Policy": "no-referrer"}


def is_loopback(host: str) -> bool:
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass
class ConsoleAccess:
    """Who may read: anyone on loopback; elsewhere only a request carrying `token`."""

    host: str
    token: str | None = field(default=None, repr=False)

    @property
    def token_required(self) -> bool:
        return not is_loopback(self.host)

    def refusal(self, request: Request) -> Response | None:
        """None when the request may read; otherwise the response to send instead."""
        if not self.token_required:
            return None
        if not self.token:
            return PlainTextResponse(f"The console is bound to {self.host}, beyond loopback, and no token is set: "
                                     f"set {TOKEN_SETTING}.", status_code=403, headers=_HEADERS)
        given_query = request.query_params.get("token")
        if given_query is not None and self._matches(given_query):
            # Trade the token in the address for a cookie, and drop it from the address.
            rest = urlencode([(k, v) for k, v in request.query_params.multi_items() if k != "token"])
            response = RedirectResponse(request.url.path + (f"?{rest}" if rest else ""), status_code=303,
                                        headers=_HEADERS)
            response.set_cookie(COOKIE, self.token, httponly=True, samesite="strict", path="/")
            return response
        bearer = request.headers.get("authorization", "")
        given = bearer[7:] if bearer[:7].lower() == "bearer " else request.cookies.get(COOKIE, "")
        if given and self._matches(given):
            return None
        return PlainTextResponse("A token is required: `Authorization: Bearer TOKEN`, or open the page once "
                                 "with ?token=TOKEN.", status_code=401,
                                 headers={**_HEADERS, "WWW-Authenticate": 'Bearer realm="truth-forge"'})

    def _matches(self, given: str) -> bool:
        assert self.token is not None
        return hmac.compare_digest(given.encode("utf-8"), self.token.encode("utf-8"))


class ServeSide(Protocol):
    """What /metrics reads from `serve` (realtime/server.py's WebhookApp): its writer's report and the inbox."""

    def writer_report(self) -> dict[str, Any]: ...
    def inbox_counts(self) -> dict[str, int]: ...
    def oldest_pending_ms(self) -> int | None: ...


@dataclass
class Console:
    reads: ConsoleReads
    access: ConsoleAccess
    requests_per_minute: float
    serve: ServeSide | None = None  # set inside `serve`: /metrics is answered too

    def _guarded(self, handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
        async def guarded(request: Request) -> Response:
            refused = self.access.refusal(request)
            if refused is not None:
                return refused
            try:
                return await handler(request)
            except WarehouseError as exc:
                # A missing file, BigQuery unreachable: say so on the page; the token never appears.
                message = redact(f"{type(exc).__name__}: {exc}", *(t for t in (self.access.token,) if t))
                log.warning("The console could not read the warehouse: %s", message)
                return HTMLResponse(console_page.message_page("The warehouse could not be read", message),
                                    status_code=503, headers=_HEADERS)
        return guarded

    async def overview(self, request: Request) -> Response:
        overview = await run_in_threadpool(self.reads.overview)
        return HTMLResponse(console_page.overview_page(overview, requests_per_minute=self.requests_per_minute),
                            headers=_HEADERS)

    async def record(self, request: Request) -> Response:
        object_type = request.query_params.get("type", "person")
        asked = request.query_params.get("key") or request.query_params.get("id") or ""
        if not asked.strip():
            return HTMLResponse(console_page.message_page("Record lookup", "Give a warehouse key or a Twenty id."),
                                status_code=400, headers=_HEADERS)
        try:
            lookup = await run_in_threadpool(self.reads.record, object_type, asked)
        except ValueError as exc:
            return HTMLResponse(console_page.message_page("Record lookup", str(exc)), status_code=400,
                                headers=_HEADERS)
        return HTMLResponse(console_page.record_page(lookup, source=self.reads.warehouse_url), headers=_HEADERS)

    async def metrics(self, request: Request) -> Response:
        assert self.serve is not None
        serve = self.serve

        def gather() -> str:
            try:
                overview, readable = self.reads.overview(), True
            except WarehouseError as exc:  # the webhook side's figures still go out
                log.warning("/metrics could not read the warehouse: %s: %s", type(exc).__name__, exc)
                overview, readable = Overview([], [], 0, [], source="unreadable"), False
            collected = metrics.collect(overview, writer=serve.writer_report(),
                                        inbox_counts=serve.inbox_counts(), oldest_pending_ms=serve.oldest_pending_ms(),
                                        now_ms=time.time_ns() // 1_000_000,
                                        requests_per_minute=self.requests_per_minute)
            collected.append(metrics.Metric(f"{metrics.PREFIX}warehouse_readable", "gauge",
                                            "1 when the runs and errors above could be read").add(float(readable)))
            return metrics.render(collected)

        return Response(await run_in_threadpool(gather), media_type=metrics.CONTENT_TYPE,
                        headers={"Cache-Control": "no-store"})

    def routes(self) -> list[Route]:
        routes = [Route("/", self._guarded(self.overview), methods=["GET"]),
                  Route("/record", self._guarded(self.record), methods=["GET"])]
        if self.serve is not None:
            routes.append(Route("/metrics", self._guarded(self.metrics), methods=["GET"]))
        return routes

    def app(self) -> Starlette:
        return Starlette(routes=self.routes())


class _ServeFigures:
    """/metrics' view of a running `serve`: its writer's report and its inbox."""

    def __init__(self, webhook_app: Any) -> None:
        self._app = webhook_app

    def writer_report(self) -> dict[str, Any]:
        return dict(self._app.writer.status())

    def inbox_counts(self) -> dict[str, int]:
        return dict(self._app.inbox.counts())

    def oldest_pending_ms(self) -> int | None:
        oldest = self._app.inbox.pending(1)
        return oldest[0].received_ms if oldest else None


def serve_console_routes(webhook_app: Any) -> list[Route]:
    """The console and /metrics of `serve` (realtime/server.py's WebhookApp): the warehouse is read
    only through the writer's snapshot when it is a DuckDB file (the writer holds it), and at most
    once every CACHE_SECONDS on BigQuery."""
    from truth_forge.warehouse import open_warehouse

    spec, options = webhook_app.writer.spec, webhook_app.options
    reads = ConsoleReads(spec.warehouse_url, inside_serve=True, cache_seconds=CACHE_SECONDS_IN_SERVE,
                         open_for_reading=lambda: open_warehouse(spec.warehouse_url, tables=spec.warehouse_tables,
                                                                 create=False, read_only=True))
    access = ConsoleAccess(options.host, options.console_token)
    if access.token_required and not access.token:
        log.warning("serve listens on %s, beyond loopback, and %s is not set: the console and /metrics answer 403",
                    options.host, TOKEN_SETTING)
    per_minute = float(spec.client_options.get("requests_per_minute") or 100)
    return Console(reads, access, per_minute, serve=_ServeFigures(webhook_app)).routes()
