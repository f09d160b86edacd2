"""Webhooks: registration (metadata API) and signed, asynchronous, fire-once deliveries.

Twenty posts a compact-JSON body signed with HMAC-SHA256 over `"{timestamp}:{body}"`, from a
background job, with a 5 s timeout and no retry. Deliveries here run on a small thread pool,
off the request path, and every outcome is kept so a test can see what was (not) delivered.
"""

from __future__ import annotations

import builtins
import hashlib
import hmac
import json
import logging
import re
import secrets
import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from truth_forge.sandbox.actors import CURRENT_CALLER
from truth_forge.sandbox.clock import MonotonicClock
from truth_forge.sandbox.config import SandboxConfig, is_loopback_host
from truth_forge.sandbox.errors import ApiError, bad_request
from truth_forge.sandbox.workspace import RecordEvent

log = logging.getLogger(__name__)

_OPERATION = re.compile(r"^(\*|[a-zA-Z][a-zA-Z0-9]*)\.(\*|[a-z]+)$")
ACTIONS = frozenset({"created", "updated", "deleted", "destroyed", "restored", "upserted"})


@dataclass
class WebhookDelivery:
    webhook_id: str
    target_url: str
    event_name: str
    body: str  # the exact bytes sent, decoded as UTF-8
    timestamp: str
    signature: str
    nonce: str
    status: int | None = None
    error: str | None = None
    duration_ms: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def sign(secret: str, timestamp: str, body: str) -> str:
    return hmac.new(secret.encode(), f"{timestamp}:{body}".encode(), hashlib.sha256).hexdigest()


def operation_matches(operations: list[str], event_name: str) -> bool:
    obj, action = event_name.split(".", 1)
    return any(op in operations for op in
               (event_name, f"*.{action}", f"{obj}.*", "*.*"))


def is_loopback_url(url: str) -> bool:
    return is_loopback_host(urlsplit(url).hostname or "")


