"""Seeded fault injection: 5xx errors, database errors, latency, dropped connections, 429s, and
responses that drip their body a byte at a time (a stalled proxy or server: every read gets a byte
in time, so only a deadline on the whole request ends it), and answers to a list of ids
(`id[in]:[...]`) that lose some of the records asked for (a lossy cache or proxy, a read replica
behind): the sync must not take a record missing from such an answer for a destroyed one.

Retry and resume logic can only be trusted if it has met failures; these faults are drawn from
a seeded RNG (the same number of draws per request, whatever happens) so a test or benchmark
that replays the same requests sees the same failures. All knobs are bounded and can be changed
while the server runs.
"""

from __future__ import annotations

import hashlib
import random
import threading
from dataclasses import dataclass, field, replace
from typing import Any

MAX_LATENCY_MS = 10_000
# Postgres messages a real Twenty relays as 400s: http-exception-handler.service.ts turns any
# TypeORM QueryFailedError into a BadRequestException carrying the driver's message.
DB_ERROR_MESSAGES = ("deadlock detected", "canceling statement due to statement timeout")


@dataclass(frozen=True)
class FaultSettings:
    error_rate: float = 0.0  # share of requests answered with a 5xx
    latency_ms: float | tuple[float, float] = 0.0  # fixed delay, or (min, max) drawn uniformly
    drop_rate: float = 0.0  # share of requests whose connection is closed with no response
    rate_limit_storm: float = 0.0  # share of requests answered with a 429
    # share of requests answered 400 with a Postgres error (the request is not executed)
    db_error_rate: float = 0.0
    db_error_messages: tuple[str, ...] = DB_ERROR_MESSAGES
    seed: int = 0
    max_faults: int | None = None  # stop injecting after this many faults (None = no cap)
    error_statuses: tuple[int, ...] = (500, 502, 503)
    path_prefix: str = "/rest/"  # only requests under this prefix are affected
    # share of requests whose answer is sent one byte at a time, `drip_interval_ms` apart
    drip_rate: float = 0.0
    drip_interval_ms: float = 1000.0
    # share of the records a find-many filtered on `id[in]` leaves out of its answer (chosen by
    # record id and seed, not drawn: the same records go missing every time, with no RNG draw)
    lose_listed_rate: float = 0.0
    # share of requests answered 402: the workspace's usage quota or credit allowance is spent
    # (newer servers' usage limits, usage-limit-to-rest-api-exception-handler.util.ts)
    quota_exhausted_rate: float = 0.0
    # share of requests answered 409 ConflictException (the request is not executed)
    conflict_rate: float = 0.0

    def __post_init__(self) -> None:
        for name in ("error_rate", "drop_rate", "rate_limit_storm", "db_error_rate", "drip_rate",
                     "lose_listed_rate", "quota_exhausted_rate", "conflict_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {value}")
        low, high = self.latency_range
        if not 0 <= low <= high <= MAX_LATENCY_MS:
            raise ValueError(f"latency_ms must be within 0..{MAX_LATENCY_MS} ms")
        if not 0 < self.drip_interval_ms <= MAX_LATENCY_MS:
            raise ValueError(f"drip_interval_ms must be within 0..{MAX_LATENCY_MS} ms (and above 0)")
        if not self.error_statuses or any(not 500 <= s <= 599 for s in self.error_statuses):
            raise ValueError("error_statuses must be 5xx codes")
        if not self.db_error_messages or not all(
                isinstance(m, str) and m for m in self.db_error_messages):
            raise ValueError("db_error_messages must be non-empty strings")

    @property
    def latency_range(self) -> tuple[float, float]:
        if isinstance(self.latency_ms, (tuple, list)):
            return float(self.latency_ms[0]), float(self.latency_ms[1])
        return float(self.latency_ms), float(self.latency_ms)

    @property
    def active(self) -> bool:
        return bool(self.error_rate or self.drop_rate or self.rate_limit_storm
                    or self.db_error_rate or self.drip_rate or self.latency_range[1]
                    or self.quota_exhausted_rate or self.conflict_rate)

    def to_dict(self) -> dict[str, Any]:
        low, high = self.latency_range
        return {"error_rate": self.error_rate, "latency_ms": [low, high],
                "drop_rate": self.drop_rate, "rate_limit_storm": self.rate_limit_storm,
                "db_error_rate": self.db_error_rate,
                "db_error_messages": list(self.db_error_messages), "seed": self.seed, "max_faults": self.max_faults,
                "error_statuses": list(self.error_statuses), "path_prefix": self.path_prefix,
                "drip_rate": self.drip_rate, "drip_interval_ms": self.drip_interval_ms,
                "lose_listed_rate": self.lose_listed_rate,
                "quota_exhausted_rate": self.quota_exhausted_rate, "conflict_rate": self.conflict_rate}

    def loses(self, record_id: str) -> bool:
        """Whether an `id[in]` answer leaves this record out."""
        if not self.lose_listed_rate:
            return False
        digest = hashlib.sha256(f"{self.seed}:{record_id}".encode()).digest()
        return int.from_bytes(digest[:4], "big") / 2**32 < self.lose_listed_rate


