"""Objects and fields of a Twenty workspace (the metadata REST API).

Twenty answers metadata requests in one of two envelopes, chosen per workspace by a feature flag
(new: the object itself or `{"data": [...]}`; legacy: `{"data": {"<operation>": ...}}`). Both are
accepted here, so callers only ever see plain object and field dicts.
"""

from __future__ import annotations

from typing import Any

from truth_forge.twenty.errors import TwentyNotFound, TwentyProtocolError
from truth_forge.twenty.transport import Transport

METADATA_PAGE_SIZE = 1000  # the metadata API's default and maximum


def _unwrap_list(body: Any, legacy_key: str, path: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    if isinstance(body, list):  # very old servers
        return body, {}
    if isinstance(body, dict):
        data = body.get("data")
        if isinstance(data, list):
            return data, body.get("pageInfo") or {}
        if isinstance(data, dict) and isinstance(data.get(legacy_key), list):
            return data[legacy_key], body.get("pageInfo") or {}
    raise TwentyProtocolError(f"Unexpected metadata list shape from {path}", method="GET", path=path,
                              body_excerpt=str(body)[:300])


def _unwrap_one(body: Any, path: str, method: str) -> dict[str, Any]:
    if isinstance(body, dict):
        data = body.get("data")
        if isinstance(data, dict) and len(data) == 1 and isinstance(next(iter(data.values())), dict):
            return next(iter(data.values()))  # legacy: {"data": {"createOneField": {...}}}
        if "id" in body:
            return body
    raise TwentyProtocolError(f"Unexpected metadata shape from {path}", method=method, path=path,
                              body_excerpt=str(body)[:300])


class MetadataApi:
    """Read the data model, add fields and options, manage webhooks."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport

    def _list_all(self, path: str, legacy_key: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        cursor: str | None = None
        for _ in range(10_000):  # a workspace has far fewer than 10M metadata rows; bounded anyway
            body = self.transport.request(
                "GET", path, params={"limit": METADATA_PAGE_SIZE, "starting_after": cursor}
            )
            page, info = _unwrap_list(body, legacy_key, path)
            items.extend(page)
            if not info.get("hasNextPage") or not page:
                return items
            cursor = info.get("endCursor") or page[-1].get("id")
        raise TwentyProtocolError("Metadata paging did not end", method="GET", path=path)

    def list_objects(self) -> list[dict[str, Any]]:
        """Every object with its `fields` list."""
        return self._list_all("/rest/metadata/objects", "objects")

    def get_object(self, name_singular: str) -> dict[str, Any] | None:
        for obj in self.list_objects():
            if obj.get("nameSingular") == name_singular:
                return obj
        return None

    def create_field(self, field: dict[str, Any]) -> dict[str, Any]:
        path = "/rest/metadata/fields"
        return _unwrap_one(self.transport.request("POST", path, json_body=field, idempotent=False), path, "POST")

    def update_field(self, field_id: str, patch: dict[str, Any]) -> dict[str, Any]:
        path = f"/rest/metadata/fields/{field_id}"
        return _unwrap_one(self.transport.request("PATCH", path, json_body=patch), path, "PATCH")

    # Webhooks live under /rest/metadata/webhooks; servers from before that move only have the
    # older /rest/webhooks (a workspace object then). Both answer in the envelopes handled above.
    WEBHOOKS_PATH = "/rest/metadata/webhooks"
    LEGACY_WEBHOOKS_PATH = "/rest/webhooks"

    def list_webhooks(self, path: str = WEBHOOKS_PATH) -> list[dict[str, Any]]:
        return self._list_all(path, "webhooks")

    def create_webhook(self, webhook: dict[str, Any], path: str = WEBHOOKS_PATH) -> dict[str, Any]:
        return _unwrap_one(self.transport.request("POST", path, json_body=webhook, idempotent=False), path, "POST")

    def delete_webhook(self, webhook_id: str, path: str = WEBHOOKS_PATH) -> None:
        self.transport.request("DELETE", f"{path}/{webhook_id}")

    # API keys: GET answers a bare array of the workspace's keys not revoked (api-key.controller.ts;
    # /rest/apiKeys is the deprecated alias), behind the API_KEYS_AND_WEBHOOKS permission (403 without).
    API_KEYS_PATH = "/rest/metadata/apiKeys"
    LEGACY_API_KEYS_PATH = "/rest/apiKeys"

    def list_api_keys(self) -> list[dict[str, Any]]:
        """The workspace's API keys (id, name, expiresAt, revokedAt...); never their tokens."""
        try:
            body = self.transport.request("GET", self.API_KEYS_PATH)
        except TwentyNotFound:
            body = self.transport.request("GET", self.LEGACY_API_KEYS_PATH)
        if isinstance(body, list):
            return [k for k in body if isinstance(k, dict)]
        keys, _ = _unwrap_list(body, "apiKeys", self.API_KEYS_PATH)
        return keys
