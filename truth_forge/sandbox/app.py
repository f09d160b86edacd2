"""The ASGI application: routing, error bodies, and the outer layer every API request crosses.

The outer layer (`SandboxASGI`) is plain ASGI on purpose: it runs in front of Starlette so it
can inject faults (including closing the socket with no response at all), check the Bearer
token (an API key or a workspace member's token), apply the rate limit to record requests made
with an API key, stamp every response with the server clock's `Date`, and log every request
with its final status. It also refuses what never reaches Twenty's code: a request line and
headers over Node's 16 KiB (431), or, playing a proxy in front (`max_request_line`), a request line
over the proxy's limit (414, as nginx answers past its 8 KB buffer).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import time
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from truth_forge.sandbox.actors import CURRENT_CALLER, Credential
from truth_forge.sandbox.apikeys import ApiKeyRoutes, needs_settings_permission
from truth_forge.sandbox.config import NODE_MAX_HEADER_BYTES
from truth_forge.sandbox.errors import (
    ApiError,
    conflict,
    invalid_token,
    missing_token,
    permission_denied,
    quota_exhausted,
)
from truth_forge.sandbox.faults import FaultSettings, fault_kwargs
from truth_forge.sandbox.routes_core import CoreRoutes, read_json
from truth_forge.sandbox.routes_metadata import MetadataRoutes
from truth_forge.sandbox.routes_writers import UnstampedWriterRoutes
from truth_forge.sandbox.runtime import SandboxRuntime

log = logging.getLogger(__name__)

# Not record queries: Twenty's API-key throttle sits in the common query runner only.
UNTHROTTLED_PREFIXES = ("/rest/metadata", "/rest/webhooks", "/rest/open-api", "/rest/apiKeys")
# A filter that lists record ids (`id[in]:[...]`), not another field ending in "Id".
_LISTS_IDS = re.compile(r"(?<![A-Za-z0-9_.])id\[in\]:")
# What nginx sends with its 414 (an HTML page, not Twenty's JSON).
_NGINX_414 = (b"<html>\r\n<head><title>414 Request-URI Too Large</title></head>\r\n<body>\r\n"
              b"<center><h1>414 Request-URI Too Large</h1></center>\r\n<hr><center>nginx</center>\r\n"
              b"</body>\r\n</html>\r\n")


def error_response(exc: ApiError, codes: bool = True) -> JSONResponse:
    """Twenty's error body; `codes` False drops `code`, as older servers never sent it."""
    exc = exc if codes else exc.without_code()
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


def credential_from(scope: Scope, credentials: dict[str, Credential]) -> Credential:
    """The caller's credential, or Twenty's 403 (no token) / 401 (bad token)."""
    header = ""
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            header = value.decode("latin-1")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise missing_token()
    if token not in credentials:
        raise invalid_token()
    return credentials[token]


class AdminRoutes:
    """`/_sandbox/*`: control a running sandbox over HTTP (for a sandbox in a subprocess)."""

    def __init__(self, runtime: SandboxRuntime) -> None:
        self.rt = runtime

    async def health(self, request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "workspaceId": self.rt.config.workspace_id})

    async def requests(self, request: Request) -> JSONResponse:
        return JSONResponse([e.to_dict() for e in self.rt.request_log.entries()])

    async def deliveries(self, request: Request) -> JSONResponse:
        return JSONResponse([d.to_dict() for d in self.rt.dispatcher.deliveries()])

    async def reset(self, request: Request) -> JSONResponse:
        self.rt.reset()
        return JSONResponse({"reset": True})

    async def faults(self, request: Request) -> JSONResponse:
        if request.method == "POST":
            body = await read_json(request)
            if not isinstance(body, dict):
                raise ApiError(400, "BadRequestException", "Body must be a JSON object")
            try:
                self.rt.faults.configure(FaultSettings(**fault_kwargs(body)))
            except (TypeError, ValueError) as exc:
                raise ApiError(400, "BadRequestException", str(exc)) from None
        return JSONResponse(self.rt.faults.settings.to_dict())

    def routes(self) -> list[Route]:
        return [
            Route("/_sandbox/health", self.health, methods=["GET"]),
            Route("/_sandbox/requests", self.requests, methods=["GET"]),
            Route("/_sandbox/webhook-deliveries", self.deliveries, methods=["GET"]),
            Route("/_sandbox/reset", self.reset, methods=["POST"]),
            Route("/_sandbox/faults", self.faults, methods=["GET", "POST"]),
        ]