@dataclass
class FaultDecision:
    latency_s: float = 0.0
    # None | "drop" | "error" | "db_error" | "rate_limit" | "drip" | "quota" | "conflict"
    action: str | None = None
    status: int | None = None
    message: str | None = None  # the Postgres message of a "db_error"
    drip_interval_s: float = 0.0  # the pause between two bytes of a "drip"


@dataclass
class FaultInjector:
    settings: FaultSettings = field(default_factory=FaultSettings)
    injected: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._rng = random.Random(self.settings.seed)

    def configure(self, settings: FaultSettings) -> None:
        with self._lock:
            self.settings = settings
            self._rng = random.Random(settings.seed)
            self.injected = 0

    def update(self, **changes: Any) -> FaultSettings:
        if isinstance(changes.get("latency_ms"), list):
            changes["latency_ms"] = tuple(changes["latency_ms"])
        settings = replace(self.settings, **fault_kwargs(changes))
        self.configure(settings)
        return settings

    def clear(self) -> None:
        self.configure(FaultSettings())

    def decide(self, path: str) -> FaultDecision:
        with self._lock:
            s = self.settings
            if not s.active or not path.startswith(s.path_prefix):
                return FaultDecision()
            # Always draw the same six numbers so one request's outcome never shifts the next.
            r_drop, r_error, r_storm, r_latency, r_status, r_db = (
                self._rng.random() for _ in range(6))
            # A seventh number only when dripping is on: sequences seeded before it existed stay as they were.
            r_drip = self._rng.random() if s.drip_rate else 1.0
            r_quota = self._rng.random() if s.quota_exhausted_rate else 1.0
            r_conflict = self._rng.random() if s.conflict_rate else 1.0
            low, high = s.latency_range
            decision = FaultDecision(latency_s=(low + (high - low) * r_latency) / 1000)
            if s.max_faults is not None and self.injected >= s.max_faults:
                return decision
            if r_drop < s.drop_rate:
                decision.action = "drop"
            elif r_error < s.error_rate:
                decision.action = "error"
                decision.status = s.error_statuses[int(r_status * len(s.error_statuses))]
            elif r_db < s.db_error_rate:
                decision.action = "db_error"
                decision.status = 400
                decision.message = s.db_error_messages[int(r_status * len(s.db_error_messages))]
            elif r_storm < s.rate_limit_storm:
                decision.action = "rate_limit"
            elif r_drip < s.drip_rate:
                decision.action = "drip"
                decision.drip_interval_s = s.drip_interval_ms / 1000
            elif r_quota < s.quota_exhausted_rate:
                decision.action, decision.status = "quota", 402
            elif r_conflict < s.conflict_rate:
                decision.action, decision.status = "conflict", 409
            if decision.action:
                self.injected += 1
            return decision


def fault_kwargs(body: dict[str, Any]) -> dict[str, Any]:
    """FaultSettings keyword arguments from JSON-ish input (lists become tuples)."""
    out = dict(body)
    for key in ("latency_ms", "error_statuses", "db_error_messages"):
        if isinstance(out.get(key), list):
            out[key] = tuple(out[key])
    return out
