"""Writers that leave `updatedBy` alone: a merge of duplicates, and an older workflow step.

Twenty stamps `updatedBy` only in the query runner's create/update hooks. A merge
(common-merge-many-query-runner) updates the survivor through the repository with the merged
values, `updatedBy` (a system field) left out, so the survivor keeps its own stamp; the other
records go to the trash. Older workflow "update record" steps wrote through the repository too:
`/_sandbox/unstamped/{plural}/{id}` plays one. See docs/twenty-facts.md.
"""

from __future__ import annotations

from typing import Any

import httpx

from tests.sandbox.util import create_person, error_of
from truth_forge.sandbox import SandboxServer


def _get(client: httpx.Client, rid: str, **params: str) -> dict[str, Any]:
    response = client.get(f"/rest/people/{rid}", params=params)
    assert response.status_code == 200, response.text
    return dict(response.json()["data"]["person"])


def _merge(client: httpx.Client, body: dict[str, Any]) -> httpx.Response:
    return client.patch("/rest/people/merge", json=body)


def test_a_merge_keeps_the_survivors_updated_by_and_trashes_the_others(
        sandbox: SandboxServer, sandbox_client: httpx.Client, member_client: httpx.Client) -> None:
    ours = create_person(sandbox_client, first="Ada", email="ada@example.com", jobTitle="")
    theirs = create_person(member_client, first="Ada L.", email="ada.l@example.com", jobTitle="Countess",
                           city="London")
    response = _merge(member_client, {"ids": [ours["id"], theirs["id"]], "conflictPriorityIndex": 0})
    assert response.status_code == 200, response.text
    merged = response.json()["data"]["mergePeople"]
    assert merged["id"] == ours["id"]
    assert merged["name"]["firstName"] == "Ada"  # the priority record's value wins where it has one
    assert merged["jobTitle"] == "Countess" and merged["city"] == "London"  # the other's fills the gaps
    assert merged["emails"] == {"primaryEmail": "ada@example.com", "additionalEmails": ["ada.l@example.com"]}
    # Merged by a person, yet still stamped as the API key's write: no hook ran.
    assert merged["updatedBy"] == ours["updatedBy"] and merged["updatedBy"]["source"] == "API"
    assert merged["updatedAt"] > ours["updatedAt"]
    assert _get(sandbox_client, ours["id"])["city"] == "London"
    trashed = sandbox_client.get("/rest/people", params={"filter": f'and(id[eq]:"{theirs["id"]}",deletedAt[is]:NOT_NULL)'})
    assert trashed.json()["data"]["people"][0]["deletedAt"] is not None


def test_a_dry_run_merge_writes_nothing(sandbox_client: httpx.Client) -> None:
    one = create_person(sandbox_client, first="One", email="one@example.com")
    two = create_person(sandbox_client, first="Two", email="two@example.com", city="Oslo")
    response = _merge(sandbox_client, {"ids": [one["id"], two["id"]], "conflictPriorityIndex": 0, "dryRun": True})
    assert response.status_code == 200, response.text
    preview = response.json()["data"]["mergePeople"]
    assert preview["id"] not in (one["id"], two["id"]) and preview["city"] == "Oslo"
    assert _get(sandbox_client, one["id"])["city"] == "" and _get(sandbox_client, two["id"])["deletedAt"] is None


def test_a_merge_is_refused_without_two_live_records_or_a_valid_priority(sandbox_client: httpx.Client) -> None:
    one = create_person(sandbox_client, first="One")
    two = create_person(sandbox_client, first="Two")
    assert "at least two" in error_of(_merge(sandbox_client, {"ids": [one["id"]], "conflictPriorityIndex": 0}), 400)
    assert "conflictPriorityIndex" in error_of(
        _merge(sandbox_client, {"ids": [one["id"], two["id"]], "conflictPriorityIndex": 2}), 400)
    missing = "00000000-0000-4000-8000-000000000000"
    assert _merge(sandbox_client, {"ids": [one["id"], missing], "conflictPriorityIndex": 0}).status_code == 404
    assert sandbox_client.delete(f"/rest/people/{two['id']}", params={"soft_delete": "true"}).status_code == 200
    assert _merge(sandbox_client, {"ids": [one["id"], two["id"]], "conflictPriorityIndex": 0}).status_code == 404


def test_a_merge_moves_references_to_the_survivor(sandbox_client: httpx.Client) -> None:
    keep = sandbox_client.post("/rest/companies", json={"name": "Acme"}).json()["data"]["createCompany"]
    drop = sandbox_client.post("/rest/companies", json={"name": "ACME Inc"}).json()["data"]["createCompany"]
    worker = create_person(sandbox_client, first="Wile", companyId=drop["id"])
    response = sandbox_client.patch("/rest/companies/merge", json={"ids": [keep["id"], drop["id"]],
                                                                   "conflictPriorityIndex": 0})
    assert response.status_code == 200, response.text
    assert response.json()["data"]["mergeCompanies"]["name"] == "Acme"
    assert _get(sandbox_client, worker["id"])["companyId"] == keep["id"]


def test_an_unstamped_write_lands_and_keeps_the_last_editor(
        sandbox: SandboxServer, sandbox_client: httpx.Client, member_client: httpx.Client) -> None:
    ours = create_person(sandbox_client, first="Grace", city="Arlington")
    response = sandbox_client.patch(f"/_sandbox/unstamped/people/{ours['id']}", json={"city": "Annapolis"})
    assert response.status_code == 200, response.text
    after = _get(sandbox_client, ours["id"])
    assert after["city"] == "Annapolis" and after["updatedAt"] > ours["updatedAt"]
    assert after["updatedBy"] == ours["updatedBy"]  # still the API key's stamp
    # A stamped PATCH next to it does stamp: the switch is this route, nothing else changes.
    member = sandbox.actor(sandbox.member_token)
    assert member_client.patch(f"/rest/people/{ours['id']}", json={"city": "Bethesda"}).json()[
        "data"]["updatePerson"]["updatedBy"] == member
    # The control route answers API keys only, like every /_sandbox route.
    assert member_client.patch(f"/_sandbox/unstamped/people/{ours['id']}", json={"city": "X"}).status_code == 401