class SandboxASGI:
    def __init__(self, runtime: SandboxRuntime, inner: ASGIApp) -> None:
        self.rt = runtime
        self.inner = inner
        self.credentials = runtime.config.credentials
        self.codes = runtime.config.behaviour.error_codes
        self.without_settings = frozenset(runtime.config.api_keys_without_settings_permission)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.inner(scope, receive, send)
            return
        clock = self.rt.workspace.clock

        async def dated(message: Message) -> None:
            # Express answers every response with Node's Date header; the sandbox takes it from
            # the clock that writes `updatedAt` (uvicorn's own Date header is switched off).
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"date"]
                headers.append((b"date", clock.http_date().encode("latin-1")))
                message = {**message, "headers": headers}
            await send(message)

        if await self._refused_as_too_long(scope, dated, send):
            return
        await self._dispatch(scope, receive, dated, send)

    async def _refused_as_too_long(self, scope: Scope, send: Send, raw_send: Send) -> bool:
        """Answer 414 (the proxy's limit on the request line) or 431 (Node's on the whole head)."""
        query: bytes = scope.get("query_string", b"")
        target = scope.get("raw_path") or scope["path"].encode()
        line = (len(scope["method"]) + 1 + len(target) + (1 + len(query) if query else 0)
                + len(" HTTP/") + len(scope.get("http_version", "1.1")))
        head = line + 2 + sum(len(k) + 2 + len(v) + 2 for k, v in scope.get("headers", [])) + 2
        limit = self.rt.config.max_request_line
        if limit is not None and line > limit:
            status, headers, body, answer = 414, [(b"content-type", b"text/html")], _NGINX_414, send
        elif head > NODE_MAX_HEADER_BYTES:
            # Node writes a bare status line and closes: no Date, no body.
            status, headers, body, answer = 431, [(b"connection", b"close")], b"", raw_send
        else:
            return False
        self.rt.request_log.add(scope["method"], scope["path"], query.decode("latin-1"), status, None, 0.0,
                                "too_long")
        await answer({"type": "http.response.start", "status": status,
                      "headers": [*headers, (b"content-length", str(len(body)).encode())]})
        await answer({"type": "http.response.body", "body": body})
        return True

    async def _dispatch(self, scope: Scope, receive: Receive, send: Send, raw_send: Send) -> None:
        """`send` dates the response; `raw_send` is uvicorn's own (the drop fault needs it)."""
        path: str = scope["path"]
        if path.startswith("/_sandbox/"):
            try:
                if credential_from(scope, self.credentials).kind != "api_key":
                    raise invalid_token()
            except ApiError as exc:
                await error_response(exc, self.codes)(scope, receive, send)
                return
            await self.inner(scope, receive, send)
            return
        if not path.startswith("/rest"):
            await self.inner(scope, receive, send)
            return
        await self._api_request(scope, receive, send, path, raw_send)

    async def _api_request(self, scope: Scope, receive: Receive, send: Send, path: str,
                           raw_send: Send) -> None:
        started = time.perf_counter()
        status: list[int] = []
        fault: list[str] = []
        limit_headers: dict[str, str] = {}  # the v2 limiter's X-RateLimit-* on an accepted request
        logged = False
        scope.setdefault("state", {})

        def log_once() -> None:
            nonlocal logged
            if logged:
                return
            logged = True
            self.rt.request_log.add(
                scope["method"], path, scope.get("query_string", b"").decode("latin-1"),
                status[0] if status else None, scope["state"].get("batch_size"),
                (time.perf_counter() - started) * 1000, fault[0] if fault else None)

        async def capture(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
                if limit_headers:
                    message = {**message, "headers": [*message.get("headers", []),
                                                      *((k.lower().encode(), v.encode()) for k, v in limit_headers.items())]}
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                # Log before the last byte leaves: a client that reads the log right after
                # its response must already find the entry there.
                log_once()
            await send(message)

        decision = self.rt.faults.decide(path)
        try:
            if decision.latency_s:
                await asyncio.sleep(decision.latency_s)
            if decision.action == "drop":
                fault.append("drop")
                log_once()
                await self._drop(raw_send)
                return
            if decision.action == "error":
                fault.append("error")
                body = {"statusCode": decision.status, "error": "InternalServerErrorException",
                        "messages": ["Injected fault: internal server error"]}
                await JSONResponse(body, status_code=decision.status or 500)(scope, receive,
                                                                              capture)
                return
            try:
                cred = credential_from(scope, self.credentials)
                scope["state"]["credential"] = cred
                # Who is writing, for the webhook events this request emits (userId, workspaceMemberId).
                CURRENT_CALLER.set(cred)
                if cred.token in self.without_settings and needs_settings_permission(path):
                    raise permission_denied()
                if decision.action == "rate_limit":
                    fault.append("rate_limit")
                    raise self.rt.rate_limiter.too_many_requests(_key_id(cred.token), 60.0)
                if cred.rate_limited and not path.startswith(UNTHROTTLED_PREFIXES):
                    # Twenty throttles record queries made with an API key (common query
                    # runner), per workspace; a logged-in user's requests are not throttled.
                    limit_headers.update(self.rt.rate_limiter.check(_key_id(cred.token)))
                if decision.action == "db_error":
                    # The query reached Postgres and failed there (deadlock, statement
                    # timeout): rolled back, answered 400 like any QueryFailedError.
                    fault.append("db_error")
                    raise ApiError(400, "BadRequestException", decision.message or "")
                if decision.action == "quota":
                    fault.append("quota")
                    raise quota_exhausted(_key_id(cred.token))
                if decision.action == "conflict":
                    fault.append("conflict")
                    raise conflict("Injected fault: conflict")
            except ApiError as exc:
                await error_response(exc, self.codes)(scope, receive, capture)
                return
            if decision.action == "drip":
                # The request is carried out; only its answer crawls out, as from a stalled proxy.
                fault.append("drip")
                await self.inner(scope, receive, _dripping(capture, raw_send, decision.drip_interval_s))
                return
            settings = self.rt.faults.settings
            if settings.lose_listed_rate and scope["method"] == "GET" and _lists_ids(scope):
                await self.inner(scope, receive, _losing(capture, settings, fault))
                return
            await self.inner(scope, receive, capture)
        finally:
            log_once()  # responses that never completed are logged too

    @staticmethod
    async def _drop(send: Send) -> None:
        """Close the connection without a byte of response (the client sees no response)."""
        # uvicorn passes its RequestResponseCycle.send; the cycle holds the asyncio transport.
        transport = getattr(getattr(send, "__self__", None), "transport", None)
        if transport is not None:
            transport.abort()
            # Let uvicorn process connection_lost, so it knows not to answer with a 500.
            for _ in range(3):
                await asyncio.sleep(0)
            return
        # Another server: start a response and break it; the client sees a broken response.
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", b"64")]})
        raise ConnectionAbortedError("injected connection drop")


def _dripping(send: Send, raw_send: Send, interval_s: float) -> Send:
    """A `send` that passes the status and headers at once, then the body one byte per `interval_s`,
    until the client hangs up (uvicorn's transport, when reachable, says so)."""
    transport = getattr(getattr(raw_send, "__self__", None), "transport", None)

    async def drip(message: Message) -> None:
        if message["type"] != "http.response.body":
            await send(message)
            return
        body: bytes = message.get("body", b"")
        more = message.get("more_body", False)
        for i in range(len(body)):
            if transport is not None and transport.is_closing():
                return  # the client gave up: stop crawling
            await send({"type": "http.response.body", "body": body[i : i + 1], "more_body": more or i < len(body) - 1})
            await asyncio.sleep(interval_s)
        if not body:
            await send(message)

    return drip


def _lists_ids(scope: Scope) -> bool:
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    return any(_LISTS_IDS.search(value) for value in query.get("filter", []))


def _losing(send: Send, settings: FaultSettings, fault: list[str]) -> Send:
    """A `send` that holds the answer back, leaves out the records `settings.loses`, and sends the rest
    (pageInfo and totalCount untouched, as a cache that lost rows would leave them)."""
    held: list[Message] = []
    body = bytearray()

    async def lose(message: Message) -> None:
        if message["type"] == "http.response.start":
            held.append(message)
            return
        body.extend(message.get("body", b""))
        if message.get("more_body"):
            return
        out = bytes(body)
        start = held[0]
        try:
            answer = json.loads(out)
        except ValueError:
            answer = None
        data = answer.get("data") if isinstance(answer, dict) else None
        if start["status"] == 200 and isinstance(data, dict):
            for name, records in data.items():
                if isinstance(records, list):
                    kept = [r for r in records if not (isinstance(r, dict) and settings.loses(str(r.get("id"))))]
                    if len(kept) < len(records):
                        fault[:] = ["lose_listed"]
                    data[name] = kept
            out = json.dumps(answer).encode()
        headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
        await send({**start, "headers": [*headers, (b"content-length", str(len(out)).encode())]})
        await send({"type": "http.response.body", "body": out})

    return lose


def _key_id(key: str) -> str:
    # Never echo a key in a response body: identify it by a short, stable digest.
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def build_app(runtime: SandboxRuntime) -> SandboxASGI:
    routes = (AdminRoutes(runtime).routes() + UnstampedWriterRoutes(runtime).routes() + MetadataRoutes(runtime).routes()
              + ApiKeyRoutes(runtime.api_keys).routes() + CoreRoutes(runtime).routes())
    codes = runtime.config.behaviour.error_codes

    async def api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return error_response(exc, codes)

    starlette = Starlette(routes=routes, exception_handlers={ApiError: api_error})
    return SandboxASGI(runtime, starlette)
