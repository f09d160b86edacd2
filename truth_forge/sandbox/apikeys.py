"""The workspace's API keys as Twenty lists them: `GET /rest/metadata/apiKeys` (and `/rest/apiKeys`).

Twenty keeps API keys in `core.apiKey` with an index on the workspace only: nothing makes a name
unique (`api-key.entity.ts`), and the actor a key writes into `updatedBy` carries the name alone.
The REST controller (`api-key.controller.ts`, both routes; the older one is deprecated) answers
a bare array of the workspace's keys whose `revokedAt` is null (`findActiveByWorkspaceId`: an
expired key is still listed), behind `SettingsPermissionGuard(API_KEYS_AND_WEBHOOKS)`, so a key
whose role lacks that permission gets 403. `POST` creates a key (name and `expiresAt`); the
token is made by a separate call in Twenty, so a key created here has no token in the sandbox:
it exists to be listed, e.g. a second key with our key's name.

In the sandbox, the tokens of `SandboxConfig.api_keys` are tokens of one key (the default key,
`api_key_name`); each token of `named_api_keys` is a key of its own.
"""

from __future__ import annotations

import threading
import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from truth_forge.sandbox.actors import Credential
from truth_forge.sandbox.clock import MonotonicClock, parse_iso_ms
from truth_forge.sandbox.config import SandboxConfig
from truth_forge.sandbox.errors import bad_request
from truth_forge.sandbox.metadata import stable_id

ROUTES = ("/rest/metadata/apiKeys", "/rest/apiKeys")
_NEVER = "2126-01-01T00:00:00.000Z"  # Twenty's UI offers "never expires" as a date far ahead


def key_id(config: SandboxConfig, cred: Credential) -> str:
    """The id of the key a token belongs to (what Twenty puts in the token's `jti`)."""
    token = "" if cred.token in config.api_keys else cred.token
    return stable_id(config.workspace_id, "apiKey", token)


class ApiKeyRegistry:
    def __init__(self, config: SandboxConfig, clock: MonotonicClock) -> None:
        self.config = config
        self._clock = clock
        self._lock = threading.Lock()
        self._created: list[dict[str, Any]] = []
        self._revoked: set[str] = set()

    def _configured(self) -> list[dict[str, Any]]:
        keys: dict[str, dict[str, Any]] = {}
        for cred in self.config.credentials.values():
            if cred.kind == "api_key":
                kid = key_id(self.config, cred)
                keys.setdefault(kid, self._entity(kid, cred.name, _NEVER, created="2026-01-01T00:00:00.000Z"))
        return list(keys.values())

    def _entity(self, kid: str, name: str, expires_at: str, *, created: str) -> dict[str, Any]:
        return {"id": kid, "name": name, "expiresAt": expires_at, "revokedAt": None,
                "workspaceId": self.config.workspace_id, "createdAt": created, "updatedAt": created,
                "deletedAt": None}

    def active(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(k) for k in [*self._configured(), *self._created] if k["id"] not in self._revoked]

    def create(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict) or not isinstance(body.get("name"), str) or not body["name"]:
            raise bad_request("name must be a non-empty string")
        expires_at = body.get("expiresAt")
        if not isinstance(expires_at, str) or parse_iso_ms(expires_at) is None:
            raise bad_request("expiresAt must be a date")
        now = self._clock.now_iso()
        entity = self._entity(str(uuid.uuid4()), body["name"], expires_at, created=now)
        with self._lock:
            self._created.append(entity)
        return dict(entity)

    def revoke(self, kid: str) -> dict[str, Any] | None:
        """Twenty's DELETE revokes (sets revokedAt); an unknown id answers null."""
        with self._lock:
            known = {k["id"]: k for k in [*self._configured(), *self._created]}
            if kid not in known:
                return None
            self._revoked.add(kid)
            return {**known[kid], "revokedAt": self._clock.now_iso()}

    def reset(self) -> None:
        with self._lock:
            self._created.clear()
            self._revoked.clear()


class ApiKeyRoutes:
    def __init__(self, registry: ApiKeyRegistry) -> None:
        self.registry = registry

    async def collection(self, request: Request) -> JSONResponse:
        if request.method == "POST":
            try:
                body = await request.json()
            except ValueError:
                raise bad_request("Invalid JSON body") from None
            return JSONResponse(self.registry.create(body), status_code=201)
        return JSONResponse(self.registry.active())

    async def one(self, request: Request) -> JSONResponse:
        kid = request.path_params["id"]
        if request.method == "DELETE":
            return JSONResponse(self.registry.revoke(kid))
        found = next((k for k in self.registry.active() if k["id"] == kid), None)
        return JSONResponse(found)

    def routes(self) -> list[Route]:
        out: list[Route] = []
        for prefix in ROUTES:
            out.append(Route(prefix, self.collection, methods=["GET", "POST"]))
            out.append(Route(prefix + "/{id}", self.one, methods=["GET", "DELETE"]))
        return out


def needs_settings_permission(path: str) -> bool:
    """Routes behind SettingsPermissionGuard(API_KEYS_AND_WEBHOOKS): API keys and webhooks."""
    return path.startswith((*ROUTES, "/rest/metadata/webhooks", "/rest/webhooks"))

