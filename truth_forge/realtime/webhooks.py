"""Twenty's webhooks as truth-forge receives them: verify a delivery, read its event, and manage
the webhook in Twenty (`truth-forge webhooks register|list|remove`).

Why it exists: a webhook request is only trusted when it is signed the way Twenty signs
(`call-webhook.job.ts`): hex HMAC-SHA256, keyed with the webhook's secret, over
`"{X-Twenty-Webhook-Timestamp}:{raw body}"`, the timestamp in milliseconds. The nonce header is not
signed, so a replay is recognised by its nonce *and* by its signature (a copy with a fresh nonce
still carries the old signature, and an old timestamp). Everything here is pure, so the rules
are tested without a server; the server (truth_forge/realtime/server.py) only maps `Rejected` to a status.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from truth_forge.twenty.client import TwentyClient
from truth_forge.twenty.errors import TwentyNotFound
from truth_forge.twenty.metadata import MetadataApi

TIMESTAMP_HEADER = "x-twenty-webhook-timestamp"
SIGNATURE_HEADER = "x-twenty-webhook-signature"
NONCE_HEADER = "x-twenty-webhook-nonce"
DEFAULT_TOLERANCE_MS = 5 * 60 * 1000
OBJECTS = ("person", "company")  # what the sync moves; other objects' events are acknowledged and ignored
OPERATIONS = [f"{obj}.{action}" for obj in OBJECTS for action in ("created", "updated", "deleted", "destroyed",
                                                                   "restored")]
DESCRIPTION = "truth-forge: contacts to the warehouse"
# Twenty's record ids are UUIDs (Postgres `uuid` columns); anything else cannot name a record.
_TWENTY_ID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


class Rejected(Exception):
    """A request that must not be acted on; `status` is the HTTP answer, `reason` safe to log."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class SignedDelivery:
    """What identifies one delivery for replay checks."""

    timestamp_ms: int
    nonce: str
    signature: str


def signature_for(secret: str, timestamp: str, raw_body: bytes) -> str:
    return hmac.new(secret.encode("utf-8"), timestamp.encode("ascii") + b":" + raw_body, hashlib.sha256).hexdigest()


def verify_delivery(secret: str, headers: Mapping[str, str], raw_body: bytes, *, now_ms: int,
                    tolerance_ms: int = DEFAULT_TOLERANCE_MS) -> SignedDelivery:
    """Check a delivery's signature and age; raise Rejected(401) saying which check failed.

    `headers` must be case-insensitive or lower-cased (Starlette's are).
    """
    timestamp = headers.get(TIMESTAMP_HEADER)
    signature = headers.get(SIGNATURE_HEADER)
    nonce = headers.get(NONCE_HEADER)
    if not timestamp or not signature or not nonce:
        raise Rejected(401, "unsigned: timestamp, signature and nonce headers are required")
    if not timestamp.isascii() or not timestamp.isdigit() or len(timestamp) > 16:
        raise Rejected(401, "bad timestamp header")
    expected = signature_for(secret, timestamp, raw_body)
    if not hmac.compare_digest(expected, signature.strip().lower()):
        raise Rejected(401, "bad signature")
    if abs(now_ms - int(timestamp)) > tolerance_ms:
        raise Rejected(401, f"stale timestamp: more than {tolerance_ms // 1000}s from now")
    if len(nonce) > 128:
        raise Rejected(401, "bad nonce header")
    return SignedDelivery(int(timestamp), nonce, expected)


@dataclass(frozen=True)
class WebhookEvent:
    """One verified event, as the inbox keeps it and the applier reads it."""

    object_name: str  # 'person' | 'company' (others are never stored)
    action: str  # created | updated | deleted | destroyed | restored | upserted
    record_id: str
    record: dict[str, Any]
    event_date: str | None

    @property
    def updated_at(self) -> str | None:
        value = self.record.get("updatedAt")
        return value if isinstance(value, str) else None


def is_twenty_id(value: object) -> bool:
    return isinstance(value, str) and _TWENTY_ID.fullmatch(value) is not None


def parse_event(raw_body: bytes) -> WebhookEvent | None:
    """The event in a delivery body; None for objects the sync does not move; Rejected(400) if malformed."""
    try:
        body = json.loads(raw_body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise Rejected(400, "body is not JSON") from None
    if not isinstance(body, dict):
        raise Rejected(400, "body is not a JSON object")
    event_name, record = body.get("eventName"), body.get("record")
    if not isinstance(event_name, str) or event_name.count(".") != 1:
        raise Rejected(400, "eventName missing or not 'object.action'")
    object_name, action = event_name.split(".")
    if object_name not in OBJECTS:
        return None
    if not isinstance(record, dict) or not isinstance(record.get("id"), str) or not record["id"]:
        raise Rejected(400, "record missing or without an id")
    if not is_twenty_id(record["id"]):
        # Stored, it would become a contact no write can ever reach, pending with an error for good.
        raise Rejected(400, "record id is not a Twenty id (a UUID)")
    event_date = body.get("eventDate")
    return WebhookEvent(object_name, action, record["id"], record, event_date if isinstance(event_date, str) else None)


# --- the webhook in Twenty --------------------------------------------------------------------------


def new_secret() -> str:
    """32 random bytes as hex, like the secrets Twenty generates."""
    return secrets.token_hex(32)


def _on_either_route(metadata: MetadataApi, call: Any) -> Any:
    """Run `call(path)` on the current webhooks route, or on the older one where the server lacks it."""
    try:
        return call(MetadataApi.WEBHOOKS_PATH)
    except TwentyNotFound:
        return call(MetadataApi.LEGACY_WEBHOOKS_PATH)


def register_webhook(client: TwentyClient, url: str, secret: str) -> dict[str, Any]:
    """Create a webhook for person and company events delivered to `url`, signed with `secret`."""
    body = {"targetUrl": url, "operations": OPERATIONS, "description": DESCRIPTION, "secret": secret}
    return _on_either_route(client.metadata, lambda path: client.metadata.create_webhook(body, path))


def list_webhooks(client: TwentyClient) -> list[dict[str, Any]]:
    """The workspace's webhooks, secrets left out."""
    hooks = _on_either_route(client.metadata, client.metadata.list_webhooks)
    return [{k: v for k, v in hook.items() if k != "secret"} for hook in hooks]


def remove_webhook(client: TwentyClient, webhook_id: str) -> None:
    _on_either_route(client.metadata, lambda path: client.metadata.delete_webhook(webhook_id, path))
