"""Run a sandbox: in a daemon thread for tests (`SandboxServer`), or in the foreground (CLI).

Binding the socket ourselves gives port 0 (a free port chosen by the OS) and guarantees the
server listens on loopback only.
"""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType
from typing import Any

import uvicorn

from truth_forge.core.listen import bind_tcp as _bind
from truth_forge.sandbox.app import build_app
from truth_forge.sandbox.config import SandboxConfig
from truth_forge.sandbox.faults import DB_ERROR_MESSAGES, FaultSettings
from truth_forge.sandbox.requestlog import RequestLogEntry
from truth_forge.sandbox.runtime import SandboxRuntime
from truth_forge.sandbox.webhooks import WebhookDelivery

_START_TIMEOUT_S = 10.0


def _uvicorn_config(app: Any) -> uvicorn.Config:
    # h11 explicitly: the drop fault relies on uvicorn's h11 protocol object. No uvicorn Date
    # header: the app sends its own from the sandbox clock.
    # h11's own limit on a request's head (16 KiB by default, answered 400) is raised out of the
    # way: the app answers long request lines as Node (431) or a proxy (414) would.
    return uvicorn.Config(app, log_level="warning", lifespan="off", http="h11",
                          access_log=False, date_header=False, h11_max_incomplete_event_size=1024 * 1024)