class WebhookRegistry:
    """The workspace's webhooks; persisted as one document when SQLite is on."""

    def __init__(self, clock: MonotonicClock, store: Any) -> None:
        self._clock = clock
        self._store = store  # Workspace: persist_document / load_document
        self._lock = threading.Lock()
        self._hooks: dict[str, dict[str, Any]] = {
            h["id"]: h for h in (store.load_document("webhooks") or [])}

    def _save(self) -> None:
        self._store.persist_document("webhooks", list(self._hooks.values()))

    def reset(self) -> None:
        with self._lock:
            self._hooks.clear()
            self._save()

    def list(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(h) for h in self._hooks.values()]

    def get(self, hook_id: str) -> dict[str, Any]:
        with self._lock:
            hook = self._hooks.get(hook_id)
            if hook is None:
                raise ApiError(404, "NotFoundException", f"Webhook with id {hook_id} not found")
            return dict(hook)

    def create(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise bad_request("Request body should be a JSON object")
        _check_target(body.get("targetUrl"))
        operations = _check_operations(body.get("operations", ["*.*"]))
        hook_id = body.get("id") or str(uuid.uuid4())
        try:
            uuid.UUID(str(hook_id))
        except ValueError:
            raise bad_request("id must be a UUID") from None
        secret = body.get("secret")
        if secret is not None and not isinstance(secret, str):
            raise bad_request("secret must be a string")
        now = self._clock.now_iso()
        hook = {
            "id": hook_id,
            "targetUrl": body["targetUrl"],
            "operations": operations,
            "description": body.get("description"),
            # Twenty generates 32 random bytes (hex) when no secret is given.
            "secret": secret or secrets.token_hex(32),
            "applicationId": None,
            "createdAt": now,
            "updatedAt": now,
            "deletedAt": None,
        }
        with self._lock:
            if hook_id in self._hooks:
                raise bad_request(f"Webhook with id {hook_id} already exists")
            self._hooks[hook_id] = hook
            self._save()
        return dict(hook)

    def update(self, hook_id: str, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise bad_request("Request body should be a JSON object")
        # GraphQL's updateWebhook wraps changes in `update`; accept both shapes.
        changes = body.get("update", body) if isinstance(body.get("update"), dict) else body
        allowed = {"targetUrl", "operations", "description", "secret", "id"}
        unknown = set(changes) - allowed
        if unknown:
            raise bad_request(f"Cannot update {', '.join(sorted(unknown))} of a webhook")
        if "targetUrl" in changes:
            _check_target(changes["targetUrl"])
        if "operations" in changes:
            _check_operations(changes["operations"])
        with self._lock:
            hook = self._hooks.get(hook_id)
            if hook is None:
                raise ApiError(404, "NotFoundException", f"Webhook with id {hook_id} not found")
            for key in ("targetUrl", "operations", "description", "secret"):
                if key in changes:
                    hook[key] = changes[key]
            hook["updatedAt"] = self._clock.now_iso()
            self._save()
            return dict(hook)

    def delete(self, hook_id: str) -> dict[str, Any]:
        with self._lock:
            hook = self._hooks.pop(hook_id, None)
            if hook is None:
                raise ApiError(404, "NotFoundException", f"Webhook with id {hook_id} not found")
            self._save()
            return dict(hook)

    def matching(self, event_name: str) -> builtins.list[dict[str, Any]]:  # `list` is a method here
        with self._lock:
            return [dict(h) for h in self._hooks.values()
                    if operation_matches(h["operations"], event_name)]


def _check_target(url: Any) -> None:
    if not isinstance(url, str):
        raise bad_request("targetUrl must be a URL address")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise bad_request("targetUrl must be a URL address")


def _check_operations(operations: Any) -> list[str]:
    if not isinstance(operations, list) or not operations:
        raise bad_request("operations must be a non-empty array of strings")
    for op in operations:
        match = _OPERATION.match(op) if isinstance(op, str) else None
        if match is None or (match.group(2) != "*" and match.group(2) not in ACTIONS):
            raise bad_request(f"Invalid webhook operation {op!r}. eg: person.created, *.updated")
    return list(operations)


class WebhookDispatcher:
    """Turns record events into signed POSTs on a thread pool; keeps every outcome."""

    def __init__(self, config: SandboxConfig, registry: WebhookRegistry) -> None:
        self.config = config
        self.registry = registry
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="sandbox-webhook")
        self._client = httpx.Client(timeout=config.webhook_timeout_s, trust_env=False)
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._deliveries: list[WebhookDelivery] = []
        self._pending: set[Future[None]] = set()

    def on_events(self, events: list[RecordEvent]) -> None:
        # transform-event-batch-to-webhook-events.ts copies the event's userId and
        # workspaceMemberId; both are undefined (so absent from the JSON) for an API key's write.
        caller = CURRENT_CALLER.get()
        who: dict[str, Any] = {}
        if caller is not None and caller.kind == "member":
            who = {"userId": caller.user_id, "workspaceMemberId": caller.workspace_member_id}
        for event in events:
            event_name = f"{event.object.name_singular}.{event.action}"
            for hook in self.registry.matching(event_name):
                payload: dict[str, Any] = {
                    "targetUrl": hook["targetUrl"],
                    "eventName": event_name,
                    "objectMetadata": {"id": event.object.id,
                                       "nameSingular": event.object.name_singular},
                    "workspaceId": self.config.workspace_id,
                    "webhookId": hook["id"],
                    "eventDate": event.event_date,
                    **who,
                    "record": event.record,
                }
                if event.updated_fields is not None:
                    payload["updatedFields"] = event.updated_fields
                self._submit(hook, event_name, payload)

    def _submit(self, hook: dict[str, Any], event_name: str, payload: dict[str, Any]) -> None:
        with self._lock:
            future = self._pool.submit(self._deliver, hook, event_name, payload)
            self._pending.add(future)
        future.add_done_callback(self._done)

    def _done(self, future: Future[None]) -> None:
        exc = future.exception()
        if exc is not None:
            log.error("webhook delivery crashed", exc_info=exc)
        with self._cond:
            self._pending.discard(future)
            self._cond.notify_all()

    def _deliver(self, hook: dict[str, Any], event_name: str, payload: dict[str, Any]) -> None:
        body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
        timestamp = str(time.time_ns() // 1_000_000)
        delivery = WebhookDelivery(
            webhook_id=hook["id"], target_url=hook["targetUrl"], event_name=event_name,
            body=body, timestamp=timestamp, signature=sign(hook["secret"], timestamp, body),
            nonce=secrets.token_hex(16))
        started = time.perf_counter()
        if not self.config.webhook_allow_non_loopback and not is_loopback_url(hook["targetUrl"]):
            delivery.error = "blocked: the sandbox only delivers to loopback targets"
        else:
            try:
                response = self._client.post(
                    hook["targetUrl"], content=body.encode("utf-8"),
                    headers={"Content-Type": "application/json",
                             "X-Twenty-Webhook-Timestamp": timestamp,
                             "X-Twenty-Webhook-Signature": delivery.signature,
                             "X-Twenty-Webhook-Nonce": delivery.nonce})
                delivery.status = response.status_code
            except httpx.HTTPError as exc:
                # Twenty logs the failure and does not retry; the outcome is kept below.
                delivery.error = f"{type(exc).__name__}: {exc}"
        delivery.duration_ms = (time.perf_counter() - started) * 1000
        with self._cond:
            self._deliveries.append(delivery)
            self._cond.notify_all()

    def deliveries(self) -> list[WebhookDelivery]:
        with self._lock:
            return list(self._deliveries)

    def wait_for(self, count: int, timeout: float) -> list[WebhookDelivery]:
        """Block until at least `count` outcomes are recorded (or the timeout passes)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self._deliveries) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            return list(self._deliveries)

    def wait_idle(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._pending:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True

    def clear(self) -> None:
        with self._lock:
            self._deliveries.clear()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._client.close()
