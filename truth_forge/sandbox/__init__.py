"""A local, stateful, Twenty-compatible API server (the "sandbox").

Tests, benchmarks and `make demo` run against it instead of a real Twenty workspace; it is an
independent reading of Twenty's API (it shares no code with `truth_forge.twenty`).

    from truth_forge.sandbox import SandboxConfig, SandboxServer
    with SandboxServer(SandboxConfig(api_keys=["test-key"])) as sb:
        httpx.get(f"{sb.base_url}/rest/people",
                  headers={"Authorization": f"Bearer {sb.api_key}"})

A person editing in Twenty's UI is a workspace member's token: its writes carry
`updatedBy = {source: "MANUAL", name: "Ada Lovelace", workspaceMemberId: ...}` and are never
rate-limited; API keys can have names of their own:

    config = SandboxConfig(api_keys=["test-key"], named_api_keys={"sync-key": "truth-forge"},
                           member_tokens={"ada-token": "Ada Lovelace"})
    with SandboxServer(config) as sb:
        human = TwentyClient(sb.base_url, sb.member_token)   # sb.actor(sb.member_token)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from truth_forge.sandbox.config import DEFAULT_API_KEY, SandboxConfig

if TYPE_CHECKING:
    from truth_forge.sandbox.faults import FaultSettings
    from truth_forge.sandbox.requestlog import RequestLogEntry
    from truth_forge.sandbox.server import SandboxServer, serve_forever
    from truth_forge.sandbox.webhooks import WebhookDelivery

# The server (uvicorn, starlette, the whole API) is imported when first named, not with the package:
# `truth-forge --help` and every command that never starts a sandbox skip a fifth of a second.
_LAZY = {"FaultSettings": "faults", "RequestLogEntry": "requestlog", "SandboxServer": "server",
         "serve_forever": "server", "WebhookDelivery": "webhooks"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"truth_forge.sandbox.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'truth_forge.sandbox' has no attribute {name!r}")

__all__ = [
    "DEFAULT_API_KEY",
    "FaultSettings",
    "RequestLogEntry",
    "SandboxConfig",
    "SandboxServer",
    "WebhookDelivery",
    "serve_forever",
]
