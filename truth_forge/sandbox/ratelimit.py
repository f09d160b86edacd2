"""Twenty's API rate limit: two token buckets per workspace, shared by every API key.

Twenty's common query runner takes a token from a short bucket first, then from a long one
(`throttleQueryExecution` in common-base-query-runner.service.ts; keys `...-short-limit` and
`...-long-limit`); a request the long bucket refuses has still spent its short token. Defaults
mirror the self-hosted config: API_RATE_LIMITING_SHORT_LIMIT=100 per _SHORT_TTL_IN_MS=1000 and
API_RATE_LIMITING_LONG_LIMIT=100 per _LONG_TTL_IN_MS=60000 (config-variables.ts), so with the
defaults the long bucket is the one that bites; the short one matters when a workspace raises
the long limit. The
429 comes in two dialects: the legacy ThrottlerException body with no headers (the default), or
the "API rate limits v2" body with `Retry-After` and `X-RateLimit-*` headers. Twenty builds those
headers only for the 429 (`usage-limit/utils/build-rate-limit-response-headers.util.ts` takes the
exhausted scope); an accepted request carries none. The "gateway" style plays a proxy in front of a
self-hosted Twenty that reports its count on every answer (`X-RateLimit-Limit/-Remaining/-Reset`),
with the v2 body on its 429. The refill comes
in two flavours too: fractional (newer servers), or floored as the legacy throttler.service.ts
does it (whole tokens only, and the refill clock restarts on every accepted request, so the
fraction earned so far is lost and a client pacing at exactly the limit sees extra 429s).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Literal

from truth_forge.sandbox.errors import ApiError
from truth_forge.sandbox.profiles import RefillMode

Style = Literal["legacy", "v2", "gateway"]


class TokenBucket:
    def __init__(self, capacity: int, refill_per_s: float,
                 monotonic: Callable[[], float] = time.monotonic,
                 refill: RefillMode = "fractional") -> None:
        self.capacity = capacity
        self.refill_per_s = refill_per_s
        self.refill = refill
        self._monotonic = monotonic
        self._tokens = float(capacity)
        self._stamp = monotonic()

    def try_take(self) -> tuple[bool, int, float]:
        """(allowed, tokens left, seconds until the next token)."""
        now = self._monotonic()
        earned = (now - self._stamp) * self.refill_per_s
        if self.refill == "floored":
            # getAvailableTokensCount floors the refill; only an accepted request stores the
            # new count and moves lastRefillAt to now (a refused one stores nothing).
            earned = math.floor(earned)
        available = min(self.capacity, self._tokens + earned)
        if available >= 1:
            self._tokens = available - 1
            self._stamp = now
            return True, int(self._tokens), 0.0
        if self.refill == "fractional":
            self._tokens, self._stamp = available, now
        if self.refill_per_s <= 0:
            return False, 0, math.inf
        wait = (1 - self._tokens) / self.refill_per_s - (now - self._stamp)
        return False, 0, max(0.0, wait)


ShortBucket = tuple[int, int]  # (tokens, window in ms)


class RateLimiter:
    def __init__(self, per_window: int | None, window_ms: int, burst: int | None,
                 style: Style, refill: RefillMode = "fractional",
                 short: ShortBucket | None = None) -> None:
        self._lock = threading.Lock()
        self.configure(per_window, window_ms, burst, style, refill, short)

    def configure(self, per_window: int | None, window_ms: int, burst: int | None,
                  style: Style, refill: RefillMode = "fractional",
                  short: ShortBucket | None = None) -> None:
        """`per_window`/`window_ms`/`burst` shape the long bucket; `short` the short one checked
        before it. `per_window` None switches both off."""
        with self._lock:
            self.per_window = per_window
            self.window_ms = window_ms
            self.style: Style = style
            self.refill: RefillMode = refill
            self.short = short
            self._bucket = None if per_window is None else TokenBucket(
                burst or per_window, per_window / (window_ms / 1000), refill=refill)
            self._short_bucket = None if per_window is None or short is None else TokenBucket(
                short[0], short[0] / (short[1] / 1000), refill=refill)

    def reset(self) -> None:
        self.configure(self.per_window, self.window_ms,
                       self._bucket.capacity if self._bucket else None, self.style, self.refill,
                       self.short)

    def check(self, api_key_id: str) -> dict[str, str]:
        """Take one token or raise the 429 Twenty would send; the headers for the accepted answer."""
        with self._lock:
            if self._bucket is None:
                return {}
            if self._short_bucket is not None and self.short is not None:
                allowed, _, wait = self._short_bucket.try_take()
                if not allowed:
                    limit, window_ms = self.short
                    raise self.too_many_requests(api_key_id, wait, limit=limit, window_ms=window_ms)
            allowed, left, wait = self._bucket.try_take()
            refill_s = (self._bucket.capacity - left) / self._bucket.refill_per_s if self._bucket.refill_per_s else 0
        if not allowed:
            raise self.too_many_requests(api_key_id, wait)
        if self.style != "gateway":
            return {}
        return {"X-RateLimit-Limit": str(self.per_window or 0), "X-RateLimit-Remaining": str(left),
                "X-RateLimit-Reset": str(math.ceil(time.time() + refill_s))}

    def too_many_requests(self, api_key_id: str, wait_s: float, *, limit: int | None = None,
                          window_ms: int | None = None) -> ApiError:
        """The 429 of the long bucket, or of the bucket given by `limit`/`window_ms`."""
        limit = limit if limit is not None else self.per_window or 0
        window_ms = window_ms if window_ms is not None else self.window_ms
        if self.style == "legacy":
            return ApiError(429, "TooManyRequestsException",
                            f"Limit reached ({limit} tokens per {window_ms} ms)")
        retry_after = max(1, math.ceil(wait_s)) if math.isfinite(wait_s) else 60
        period_s = max(1, window_ms // 1000)
        messages = [f"Rate limit exceeded for apiKey: {limit} requests per {period_s}s."]
        body = {
            "statusCode": 429,
            "error": "RATE_LIMITED",
            "messages": messages,
            "limitKind": "speed",
            "exhaustedKind": "limit",
            "scope": {"spenderType": "apiKey", "spenderId": api_key_id,
                      "operationType": "API_REQUEST"},
            "limit": limit,
            "remaining": 0,
            "periodCount": period_s,
            "periodUnit": "second",
            "retryAfterSeconds": retry_after,
        }
        headers = {
            "Retry-After": str(retry_after),
            "X-RateLimit-Limit": str(limit),
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": str(math.ceil(time.time() + retry_after)),
        }
        return ApiError(429, "RATE_LIMITED", messages, body=body, headers=headers)
