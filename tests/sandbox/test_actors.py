"""Who wrote what: createdBy/updatedBy stamped with the caller's actor, as Twenty's hooks do.

Current servers stamp `updatedBy` on every create and on the update step of a batch upsert
(the createMany hook) and on PATCH; delete, destroy and restore leave it alone. The legacy
profile stamps it on PATCH only. See docs/twenty-facts.md §8.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.fixtures.sandbox import SANDBOX_MEMBER_NAME
from tests.sandbox.util import create_people, create_person, person
from truth_forge.sandbox import SandboxConfig, SandboxServer

API_ACTOR = {"source": "API", "workspaceMemberId": None, "name": "Sandbox API key", "context": {}}


def _get(client: httpx.Client, rid: str) -> dict[str, Any]:
    response = client.get(f"/rest/people/{rid}")
    assert response.status_code == 200, response.text
    return dict(response.json()["data"]["person"])


def _patch(client: httpx.Client, rid: str, **body: Any) -> dict[str, Any]:
    response = client.patch(f"/rest/people/{rid}", json=body)
    assert response.status_code == 200, response.text
    return dict(response.json()["data"]["updatePerson"])


def test_api_key_and_member_actors_are_stamped(sandbox: SandboxServer,
                                               sandbox_client: httpx.Client,
                                               member_client: httpx.Client) -> None:
    member = sandbox.actor(sandbox.member_token)
    assert member["source"] == "MANUAL" and member["name"] == SANDBOX_MEMBER_NAME
    assert member["workspaceMemberId"] and member["context"] == {}
    assert sandbox.actor() == API_ACTOR

    by_api = create_person(sandbox_client, first="Api")
    assert by_api["createdBy"] == API_ACTOR and by_api["updatedBy"] == API_ACTOR
    by_member = create_person(member_client, first="Ui")
    assert by_member["createdBy"] == member and by_member["updatedBy"] == member

    # A person edits the API's record: updatedBy is the person, createdBy stays the key.
    edited = _patch(member_client, by_api["id"], jobTitle="Editor")
    assert edited["updatedBy"] == member and edited["createdBy"] == API_ACTOR
    # PATCH on the collection (update-many hook) stamps too.
    response = sandbox_client.patch("/rest/people", params={"filter": f'id[eq]:{by_member["id"]}'},
                                    json={"jobTitle": "Bulk"})
    assert response.status_code == 200, response.text
    assert _get(sandbox_client, by_member["id"])["updatedBy"] == API_ACTOR


def test_batch_upsert_update_step_stamps_updated_by(sandbox_client: httpx.Client,
                                                    member_client: httpx.Client,
                                                    sandbox: SandboxServer) -> None:
    [rec] = create_people(sandbox_client, [person("Grace", email="grace@navy.mil")])
    _patch(member_client, rec["id"], jobTitle="Admiral")
    assert _get(sandbox_client, rec["id"])["updatedBy"]["source"] == "MANUAL"
    [upserted] = create_people(sandbox_client, [person("Grace", email="grace@navy.mil",
                                                       jobTitle="Rear admiral")], upsert=True)
    assert upserted["id"] == rec["id"]
    assert upserted["updatedBy"] == API_ACTOR
    assert upserted["createdBy"] == API_ACTOR  # the update step never rewrites createdBy


def test_legacy_stamps_updated_by_on_patch_only(legacy_sandbox: SandboxServer,
                                                legacy_client: httpx.Client,
                                                legacy_member_client: httpx.Client) -> None:
    member = legacy_sandbox.actor(legacy_sandbox.member_token)
    [rec] = create_people(legacy_client, [person("Grace", email="grace@navy.mil")])
    assert rec["createdBy"]["source"] == "API"
    # Nothing injected updatedBy on create: the column default.
    assert rec["updatedBy"]["source"] == "MANUAL" and rec["updatedBy"]["name"] == "System"
    assert _patch(legacy_member_client, rec["id"], jobTitle="Admiral")["updatedBy"] == member
    [upserted] = create_people(legacy_client, [person("Grace", email="grace@navy.mil",
                                                      jobTitle="Rear admiral")], upsert=True)
    assert upserted["jobTitle"] == "Rear admiral"
    assert upserted["updatedBy"] == member  # the upsert's update step left it alone
    assert _patch(legacy_client, rec["id"], jobTitle="x")["updatedBy"]["source"] == "API"


def test_delete_destroy_and_restore_keep_updated_by(sandbox_client: httpx.Client,
                                                    member_client: httpx.Client,
                                                    sandbox: SandboxServer) -> None:
    member = sandbox.actor(sandbox.member_token)
    rec = create_person(sandbox_client, first="Ada")
    edited = _patch(member_client, rec["id"], jobTitle="Countess")
    deleted = sandbox_client.delete(f"/rest/people/{rec['id']}", params={"soft_delete": "true"})
    assert deleted.status_code == 200, deleted.text
    assert deleted.json()["data"]["deletePerson"]["updatedBy"] == member
    restored = sandbox_client.patch(f"/rest/people/{rec['id']}/restore")
    assert restored.status_code == 200, restored.text
    body = restored.json()["data"]["restorePerson"]
    assert body["updatedBy"] == member
    assert body["updatedAt"] > edited["updatedAt"]  # restore still bumps updatedAt
    destroyed = sandbox_client.delete(f"/rest/people/{rec['id']}")
    assert destroyed.status_code == 200, destroyed.text


def test_created_by_input(sandbox_client: httpx.Client, sandbox: SandboxServer) -> None:
    # Only a source: kept, the rest is the caller.
    rec = create_person(sandbox_client, first="A", createdBy={"source": "IMPORT"})
    assert rec["createdBy"] == {**API_ACTOR, "source": "IMPORT"}
    assert rec["updatedBy"] == API_ACTOR
    # A createdBy that names someone is kept as given.
    rec = create_person(sandbox_client, first="B",
                        createdBy={"source": "MANUAL", "name": "Import script"})
    assert rec["createdBy"]["name"] == "Import script"
    assert rec["createdBy"]["source"] == "MANUAL"
    # updatedBy from a client is ignored: the hook always overwrites it.
    rec = create_person(sandbox_client, first="C", updatedBy={"source": "MANUAL", "name": "Me"})
    assert rec["updatedBy"] == API_ACTOR
    bad = sandbox_client.post("/rest/people", json={"createdBy": {"source": "NOPE"}})
    assert bad.status_code == 400


def test_named_api_keys_and_members_from_config() -> None:
    config = SandboxConfig(api_keys=["plain"], named_api_keys={"k2": "Nightly sync"},
                           member_tokens={"t1": "Ada Lovelace", "t2": "Alan Turing"},
                           rate_limit_per_minute=1)
    with SandboxServer(config) as sb, httpx.Client(base_url=sb.base_url, timeout=10) as http:
        def post(token: str, first: str) -> httpx.Response:
            return http.post("/rest/people", json=person(first),
                             headers={"Authorization": f"Bearer {token}"})

        first = post("k2", "X")
        assert first.status_code == 201, first.text
        assert first.json()["data"]["createPerson"]["updatedBy"]["name"] == "Nightly sync"
        # The bucket (one request a minute, shared by every key of the workspace) is empty:
        assert post("plain", "Y").status_code == 429
        # ... but a logged-in member is never throttled (only API keys are).
        for token, name in (("t1", "Ada Lovelace"), ("t2", "Alan Turing"), ("t1", "Ada Lovelace")):
            response = post(token, "Z")
            assert response.status_code == 201, response.text
            actor = response.json()["data"]["createPerson"]["updatedBy"]
            assert actor == sb.actor(token) and actor["name"] == name
        assert sb.actor("t1")["workspaceMemberId"] != sb.actor("t2")["workspaceMemberId"]
        assert post("nope", "W").status_code == 401
        # The admin endpoints take API keys only.
        assert http.get("/_sandbox/health", headers={"Authorization": "Bearer t1"}).status_code == 401
        assert http.get("/_sandbox/health", headers={"Authorization": "Bearer k2"}).status_code == 200


def test_member_ids_are_stable_across_servers() -> None:
    config = SandboxConfig(member_tokens={"t": "Ada Lovelace"})
    with SandboxServer(config) as a, SandboxServer(SandboxConfig(member_tokens={"t": "Ada Lovelace"})) as b:
        assert a.actor("t") == b.actor("t")


def test_bad_credential_config_is_refused() -> None:
    with pytest.raises(ValueError):
        SandboxConfig(api_keys=["same"], member_tokens={"same": "Ada Lovelace"})
    with pytest.raises(ValueError):
        SandboxConfig(member_tokens={"t": " "})
    with pytest.raises(LookupError):
        _ = SandboxServer(SandboxConfig()).member_token
