"""The one place that sends HTTP requests to Twenty.

Twenty allows about 100 requests a minute per workspace, so requests are what a sync spends. This
module keeps the client under that budget on its own (a token bucket), retries what can be retried
(429, 5xx, broken connections) with exponential backoff and jitter while honouring `Retry-After` and
`X-RateLimit-Reset`, refuses to resend a non-idempotent write whose outcome is unknown, and turns
every failure into a typed error from `errors.py`.

httpx's timeout bounds each read, not the request: a server (or proxy) that sends a byte every
few seconds never trips it. So every request also has a deadline for the whole of it; the answer
is read in pieces and given up once the deadline has passed.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import json
import logging
import math
import random
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from truth_forge.core import shutdown
from truth_forge.core.json_text import read_json
from truth_forge.twenty import unreachable
from truth_forge.twenty.errors import (
    TwentyAuthError,
    TwentyConfigError,
    TwentyConflict,
    TwentyError,
    TwentyFieldsCapped,
    TwentyNotFound,
    TwentyProtocolError,
    TwentyQuotaExhausted,
    TwentyRateLimited,
    TwentyRecordRejected,
    TwentyRequestTooLong,
    TwentySchemaMismatch,
    TwentyTransientError,
)
from truth_forge.twenty.inflight import DEFAULT_MAX_IN_FLIGHT, InFlightGate, RateLimitHeaders

log = logging.getLogger(__name__)

BODY_EXCERPT_CHARS = 500
DEFAULT_DEADLINE_SECONDS = 120.0
DEADLINE_SETTING = "TRUTH_FORGE_TWENTY_REQUEST_DEADLINE_SECONDS"
# Front ends' defaults: nginx refuses a request line longer than one 8 KB header buffer (414), Apache
# one over 8,190 bytes (414), Node a whole head over 16 KiB (431). Just under all three; a proxy
# set lower is learned from its refusal (`Transport.learn_request_line`).
DEFAULT_MAX_REQUEST_LINE = 8000
MAX_REQUEST_LINE_SETTING = "TRUTH_FORGE_TWENTY_MAX_REQUEST_LINE"
MIN_REQUEST_LINE = 1024  # below this not even one id fits beside a filter's other conditions
HTTP_VERSION = "HTTP/1.1"
USER_AGENT = "truth-forge (+https://github.com/truth-forge)"
_WRITE_METHODS = frozenset({"POST", "PATCH", "PUT", "DELETE"})
# The round trip of one request (the server's latency and work, our encoding and decoding on a busy
# machine) up to which the bucket, not the number on the wire, sets the pace by default.
ROUND_TRIP_ALLOWANCE_SECONDS = 1.5
MAX_IN_FLIGHT_CEILING = 16  # threads and connections a client holds at most by default
# Node (Twenty) and uvicorn (the sandbox) close a connection idle for 5 s; httpx's default is to keep
# one 5 s too, so a request can leave on a connection the server is closing at that moment, and a
# plain create whose connection broke is never resent. Drop idle connections a second earlier.
KEEPALIVE_EXPIRY_SECONDS = 4.0
# After a headerless 429 the bucket restarts from what the server earned since the refused request
# left (`RequestBudget.drain`), less this much: a resend that reaches the server's count a little
# sooner than the refused request did (jitter, a connection already open) still finds its token.
REFUSAL_MARGIN_TOKENS = 0.1


def in_flight_for(per_minute: float) -> int:
    """How many requests may be on the wire at once, by default, for a bucket refilled at `per_minute`.

    Requests on the wire = rate × round trip (Little's law): 8 keep Twenty Cloud's 100 a minute busy
    with seconds of latency to spare, but at 600 a minute and 600 ms a request (plus the server's own
    work) 8 are all on the wire while tokens wait, and the gate, not the bucket, set the pace (issue
    22). Enough for a round trip of ROUND_TRIP_ALLOWANCE_SECONDS, never below 8 nor above the ceiling."""
    needed = min(MAX_IN_FLIGHT_CEILING, per_minute / 60.0 * ROUND_TRIP_ALLOWANCE_SECONDS)
    return max(DEFAULT_MAX_IN_FLIGHT, math.ceil(needed))


class RequestBudget:
    """A token bucket: at most `per_minute` requests a minute, with bursts of up to `burst`.

    Twenty's own limiter is a bucket of 100 tokens refilled at 100 per minute, shared by every key of
    the workspace; a client whose bucket is smaller and refills no faster does not trip it on its own.
    """

    def __init__(
        self,
        per_minute: float,
        burst: int | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if per_minute <= 0:
            raise ValueError("per_minute must be positive")
        if burst is not None and burst < 1:
            raise ValueError("burst must be at least 1 (a bucket of 0 never lets a request through)")
        self.rate = per_minute / 60.0
        # The server's bucket starts counting at each request's arrival, ours at its departure, and the
        # first request also pays for the connection: keep a 10% margin so we never reach its last token.
        self.capacity = float(burst if burst is not None else max(1, int(per_minute * 0.9)))
        self._tokens = self.capacity
        self._clock = clock
        self._sleep = sleep
        self._last = clock()
        self._lock = threading.Lock()
        self._hold_until = float("-inf")
        self.waited_seconds = 0.0
        self.drains = 0  # how many 429s emptied it (read when a token is taken, passed back to drain)
        self.taken = 0  # tokens ever taken: each request's ticket, in the order they left
        self._refused_ticket = 0  # the ticket of the latest-sent refused request the bucket was set from

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._last) * self.rate)
        self._last = now

    def acquire(self) -> int:
        """Take one token, sleeping until one is there (and until any pause the server asked for is
        over); returns the request's ticket (1, 2, ...: the order requests left in), for `drain`."""
        while True:
            with self._lock:
                self._refill()
                held = self._hold_until - self._clock()
                # A hair short of a whole token counts as one: a wait shorter than the clock's
                # resolution would never move it.
                if held <= 0 and self._tokens >= 1.0 - 1e-9:
                    self._tokens -= 1.0
                    self.taken += 1
                    return self.taken
                # At most one token's time at once: a 429's `drain` can give the bucket back tokens
                # (what the server earned while the refusal travelled) to a thread already asleep.
                wait = held if held > 0 else min(1.0, 1.0 - self._tokens) / self.rate
                self.waited_seconds += wait
            self._sleep(wait)

    def drain(self, *, learn_burst: bool = False, in_flight_elsewhere: int = 0, since: int | None = None,
              ticket: int | None = None, sent_at: float | None = None) -> None:
        """The server said 429: whatever we thought was left is not.

        `learn_burst` (a 429 that did not say the server's count): its bucket is smaller than ours.
        Both refill at the limit, so since ours was last full we have spent at least what its bucket
        holds: ours becomes no bigger than that, less the requests still on the wire (the server may
        not have counted them yet), and from here requests leave at the limit, not in a burst that a
        quiet moment refilled past the server's bucket. `since`: the value of `drains` when the refused
        request took its token; drained after that (another refusal of the same burst), the burst
        was learned already: only drain.

        `ticket` and `sent_at` (our clock when the refused request left): the server had no token for
        it when it counted it, somewhere between its departure and its answer. The request sent again
        takes the same way to that count (same path, same body), so what the server earns between
        the two counts is what our bucket earns between the two departures: the bucket restarts from
        empty at `sent_at`, less every request that left after it (counted before a resend). Counting
        from the answer instead would waste the whole round trip, seconds of tokens behind a slow
        proxy. Without them, or after an earlier request's refusal (a later one's says more), it
        restarts from empty now."""
        with self._lock:
            self._refill()
            if learn_burst and (since is None or since == self.drains):
                spent = math.floor(self.capacity - self._tokens) - in_flight_elsewhere
                # Spent nothing and refused: another client took the server's tokens; that says nothing of its burst.
                if 1 <= spent < self.capacity:
                    log.info("Twenty refused a request for rate after %d in a burst; bursts of at most %d "
                             "from now on", spent, spent)
                    self.capacity = float(spent)
            if ticket is None or sent_at is None:
                self._tokens = min(self._tokens, 0.0)
            elif ticket > self._refused_ticket:
                earned = max(0.0, self._clock() - sent_at) * self.rate - REFUSAL_MARGIN_TOKENS
                self._tokens = min(self.capacity, earned - (self.taken - ticket))
                self._refused_ticket = ticket
            self.drains += 1

    @property
    def token_seconds(self) -> float:
        """Seconds between two tokens at the limit."""
        return 1.0 / self.rate

    def hold(self, seconds: float) -> None:
        """No request of any thread leaves for `seconds` (a 429 pauses every worker together)."""
        with self._lock:
            self._hold_until = max(self._hold_until, self._clock() + seconds)

    def tokens_left(self) -> float:
        """Requests that could leave now without waiting (for /metrics and the console)."""
        with self._lock:
            self._refill()
            return max(0.0, self._tokens)

    def observe(self, server_limit: int | None, server_remaining: int | None, in_flight_elsewhere: int) -> None:
        """Believe the server's own count: never plan to spend tokens it says are not there.

        Requests already on the wire may not have reached its count yet, so they are taken off too.
        """
        with self._lock:
            self._refill()
            if server_limit is not None and 1 <= server_limit < self.capacity:
                self.capacity = float(server_limit)
            if server_remaining is not None:
                self._tokens = min(self._tokens, float(server_remaining - in_flight_elsewhere))


@dataclass
class RetryPolicy:
    """How often and how long to wait before sending a failed request again."""

    max_retries: int = 6
    base_delay: float = 0.5
    max_delay: float = 60.0
    rng: random.Random = field(default_factory=random.Random)

    def backoff(self, attempt: int) -> float:
        # Exponential with jitter in [50%, 100%] of the step, so many clients do not retry in lockstep.
        step = min(self.max_delay, self.base_delay * (2**attempt))
        return step * (0.5 + self.rng.random() / 2)


@dataclass
class TransportStats:
    """What the requests cost: read by sync reports and benchmarks."""

    requests: int = 0
    retries: int = 0
    rate_limited: int = 0
    by_status: dict[int, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def count(self, *, request: bool = False, retry: bool = False, status: int | None = None) -> None:
        with self._lock:  # several workers answer at once
            self.requests += request
            self.retries += retry
            if status is not None:
                self.by_status[status] = self.by_status.get(status, 0) + 1
                self.rate_limited += status == 429


def _http_date(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


_JSON_CONTENT = {"Content-Type": "application/json"}


def _encoded_body(value: Any) -> bytes:
    """A request's JSON body: orjson's compact UTF-8 (a push encodes 200 records a request: 4 times
    faster than json), or httpx's own encoding of what orjson refuses (integers past 64 bits) and its
    error. Record bodies hold no NaN or Infinity (mapping refuses them: JSON has none, and orjson
    would write null)."""
    try:
        return orjson.dumps(value)
    except TypeError:  # orjson.JSONEncodeError is one
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def _retry_after_seconds(headers: Mapping[str, str], clock_now: float) -> float | None:
    """Seconds the server asked us to wait, from `Retry-After` or `X-RateLimit-Reset`, if it said."""
    value = headers.get("retry-after")
    if value:
        value = value.strip()
        if value.replace(".", "", 1).isdigit():
            return float(value)
        try:  # the header's other form is an HTTP date
            return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None
    reset = headers.get("x-ratelimit-reset")
    if reset:
        try:
            return max(0.0, float(reset) - clock_now)
        except ValueError:
            return None
    return None


def _error_fields(response: httpx.Response, secret: str) -> dict[str, Any]:
    """Twenty's messages, error code and a redacted body excerpt."""
    text = response.text
    if secret:
        text = text.replace(secret, "***")
    messages: list[str] = []
    code: str | None = None
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    if isinstance(body, dict):
        raw = body.get("messages")
        if isinstance(raw, list):
            messages = [str(m) for m in raw]
        elif isinstance(body.get("message"), str):
            messages = [body["message"]]
        # Metadata validation errors nest their reasons; surface them rather than a generic line.
        nested = body.get("errors")
        if isinstance(nested, dict):
            for entries in nested.values():
                for entry in entries if isinstance(entries, list) else []:
                    for err in entry.get("errors", []) if isinstance(entry, dict) else []:
                        if isinstance(err, dict) and err.get("message"):
                            messages.append(f"{err.get('code', '')}: {err['message']}".lstrip(": "))
        code = body.get("error") if isinstance(body.get("error"), str) else None
        code = body.get("code", code) if isinstance(body.get("code"), str) else code
    return {
        "status": response.status_code,
        "messages": messages,
        "error_code": code,
        "body_excerpt": text[:BODY_EXCERPT_CHARS],
        "request_id": response.headers.get("x-request-id"),
    }


# Twenty answers 400 to every database error (`QueryFailedError` in http-exception-handler.service.ts),
# including ones that say nothing about the record: these are worth sending again.
_TRANSIENT_DATABASE_ERRORS = re.compile(
    r"deadlock detected|canceling statement due to (statement|lock) timeout|could not serialize access"
    r"|could not obtain lock|Connection terminated|too many clients|terminating connection|Query read timeout",
    re.IGNORECASE,
)
# Some versions answer a missing record with BadRequestException('Record not found') instead of a 404.
_NOT_FOUND_400 = re.compile(r"^Record not found", re.IGNORECASE)
# `Object person doesn't have any "contactId" field.`: the workspace lacks a field; no record can pass.
_UNKNOWN_FIELD = re.compile(r'''doesn't have any "[^"]+" field''')


def redirect_target(location: str | None, secret: str = "") -> str:
    """Where a redirect points, without its query string or anything secret (a key can ride in either)."""
    if not location:
        return "another address"
    url = httpx.URL(location)
    shown = str(url.copy_with(query=None, fragment=None)) if url.is_absolute_url else location.split("?")[0]
    return shown.replace(secret, "***") if secret else shown


def error_for_response(response: httpx.Response, method: str, path: str, secret: str = "", *,
                       request_line: int | None = None, max_request_line: int | None = None) -> TwentyError:
    """Map a non-2xx answer to the typed error that says what to do next."""
    status = response.status_code
    fields = _error_fields(response, secret)
    where: dict[str, Any] = {"method": method, "path": path}
    said = " ".join(fields["messages"])
    if status in (414, 431):
        # A proxy's (414) or Node's (431) limit on the request line or headers: the same request
        # is refused every time, so it is not retried; a smaller limit splits id lists further.
        sent = f"a request line of {request_line} bytes" if request_line else "the request"
        limit = f" (now {max_request_line})" if max_request_line else ""
        return TwentyRequestTooLong(
            f"Twenty, or a proxy in front of it, refused {sent} as too long (HTTP {status}); set "
            f"{MAX_REQUEST_LINE_SETTING} below that{limit} so that id lists are sent in smaller requests",
            **fields, **where)
    if 300 <= status < 400:
        target = redirect_target(response.headers.get("location"), secret)
        return TwentyConfigError(f"Twenty's base URL redirects to {target}; configure that URL in TWENTY_BASE_URL instead",
                                 **fields, **where)
    if status == 400 and _TRANSIENT_DATABASE_ERRORS.search(said):
        return TwentyTransientError("Twenty's database failed the request (it can succeed if sent again)",
                                    **fields, **where)
    if status == 400 and any(_NOT_FOUND_400.match(m) for m in fields["messages"]):
        return TwentyNotFound("Not found in Twenty", **fields, **where)
    if status == 400 and _UNKNOWN_FIELD.search(said):
        return TwentySchemaMismatch("Twenty's workspace lacks a field truth-forge writes (run `truth-forge setup`)",
                                    **fields, **where)
    if status in (401, 403):
        return TwentyAuthError("Twenty refused the API key or its permissions", **fields, **where)
    if status == 402:
        return _quota_exhausted(response, fields, where)
    if status == 409:
        return TwentyConflict("Twenty refused the request as conflicting with the workspace's current state "
                              "(HTTP 409; not retried: the next run reads that state again)", **fields, **where)
    if status == 404:
        return TwentyNotFound("Not found in Twenty", **fields, **where)
    if status == 429:
        return TwentyRateLimited("Twenty rate limit still hit after every retry", **fields, **where)
    if status >= 500 or status == 408:
        return TwentyTransientError("Twenty server error or timeout", **fields, **where)
    return TwentyRecordRejected("Twenty rejected the request", **fields, **where)


def _quota_exhausted(response: httpx.Response, fields: dict[str, Any], where: dict[str, Any]) -> TwentyError:
    """402 from newer servers' usage limits: say what is spent and when it comes back, and never retry."""
    try:
        body = response.json()
    except ValueError:
        body = None
    body = body if isinstance(body, dict) else {}
    kind = "credit allowance" if body.get("exhaustedKind") == "allowance" else "usage quota"
    retry_after = body.get("retryAfterSeconds")
    retry_after = retry_after if isinstance(retry_after, int) and retry_after >= 0 else None
    when = (f"; Twenty says it renews in {retry_after / 3600:.1f} h" if retry_after is not None
            else "; Twenty did not say when it renews")
    return TwentyQuotaExhausted(f"Twenty refused the request: the workspace's {kind} is spent (HTTP 402{when}). "
                                "truth-forge does not retry it; raise the plan or wait for the next period",
                                retry_after_s=retry_after, **fields, **where)


FIELDS_CAPPED_HEADER = "x-twenty-fields-capped"


class DeadlinePassed(httpx.TransportError):
    """The whole answer had not arrived when the request's deadline passed (each read was in time)."""


class Transport:
    """Authenticated, budgeted, retrying JSON requests against one Twenty workspace."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 30.0,
        requests_per_minute: float = 100,
        burst: int | None = None,
        retry: RetryPolicy | None = None,
        http_transport: httpx.BaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = shutdown.pause,  # a retry's wait ends when the process must stop
        max_in_flight: int | None = None,  # None: in_flight_for(requests_per_minute)
        deadline: float = DEFAULT_DEADLINE_SECONDS,
        max_request_line: int = DEFAULT_MAX_REQUEST_LINE,
    ) -> None:
        if not api_key:
            raise ValueError("Twenty API key is empty")
        self._api_key = api_key
        self._sleep = sleep
        self._clock = clock
        if deadline <= 0:
            raise ValueError("deadline must be positive")
        self.deadline = deadline
        if max_request_line < MIN_REQUEST_LINE:
            raise ValueError(f"max_request_line must be at least {MIN_REQUEST_LINE} bytes")
        # Longest request line (method, path, encoded query, HTTP version) this client sends;
        # callers that put lists in a query split them to fit (RecordsApi.split_to_fit). It starts
        # at the setting (never above it) and only falls, when a front end refuses a line as too long.
        self.max_request_line = max_request_line
        self._request_line_warned = False
        self._request_line_lock = threading.Lock()
        self.retry = retry or RetryPolicy()
        self.budget = RequestBudget(requests_per_minute, burst, clock=clock, sleep=sleep)
        if max_in_flight is None:
            max_in_flight = in_flight_for(requests_per_minute)
        # More requests on the wire than the bucket could ever pay for at once would only queue.
        self.gate = InFlightGate(max(1, min(max_in_flight, int(self.budget.capacity))))
        self.stats = TransportStats()
        # The server's clock from its last answer's Date header (whole seconds, rounded down): the
        # pull's watermark is set by it, never by ours, so a skewed local clock cannot skip edits.
        self.server_time: dt.datetime | None = None
        # Called before every write request leaves (POST, PATCH, DELETE, PUT): the writer lease's
        # fence (truth_forge/core/lease.py), which raises LeaseLost, so nothing is sent, once it is lost.
        self.before_write: Callable[[], None] | None = None
        # Called by a batch stream's `finish` while its last answers are on the wire, on the caller's
        # thread (the sync's warehouse thread): bookkeeping that would otherwise wait for the last one.
        self.while_waiting: Callable[[], None] | None = None
        # Whether Twenty has answered at all: a failure to connect means a wrong URL before, an outage after.
        self._answered = False
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
            timeout=timeout,
            transport=http_transport,
            limits=httpx.Limits(max_connections=max(10, 2 * max_in_flight), keepalive_expiry=KEEPALIVE_EXPIRY_SECONDS),
            headers={
                "Authorization": f"Bearer {api_key}",
                "Accept": "application/json",
                "User-Agent": USER_AGENT,
            },
        )

    def __repr__(self) -> str:  # never show the key
        return f"Transport(base_url={str(self._http.base_url)!r})"

    @property
    def secrets(self) -> tuple[str, ...]:
        """Values that must never be written anywhere (error reporters redact them)."""
        return (self._api_key,)

    @property
    def base_url(self) -> str:
        return str(self._http.base_url)

    def url_for(self, path: str) -> str:
        """The full URL a path is sent to, as httpx joins it (a base URL's own path prefix kept)."""
        return str(self._http.base_url.join(path.lstrip("/"))) if path.startswith("/") else path

    def request_line_length(self, method: str, path: str, params: Mapping[str, Any] | None = None) -> int:
        """Bytes of the request line this request would be sent with: `GET /rest/people?filter=... HTTP/1.1`,
        its path and query encoded as httpx encodes them (the length proxies and Node count)."""
        clean = {k: v for k, v in (params or {}).items() if v is not None}
        target = httpx.URL(self.url_for(path), params=clean or None).raw_path
        return len(method) + 1 + len(target) + 1 + len(HTTP_VERSION)

    @property
    def max_in_flight(self) -> int:
        return self.gate.maximum

    def close(self) -> None:
        self._http.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json_body: Any = None,
        idempotent: bool | None = None,
    ) -> Any:
        """Send one request and return its decoded JSON body, retrying what is safe to retry.

        `idempotent` defaults to True for everything but POST. A POST that upserts is idempotent too;
        the caller says so. A request that is not idempotent is resent only when we know the server
        did not apply it (429, or a connection that was never made).
        """
        if idempotent is None:
            idempotent = method.upper() != "POST"
        clean_params = {k: v for k, v in (params or {}).items() if v is not None}
        # Errors name the whole URL tried (base URL prefix included), never its query or the key.
        url = self.url_for(path)
        line = self.request_line_length(method, path, clean_params)
        if line > self.max_request_line:
            # Never sent: a proxy would refuse it, and a caller with a list should have split it.
            raise TwentyRequestTooLong(
                f"A request line of {line} bytes is over the {self.max_request_line} of {MAX_REQUEST_LINE_SETTING}; "
                f"not sent", method=method, path=url)
        body = None if json_body is None else _encoded_body(json_body)  # once, whatever the retries
        attempt = 0
        while True:
            retry_limit = self.retry.max_retries
            failure: TwentyError
            try:
                response = self._send(method, path, clean_params, body)
            except httpx.ConnectError as exc:
                # Nothing reached the server: always safe to resend, when waiting can help at all.
                failure, retry_limit = self._not_connected(exc, method, url)
                retryable = True
            except (httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
                failure = TwentyTransientError(
                    f"Could not connect to Twenty at {self.base_url} (TWENTY_BASE_URL): {type(exc).__name__}",
                    method=method,
                    path=url,
                )
                retryable = True
            except DeadlinePassed:
                # The request may have been applied; only its answer was too slow.
                failure = TwentyTransientError(
                    f"Twenty's answer was not complete {self.deadline:g} s after the request left "
                    f"({DEADLINE_SETTING})",
                    method=method,
                    path=url,
                    maybe_applied=not idempotent,
                )
                retryable = idempotent
            except httpx.TransportError as exc:
                # The request may have been applied before the connection broke.
                failure = TwentyTransientError(
                    f"Connection to Twenty broke before an answer came: {type(exc).__name__}",
                    method=method,
                    path=url,
                    maybe_applied=not idempotent,
                )
                retryable = idempotent
            else:
                status = response.status_code
                if 200 <= status < 300:
                    self.server_time = _http_date(response.headers.get("date")) or self.server_time
                    self._refuse_capped_read(response, method, url, clean_params)
                    return self._decode(response, method, url)
                if status in (414, 431):
                    self.learn_request_line(line, status)
                failure = error_for_response(response, method, url, self._api_key, request_line=line,
                                             max_request_line=self.max_request_line)
                if status == 429:
                    retryable = True
                elif status >= 500 or status == 408:
                    if not idempotent and isinstance(failure, TwentyTransientError):
                        failure.maybe_applied = True
                    retryable = idempotent or status == 503
                elif isinstance(failure, TwentyTransientError):
                    retryable = True  # a database error: the statement was rolled back, nothing applied
                else:
                    raise failure
                if retryable and attempt < self.retry.max_retries:
                    wait = self._wait_after(response, attempt)
                    if status == 429:
                        self.budget.hold(wait)  # every worker waits, not just this one
                    self._pause(wait, method, path, f"HTTP {status}", attempt)
                    attempt += 1
                    continue
                raise failure
            if retryable and attempt < retry_limit:
                self._pause(self.retry.backoff(attempt), method, path, str(failure.summary), attempt)
                attempt += 1
                continue
            raise failure

    def learn_request_line(self, refused: int, status: int) -> None:
        """A front end refused a request line of `refused` bytes (414/431): send none that long again.
        Half of it, as the batch size is learned from a refusal: a proxy's limit is mostly a power
        of two (4 or 8 KB), so one refusal usually finds it. Never below MIN_REQUEST_LINE. The request
        itself is not resent here: only a caller that can cut its list again does that (a read's
        `RecordsApi.find_in`); a write so refused fails."""
        with self._request_line_lock:  # several workers can be refused at once
            lowered = max(MIN_REQUEST_LINE, min(self.max_request_line, refused // 2))
            if lowered >= self.max_request_line:
                return
            self.max_request_line = lowered
            # Once at warning (the setting saves the refused request every run), then at info.
            level = logging.INFO if self._request_line_warned else logging.WARNING
            self._request_line_warned = True
        log.log(level, "Twenty, or a proxy in front of it, refused a request line of %d bytes (HTTP %d); sending "
                "request lines of at most %d bytes from now on (set %s to start there)", refused, status, lowered,
                MAX_REQUEST_LINE_SETTING)

    def _not_connected(self, exc: httpx.ConnectError, method: str, url: str) -> tuple[TwentyError, int]:
        """The error for a connection never made, and how many retries it deserves. Before Twenty has
        answered once, a name that does not resolve or TLS against plain HTTP is a wrong URL (no retry)
        and a refused connection gets a short retry; once it has answered, the same failures are an
        outage (a restart, a DNS blip) and get the whole retry policy."""
        why = unreachable.classify(exc, self.base_url)
        summary = f"Could not connect to Twenty at {self.base_url} (TWENTY_BASE_URL): {why.reason}"
        if self._answered:
            return TwentyTransientError(summary, method=method, path=url), self.retry.max_retries
        if why.hopeless:
            return TwentyConfigError(summary, method=method, path=url), 0
        limit = unreachable.REFUSED_RETRIES if why.kind == "refused" else self.retry.max_retries
        return TwentyTransientError(summary, method=method, path=url), min(limit, self.retry.max_retries)

    def _send(self, method: str, path: str, params: Mapping[str, Any], body: bytes | None) -> httpx.Response:
        """One request on the wire: a slot in the gate first, then a token, then at once out
        (taking the token last keeps our departures as spread out as the bucket made them)."""
        with self.gate:
            entered = self.gate.narrowed  # 429s of requests sent before a narrowing do not narrow it again
            ticket = self.budget.acquire()
            drained = self.budget.drains  # nor, once drained, teach the bucket the same burst again
            if self.before_write is not None and method.upper() in _WRITE_METHODS:
                self.before_write()
            shutdown.check()  # told to stop (SIGTERM): no new request leaves; those on the wire finish
            self.stats.count(request=True)
            started = self._clock()
            response = self._within_deadline(method, path, params, body, started + self.deadline)
            self._answered = True
            status = response.status_code
            self.stats.count(status=status)
            log.debug("%s %s -> %s in %.3fs", method, path, status, self._clock() - started)
            said = RateLimitHeaders.read(response.headers)
            if said is not None:
                self.budget.observe(said.limit, said.remaining, self.gate.others())
            if status == 429:
                # A 429 that said the server's count: that count (observed above) is better than ours.
                headerless = said is None
                self.budget.drain(learn_burst=headerless, in_flight_elsewhere=self.gate.others(), since=drained,
                                  ticket=ticket if headerless else None, sent_at=started if headerless else None)
                self.gate.narrow(since=entered)
            else:
                self.gate.widen()
        return response

    def _within_deadline(self, method: str, path: str, params: Mapping[str, Any], body: bytes | None,
                         deadline: float) -> httpx.Response:
        """The response, its body read piece by piece and given up once `deadline` (our clock) has passed;
        each piece is still bounded by the per-read timeout."""
        with self._http.stream(method, path, params=params or None, content=body,
                               headers=None if body is None else _JSON_CONTENT) as streamed:
            raw = bytearray()
            for piece in streamed.iter_raw():
                raw += piece
                if self._clock() > deadline:
                    raise DeadlinePassed(f"the answer was still arriving after {self.deadline:g} s")
            if self._clock() > deadline:
                raise DeadlinePassed(f"the answer took longer than {self.deadline:g} s")
        # A whole response again (the raw bytes are decoded once, by their content-encoding).
        whole = httpx.Response(streamed.status_code, headers=streamed.headers, content=bytes(raw),
                               request=streamed.request, extensions=streamed.extensions)
        # httpx's streamed response and its stream refer to each other: a cycle only the garbage
        # collector frees, holding the request's encoded body (a batch of 200 records: ~200 KB).
        # While a push runs young collections are rare (sync/push.py), and a hundred such bodies
        # waited in memory at once; with the cycle cut here each is freed when its answer is read.
        streamed.stream = httpx.ByteStream(b"")
        return whole

    @staticmethod
    def _refuse_capped_read(response: httpx.Response, method: str, url: str, params: Mapping[str, Any]) -> None:
        """Newer servers answer a read without `fields` on an object with more than 200 fields with
        200 of them per record and `X-Twenty-Fields-Capped`. A missing field would read as empty and
        be merged as a person's edit, so such a read is an error, not data. (A write's answer with
        the header is only logged: the write has happened.)"""
        if FIELDS_CAPPED_HEADER not in response.headers or "fields" in params:
            return
        if method.upper() != "GET":
            log.warning("Twenty capped the fields of its answer to %s %s (X-Twenty-Fields-Capped)", method, url)
            return
        raise TwentyFieldsCapped(
            "Twenty left fields out of its answer (X-Twenty-Fields-Capped: the object has more fields than a "
            "read returns by default, 200); truth-forge would take the missing ones for empty values. Remove "
            "unused custom fields from the object in Twenty until it has at most 200",
            status=response.status_code, method=method, path=url,
            request_id=response.headers.get("x-request-id"))

    def _wait_after(self, response: httpx.Response, attempt: int) -> float:
        asked = _retry_after_seconds(response.headers, time.time())
        backoff = self.retry.backoff(attempt)
        if asked is not None:
            # The server knows when its bucket refills; a little jitter on top avoids a thundering herd.
            return min(self.retry.max_delay, asked) + backoff * 0.1
        if response.status_code == 429:
            # Legacy limiter: no headers. The bucket was set to what the server can have earned since
            # the refused request left, and paces at the limit from there (`RequestBudget.drain`), so
            # the first resend waits for its token and nothing more; a 429 again means the limit
            # itself is lower than we were told (or shared): back off more each time.
            token = self.budget.token_seconds
            return 0.0 if attempt == 0 else max(backoff, token * (attempt + 1))
        return backoff

    def _pause(self, wait: float, method: str, path: str, why: str, attempt: int) -> None:
        self.stats.count(retry=True)
        log.info("Retrying %s %s in %.2fs after %s (retry %d of %d)", method, path, wait, why, attempt + 1,
                 self.retry.max_retries)
        self._sleep(wait)

    def _decode(self, response: httpx.Response, method: str, path: str) -> Any:
        if not response.content:
            return None
        try:
            return read_json(response.content, lambda _: response.json())
        except ValueError:
            raise TwentyProtocolError(
                "Twenty answered with something that is not JSON (is TWENTY_BASE_URL right?)",
                status=response.status_code,
                method=method,
                path=path,
                body_excerpt=response.text[:BODY_EXCERPT_CHARS].replace(self._api_key, "***"),
            ) from None