class SandboxServer:
    """A Twenty-compatible API on 127.0.0.1, started in a daemon thread."""

    def __init__(self, config: SandboxConfig | None = None) -> None:
        self.config = config or SandboxConfig()
        self.runtime = SandboxRuntime(self.config)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None
        self.port: int = self.config.port

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> SandboxServer:
        if self._thread is not None:
            return self
        self._sock = _bind(self.config.host, self.config.port)
        self.port = self._sock.getsockname()[1]
        self._server = uvicorn.Server(_uvicorn_config(build_app(self.runtime)))
        self._thread = threading.Thread(target=self._server.run,
                                        kwargs={"sockets": [self._sock]},
                                        name=f"sandbox-{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the sandbox server did not start")
            time.sleep(0.002)
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)
        if self._sock is not None:
            self._sock.close()
        self.runtime.close()
        self._server = self._thread = self._sock = None

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- what tests use -----------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        host = f"[{self.config.host}]" if ":" in self.config.host else self.config.host
        return f"http://{host}:{self.port}"

    @property
    def api_key(self) -> str:
        return self.config.api_keys[0]

    @property
    def member_token(self) -> str:
        """The first workspace-member token (`SandboxConfig.member_tokens`): a person in the UI."""
        if not self.config.member_tokens:
            raise LookupError("this sandbox has no member_tokens")
        return next(iter(self.config.member_tokens))

    def actor(self, token: str | None = None) -> dict[str, Any]:
        """The actor a token writes into createdBy/updatedBy (default: `api_key`)."""
        return self.config.credentials[token or self.api_key].actor()

    @property
    def workspace_id(self) -> str:
        return self.config.workspace_id

    @property
    def request_log(self) -> list[RequestLogEntry]:
        return self.runtime.request_log.entries()

    def request_count(self, method: str | None = None, path_prefix: str | None = None) -> int:
        return self.runtime.request_log.count(method=method, path_prefix=path_prefix)

    def clear_request_log(self) -> None:
        self.runtime.request_log.clear()

    def reset(self) -> None:
        """A fresh workspace: no records, custom fields, webhooks, log entries or faults."""
        self.runtime.reset()

    def freeze_clock(self, frozen: bool = True) -> None:
        """Every write from now until thawed carries one `updatedAt` (clock.MonotonicClock.freeze)."""
        self.runtime.workspace.clock.freeze(frozen)

    def set_faults(self, error_rate: float = 0.0, latency_ms: float | tuple[float, float] = 0.0,
                   drop_rate: float = 0.0, rate_limit_storm: float = 0.0, seed: int = 0,
                   max_faults: int | None = None,
                   error_statuses: tuple[int, ...] = (500, 502, 503),
                   path_prefix: str = "/rest/", db_error_rate: float = 0.0,
                   db_error_messages: tuple[str, ...] = DB_ERROR_MESSAGES,
                   drip_rate: float = 0.0, drip_interval_ms: float = 1000.0,
                   lose_listed_rate: float = 0.0, quota_exhausted_rate: float = 0.0,
                   conflict_rate: float = 0.0) -> FaultSettings:
        """Replace the fault settings (and restart the seeded sequence) on the running server.

        `db_error_rate` answers that share of requests 400 with one of `db_error_messages`
        (Postgres deadlock / statement timeout, as Twenty relays a QueryFailedError).
        `drip_rate` carries out that share of requests but sends each answer's body one byte per
        `drip_interval_ms` (a server that never stalls long enough for a per-read timeout).
        `lose_listed_rate` leaves that share of records (the same ones every time, by id) out of
        answers to a find-many filtered on `id[in]` (a lossy proxy or cache).
        `quota_exhausted_rate` answers 402 (a spent usage quota, newer servers);
        `conflict_rate` answers 409 ConflictException; neither request is executed.
        """
        settings = FaultSettings(error_rate=error_rate, latency_ms=latency_ms,
                                 drop_rate=drop_rate, rate_limit_storm=rate_limit_storm,
                                 seed=seed, max_faults=max_faults,
                                 error_statuses=tuple(error_statuses), path_prefix=path_prefix,
                                 db_error_rate=db_error_rate,
                                 db_error_messages=tuple(db_error_messages),
                                 drip_rate=drip_rate, drip_interval_ms=drip_interval_ms,
                                 lose_listed_rate=lose_listed_rate,
                                 quota_exhausted_rate=quota_exhausted_rate,
                                 conflict_rate=conflict_rate)
        self.runtime.faults.configure(settings)
        return settings

    def clear_faults(self) -> None:
        self.runtime.faults.clear()

    @property
    def faults_injected(self) -> int:
        return self.runtime.faults.injected

    def set_rate_limit(self, limit: int | None, *, window_ms: int = 60_000,
                       burst: int | None = None, style: str = "legacy",
                       refill: str | None = None,
                       short: tuple[int, int] | None | str = "config") -> None:
        """Allow `limit` requests per `window_ms` (None disables both buckets); buckets start full.

        `refill` is "fractional" or "floored"; None keeps the profile's choice. `short` is the
        short bucket checked first, (tokens, window ms); "config" keeps the configured one
        (Twenty's default 100 per 1000 ms), None switches it off.
        """
        if style not in ("legacy", "v2", "gateway"):
            raise ValueError("style must be 'legacy', 'v2' or 'gateway'")
        refill = refill or self.config.behaviour.rate_limit_refill
        if refill not in ("fractional", "floored"):
            raise ValueError("refill must be 'fractional' or 'floored'")
        short_bucket = self.config.short_bucket if short == "config" else short
        if isinstance(short_bucket, str):
            raise ValueError("short must be (tokens, window_ms), None or 'config'")
        self.runtime.rate_limiter.configure(limit, window_ms, burst, style,  # type: ignore[arg-type]
                                            refill, short_bucket)  # type: ignore[arg-type]

    @property
    def webhook_deliveries(self) -> list[WebhookDelivery]:
        return self.runtime.dispatcher.deliveries()

    def wait_for_deliveries(self, count: int, timeout: float = 5.0) -> list[WebhookDelivery]:
        """Block until `count` delivery outcomes exist (or `timeout`); returns them all."""
        return self.runtime.dispatcher.wait_for(count, timeout)

    def wait_webhooks_idle(self, timeout: float = 10.0) -> bool:
        """Block until no delivery is queued or in flight; False on timeout."""
        return self.runtime.dispatcher.wait_idle(timeout)


def serve_forever(config: SandboxConfig, *, ready_message: str | None = None) -> None:
    """Run in the foreground until interrupted (the CLI path)."""
    runtime = SandboxRuntime(config)
    sock = _bind(config.host, config.port)
    # Listen before announcing: connections made right after the message wait in the backlog.
    sock.listen(2048)
    try:
        if ready_message:
            print(ready_message.format(port=sock.getsockname()[1]), flush=True)
        uvicorn.Server(_uvicorn_config(build_app(runtime))).run(sockets=[sock])
    finally:
        sock.close()
        runtime.close()
