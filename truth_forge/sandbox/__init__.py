"""A local, stateful, Twenty-compatible API server (the "sandbox").

Tests, benchmarks and `make demo` run against it instead of a real Twenty workspace; it is an
independent reading of Twenty's API (it shares no code with `truth_forge.twenty`).

    from truth_forge.sandbox import SandboxConfig, SandboxServer
    with SandboxServer(SandboxConfig(api_keys=["test-key"])) as sb:
        httpx.get(f"{sb.base_url}/rest/people",
                  headers={"Authorization": f"Bearer {sb.api_key}"})
"""

from truth_forge.sandbox.config import DEFAULT_API_KEY, SandboxConfig
from truth_forge.sandbox.faults import FaultSettings
from truth_forge.sandbox.requestlog import RequestLogEntry
from truth_forge.sandbox.server import SandboxServer, serve_forever
from truth_forge.sandbox.webhooks import WebhookDelivery

__all__ = [
    "DEFAULT_API_KEY",
    "FaultSettings",
    "RequestLogEntry",
    "SandboxConfig",
    "SandboxServer",
    "WebhookDelivery",
    "serve_forever",
]
