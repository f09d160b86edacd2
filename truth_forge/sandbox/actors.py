"""Who is calling: the sandbox's credentials and the actor each one writes into records.

Twenty stamps `createdBy`/`updatedBy` with the caller's actor (docs/twenty-facts.md §8): an API
key writes `{source: API, name: <key name>}`, a logged-in workspace member writes
`{source: MANUAL, name: "<first> <last>", workspaceMemberId: <id>}`. Tests act as a person editing
in the UI with a member token; only API keys are rate-limited, as in Twenty.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Literal

from truth_forge.sandbox.metadata import stable_id

CredentialKind = Literal["api_key", "member"]


@dataclass(frozen=True)
class Credential:
    token: str
    kind: CredentialKind
    name: str  # the API key's name, or the member's full name
    workspace_member_id: str | None = None

    @property
    def rate_limited(self) -> bool:
        # Twenty throttles API-key (and application) requests only, never user sessions.
        return self.kind == "api_key"

    @property
    def user_id(self) -> str | None:
        """A member's user id (a user and their workspace membership are two records in Twenty)."""
        return None if self.workspace_member_id is None else stable_id(self.workspace_member_id, "user")

    def actor(self) -> dict[str, Any]:
        """A fresh actor value, as `buildCreatedByFrom...` builds it for this caller."""
        if self.kind == "member":
            return {"source": "MANUAL", "workspaceMemberId": self.workspace_member_id,
                    "name": self.name, "context": {}}
        return {"source": "API", "workspaceMemberId": None, "name": self.name, "context": {}}


# The caller of the request being handled (set by the app's outer layer): record events emitted
# while handling it carry that caller into webhook bodies, as Twenty's events carry the auth context.
CURRENT_CALLER: ContextVar[Credential | None] = ContextVar("sandbox_current_caller", default=None)


def member_id(workspace_id: str, token: str) -> str:
    """A workspace member's id, stable for one workspace and token (survives restarts)."""
    return stable_id(workspace_id, "workspaceMember", token)


def build_credentials(api_keys: list[str], api_key_name: str, named_api_keys: dict[str, str],
                      member_tokens: dict[str, str], workspace_id: str) -> dict[str, Credential]:
    """token -> Credential; a token given twice is refused (it would have two actors)."""
    creds: dict[str, Credential] = {}

    def add(cred: Credential) -> None:
        if not cred.token:
            raise ValueError("a credential token must not be empty")
        if cred.token in creds and creds[cred.token] != cred:
            raise ValueError("a token is declared twice with different actors")
        creds[cred.token] = cred

    for key in api_keys:
        add(Credential(key, "api_key", api_key_name))
    for key, name in named_api_keys.items():
        add(Credential(key, "api_key", name))
    for token, name in member_tokens.items():
        if not name.strip():
            raise ValueError("a workspace member needs a name")
        add(Credential(token, "member", name, member_id(workspace_id, token)))
    return creds

