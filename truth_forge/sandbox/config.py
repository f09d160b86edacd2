"""Configuration of one sandbox server.

Exists so that tests, benchmarks, the CLI and `make demo` describe a sandbox the same way: one
plain dataclass, no environment lookups hidden inside the server.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Literal

from truth_forge.sandbox.actors import Credential, build_credentials
from truth_forge.sandbox.profiles import (
    DEFAULT_PROFILE,
    Behaviour,
    CursorPaging,
    EmailCheck,
    RefillMode,
    resolve,
)

DEFAULT_API_KEY = "sandbox-api-key"
# Node's default --max-http-header-size: a request line and headers together over this get 431.
NODE_MAX_HEADER_BYTES = 16 * 1024
# A fixed workspace id keeps object/field metadata ids stable across restarts (SQLite mode).
DEFAULT_WORKSPACE_ID = "3b8e6458-5fc1-4e63-8563-008ccddaa6db"


@dataclass
class SandboxConfig:
    """Everything a sandbox needs to start; every field has a Twenty-like default."""

    # Tokens of the workspace's one default API key (named `api_key_name`): several tokens of
    # one key, as Twenty can generate more than one token for the same key.
    api_keys: list[str] = field(default_factory=lambda: [DEFAULT_API_KEY])
    host: str = "127.0.0.1"
    port: int = 0
    workspace_id: str = DEFAULT_WORKSPACE_ID
    # Name written into createdBy/updatedBy for records made with a key of `api_keys`.
    api_key_name: str = "Sandbox API key"
    # More API keys, one key per token, each with its name: {token: key name}. A name may repeat
    # (Twenty does not make key names unique).
    named_api_keys: dict[str, str] = field(default_factory=dict)
    # Bearer tokens that act as a logged-in workspace member (a person in the UI), not rate
    # limited: {token: "First Last"}. The member's id is derived from the workspace and token.
    member_tokens: dict[str, str] = field(default_factory=dict)
    # Added to the server's clock (timestamps and the Date header), to play a skewed server.
    clock_offset_ms: int = 0
    # None = in memory; a path = every mutation is written through to that SQLite file.
    db_path: str | None = None
    # Token bucket per workspace (Twenty: API_RATE_LIMITING_LONG_LIMIT=100 per 60000 ms).
    # None disables rate limiting.
    rate_limit_per_minute: int | None = 100
    rate_limit_burst: int | None = None  # None = same as the limit (Twenty's bucket size)
    rate_limit_window_ms: int = 60_000
    # "gateway": a proxy in front of Twenty that sends X-RateLimit-* on every answer (Twenty does not).
    rate_limit_style: Literal["legacy", "v2", "gateway"] = "legacy"
    # QUERY_MAX_RECORDS=200 in the server code; the docs say 60 per call.
    enforce_docs_batch_limit: bool = False
    # IS_REST_METADATA_API_NEW_FORMAT_DIRECT: new workspaces get the new format.
    metadata_format: Literal["new", "legacy"] = "new"
    webhook_timeout_s: float = 5.0
    # Real Twenty blocks private targets; the sandbox does the opposite for safety:
    # only loopback targets are contacted unless this is switched on.
    webhook_allow_non_loopback: bool = False
    # A proxy in front (a "proxy profile"): request lines longer than this are refused with 414, as
    # nginx does past its 8 KB header buffer (8192). None = no proxy, only Node's 16 KiB (431).
    max_request_line: int | None = None
    # Upper bound on the in-memory request log so a long benchmark cannot exhaust memory.
    request_log_limit: int = 200_000
    # Which Twenty rules to follow (profiles.PROFILES): "latest" (strictest, default) or
    # "legacy". The switches below override single rules of the profile; None = the profile's.
    twenty_version: str = DEFAULT_PROFILE
    email_check: EmailCheck | None = None
    not_found_status: Literal[404, 400] | None = None
    rate_limit_refill: RefillMode | None = None
    empty_text_to_null: bool | None = None
    links_update_merges: bool | None = None
    create_stamps_updated_by: bool | None = None
    cursor_paging: CursorPaging | None = None
    error_codes: bool | None = None
    fields_cap: int | None = None  # 0 = no cap
    # Twenty's short rate-limit bucket (API_RATE_LIMITING_SHORT_LIMIT per _SHORT_TTL_IN_MS,
    # default 100 per 1000 ms), checked before the long one above; None switches it off.
    rate_limit_short_limit: int | None = 100
    rate_limit_short_window_ms: int = 1_000
    # Tokens of API keys whose role lacks the API_KEYS_AND_WEBHOOKS permission: they may read
    # and write records but get 403 on /rest/metadata/apiKeys and the webhook routes.
    api_keys_without_settings_permission: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.api_keys:
            raise ValueError("at least one API key is required")
        _ = self.credentials  # a token declared twice fails here
        if not is_loopback_host(self.host):
            raise ValueError(f"the sandbox binds loopback addresses only, not {self.host!r}")
        if self.max_request_line is not None and self.max_request_line < 64:
            raise ValueError("max_request_line must be at least 64 bytes")
        # An unknown profile or a bad override fails here, not in the middle of a request.
        _ = self.behaviour

    @property
    def behaviour(self) -> Behaviour:
        return resolve(self.twenty_version, {
            "email_check": self.email_check, "not_found_status": self.not_found_status,
            "rate_limit_refill": self.rate_limit_refill,
            "empty_text_to_null": self.empty_text_to_null,
            "links_update_merges": self.links_update_merges,
            "create_stamps_updated_by": self.create_stamps_updated_by,
            "cursor_paging": self.cursor_paging, "error_codes": self.error_codes, "fields_cap": self.fields_cap})

    @property
    def credentials(self) -> dict[str, Credential]:
        """Every accepted Bearer token and who it acts as."""
        return build_credentials(self.api_keys, self.api_key_name, self.named_api_keys,
                                 self.member_tokens, self.workspace_id)

    @property
    def short_bucket(self) -> tuple[int, int] | None:
        if self.rate_limit_short_limit is None:
            return None
        return self.rate_limit_short_limit, self.rate_limit_short_window_ms

    @property
    def batch_max(self) -> int:
        return 60 if self.enforce_docs_batch_limit else 200

    @property
    def effective_burst(self) -> int:
        return self.rate_limit_burst or self.rate_limit_per_minute or 0


def is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
