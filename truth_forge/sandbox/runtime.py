"""All the parts of one running sandbox, wired together and resettable as a unit.

The HTTP app, the Python `SandboxServer` API and the admin endpoints all act on this object, so
"reset to a fresh workspace" or "inject faults" means the same thing from every entry point.
"""

from __future__ import annotations

from typing import Any

from truth_forge.sandbox.apikeys import ApiKeyRegistry
from truth_forge.sandbox.config import SandboxConfig
from truth_forge.sandbox.faults import FaultInjector
from truth_forge.sandbox.ratelimit import RateLimiter
from truth_forge.sandbox.records import RecordService
from truth_forge.sandbox.requestlog import RequestLog
from truth_forge.sandbox.webhooks import WebhookDispatcher, WebhookRegistry
from truth_forge.sandbox.workspace import Workspace


class SandboxRuntime:
    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self.workspace = Workspace(config, on_events=self._on_events)
        self.records = RecordService(self.workspace)
        self.webhooks = WebhookRegistry(self.workspace.clock, self.workspace)
        self.api_keys = ApiKeyRegistry(config, self.workspace.clock)
        self.dispatcher = WebhookDispatcher(config, self.webhooks)
        self.rate_limiter = RateLimiter(config.rate_limit_per_minute, config.rate_limit_window_ms,
                                        config.rate_limit_burst, config.rate_limit_style,
                                        config.behaviour.rate_limit_refill, config.short_bucket)
        self.faults = FaultInjector()
        self.request_log = RequestLog(config.request_log_limit)

    def _on_events(self, events: list[Any]) -> None:
        self.dispatcher.on_events(events)

    def reset(self) -> None:
        """Records, custom fields/objects, webhooks, log, faults, rate-limit bucket: all fresh."""
        self.dispatcher.wait_idle(timeout=self.config.webhook_timeout_s + 1)
        self.workspace.reset()
        self.workspace.clock.freeze(False)
        self.webhooks.reset()
        self.api_keys.reset()
        self.dispatcher.clear()
        self.request_log.clear()
        self.faults.clear()
        self.rate_limiter.configure(self.config.rate_limit_per_minute,
                                    self.config.rate_limit_window_ms,
                                    self.config.rate_limit_burst, self.config.rate_limit_style,
                                    self.config.behaviour.rate_limit_refill, self.config.short_bucket)

    def close(self) -> None:
        self.dispatcher.close()
        self.workspace.close()
