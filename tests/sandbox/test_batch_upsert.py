"""Batch create and `?upsert=true` matching (reference §1.4)."""

from __future__ import annotations

import uuid

import httpx

from tests.sandbox.util import create_field, create_people, create_person, error_of, person
from truth_forge.sandbox import SandboxConfig, SandboxServer


def test_batch_envelope_and_order(sandbox_client: httpx.Client) -> None:
    created = create_people(sandbox_client, [person(f"P{i}") for i in range(5)])
    assert [p["name"]["firstName"] for p in created] == [f"P{i}" for i in range(5)]
    assert len({p["id"] for p in created}) == 5


def test_batch_limit_is_200_with_twentys_message(sandbox_client: httpx.Client) -> None:
    assert sandbox_client.post("/rest/batch/people",
                               json=[person(f"P{i}") for i in range(200)]).status_code == 201
    response = sandbox_client.post("/rest/batch/people", json=[person("x")] * 201)
    assert error_of(response, 400) == "Maximum number of records to upsert is 200."


def test_an_oversized_batch_naming_an_unknown_field_is_refused_for_the_field(sandbox_client: httpx.Client) -> None:
    # Twenty processes every record's fields before it counts them, so no read-only probe learns
    # the limit from it (common-base-query-runner.service.ts: processArgs runs before run()).
    response = sandbox_client.post("/rest/batch/people", json=[{"truthForgeProbe": 1}] * 201)
    assert "truthForgeProbe" in error_of(response, 400)


def test_docs_batch_limit_switch_enforces_60() -> None:
    config = SandboxConfig(api_keys=["k"], rate_limit_per_minute=None,
                           enforce_docs_batch_limit=True)
    with SandboxServer(config) as server:
        headers = {"Authorization": "Bearer k"}
        ok = httpx.post(f"{server.base_url}/rest/batch/people", headers=headers,
                        json=[person(f"P{i}") for i in range(60)])
        assert ok.status_code == 201
        too_many = httpx.post(f"{server.base_url}/rest/batch/people", headers=headers,
                              json=[person(f"P{i}") for i in range(61)])
        assert error_of(too_many, 400) == "Maximum number of records to upsert is 60."


def test_batch_body_must_be_an_array_and_single_create_an_object(
        sandbox_client: httpx.Client) -> None:
    assert sandbox_client.post("/rest/batch/people", json=person("x")).status_code == 400
    assert sandbox_client.post("/rest/people", json=[person("x")]).status_code == 400


def test_a_failing_batch_writes_nothing(sandbox_client: httpx.Client) -> None:
    items = [person("A", email="a@x.io"), person("B", email="b@x.io"), {"bogus": 1}]
    assert sandbox_client.post("/rest/batch/people", json=items).status_code == 400
    dup = [person("A", email="a@x.io"), person("A2", email="a@x.io")]
    assert sandbox_client.post("/rest/batch/people", json=dup).status_code == 400
    assert sandbox_client.get("/rest/people").json()["totalCount"] == 0


def test_upsert_matches_email_updates_and_keeps_created_by(sandbox_client: httpx.Client) -> None:
    sandbox_client.post("/rest/people", json={"createdBy": {"source": "IMPORT"},
                                              **person("Ada", email="ada@example.com")})
    before = sandbox_client.get("/rest/people").json()["data"]["people"][0]
    result = create_people(sandbox_client, [
        person("Ada", "Lovelace", "ada@example.com", jobTitle="CTO"),
        person("Bob", email="bob@example.com")], upsert=True)
    assert result[0]["id"] == before["id"]
    assert result[0]["jobTitle"] == "CTO" and result[0]["name"]["lastName"] == "Lovelace"
    assert result[0]["createdBy"]["source"] == "IMPORT"
    assert result[0]["createdAt"] == before["createdAt"]
    assert result[0]["updatedAt"] > before["updatedAt"]
    assert sandbox_client.get("/rest/people").json()["totalCount"] == 2


def test_single_create_upsert_and_literal_true_only(sandbox_client: httpx.Client) -> None:
    create_person(sandbox_client, first="Ada", email="ada@example.com")
    upserted = sandbox_client.post("/rest/people", params={"upsert": "true"},
                                   json=person("Ada", email="ada@example.com", city="Paris"))
    assert upserted.status_code == 201
    assert upserted.json()["data"]["createPerson"]["city"] == "Paris"
    not_upsert = sandbox_client.post("/rest/people", params={"upsert": "True"},
                                     json=person("Ada", email="ada@example.com"))
    assert not_upsert.status_code == 400


def test_upsert_revives_a_soft_deleted_match(sandbox_client: httpx.Client) -> None:
    ada = create_person(sandbox_client, first="Ada", email="ada@example.com")
    sandbox_client.delete(f"/rest/people/{ada['id']}", params={"soft_delete": "true"})
    result = create_people(sandbox_client, [person("Ada", email="ada@example.com")], upsert=True)
    assert result[0]["id"] == ada["id"]
    assert result[0]["deletedAt"] is None
    assert sandbox_client.get(f"/rest/people/{ada['id']}").status_code == 200


def test_upsert_matches_on_id_and_company_domain(sandbox_client: httpx.Client) -> None:
    rid = str(uuid.uuid4())
    create_people(sandbox_client, [{"id": rid, **person("Ada")}], upsert=True)
    again = create_people(sandbox_client, [{"id": rid, "jobTitle": "CEO"}], upsert=True)
    assert again[0]["id"] == rid and again[0]["jobTitle"] == "CEO"
    first = sandbox_client.post("/rest/batch/companies?upsert=true", json=[
        {"name": "Acme", "domainName": {"primaryLinkUrl": "https://acme.example"}}])
    second = sandbox_client.post("/rest/batch/companies?upsert=true", json=[
        {"name": "Acme Inc", "domainName": {"primaryLinkUrl": "https://ACME.example/"}}])
    assert first.json()["data"]["createCompanies"][0]["id"] == \
        second.json()["data"]["createCompanies"][0]["id"]
    assert second.json()["data"]["createCompanies"][0]["name"] == "Acme Inc"


def test_two_matches_on_different_keys_is_400(sandbox_client: httpx.Client) -> None:
    ada = create_person(sandbox_client, first="Ada", email="ada@example.com")
    create_person(sandbox_client, first="Bob", email="bob@example.com")
    response = sandbox_client.post("/rest/batch/people?upsert=true", json=[
        {"id": ada["id"], **person("X", email="bob@example.com")}])
    assert error_of(response, 400).startswith(
        "Multiple records found with the same unique field values")


def test_custom_unique_field_is_an_upsert_key(sandbox_client: httpx.Client) -> None:
    field = create_field(sandbox_client, "person", type="TEXT", name="contactId",
                         label="Contact id", isUnique=True)
    assert field.status_code == 201, field.text
    first = create_people(sandbox_client, [person("Ada", contactId="C-1")], upsert=True)
    second = create_people(sandbox_client, [person("Ada L", contactId="C-1")], upsert=True)
    assert first[0]["id"] == second[0]["id"]
    assert second[0]["name"]["firstName"] == "Ada L"
    dup = sandbox_client.post("/rest/people", json=person("Eve", contactId="C-1"))
    assert dup.status_code == 400


def test_batch_upsert_answers_updates_first_then_inserts(sandbox_client: httpx.Client) -> None:
    bob = create_person(sandbox_client, first="Bob", email="bob@example.com")
    result = create_people(sandbox_client, [
        person("Ada", email="ada@example.com"),
        person("Bob B", email="bob@example.com"),
        person("Cy", email="cy@example.com")], upsert=True)
    assert [p["name"]["firstName"] for p in result] == ["Bob B", "Ada", "Cy"]
    assert result[0]["id"] == bob["id"]


def test_batch_upsert_is_not_one_transaction(sandbox_client: httpx.Client) -> None:
    bob = create_person(sandbox_client, first="Bob", email="bob@example.com")
    # Both new rows carry the same new email: they are matched against the rows that existed
    # before the request (neither matches), so the INSERT of the two fails, after the update
    # of Bob has already been written.
    response = sandbox_client.post("/rest/batch/people?upsert=true", json=[
        person("Ada", email="ada@example.com"),
        person("Bob B", email="bob@example.com", jobTitle="CEO"),
        person("Ada again", email="ada@example.com")])
    assert error_of(response, 400) == \
        "A duplicate entry was detected. Duplicate Emails. Please set a unique one."
    people = sandbox_client.get("/rest/people").json()["data"]["people"]
    assert [(p["id"], p["jobTitle"]) for p in people] == [(bob["id"], "CEO")]


def test_a_plain_batch_insert_is_all_or_nothing(sandbox_client: httpx.Client) -> None:
    create_person(sandbox_client, first="Bob", email="bob@example.com")
    response = sandbox_client.post("/rest/batch/people", json=[
        person("Ada", email="ada@example.com"), person("Bob 2", email="bob@example.com")])
    assert response.status_code == 400
    assert sandbox_client.get("/rest/people").json()["totalCount"] == 1


def test_every_record_of_one_write_shares_one_updated_at(sandbox_client: httpx.Client) -> None:
    first = create_people(sandbox_client, [person(f"P{i}") for i in range(5)])
    assert len({p["updatedAt"] for p in first}) == 1
    assert {p["createdAt"] for p in first} == {first[0]["updatedAt"]}
    second = create_people(sandbox_client, [person(f"Q{i}") for i in range(5)])
    assert second[0]["updatedAt"] > first[0]["updatedAt"]
    updated = sandbox_client.patch("/rest/people", params={"filter": 'name.firstName[like]:"P%"'},
                                   json={"city": "Paris"}).json()["data"]["updatePeople"]
    assert len(updated) == 5 and len({p["updatedAt"] for p in updated}) == 1


def test_paging_by_updated_at_across_a_tie_sees_every_record_once(
        sandbox_client: httpx.Client) -> None:
    created = create_people(sandbox_client, [person(f"P{i:02d}") for i in range(40)])
    assert len({p["updatedAt"] for p in created}) == 1
    seen: list[str] = []
    cursor = None
    for _ in range(10):  # 40 records at 7 per page: 6 pages
        params = {"order_by": "updatedAt", "limit": "7",
                  **({"starting_after": cursor} if cursor else {})}
        body = sandbox_client.get("/rest/people", params=params).json()
        seen += [p["id"] for p in body["data"]["people"]]
        if not body["pageInfo"]["hasNextPage"]:
            break
        cursor = body["pageInfo"]["endCursor"]
    assert sorted(seen) == sorted(p["id"] for p in created) and len(seen) == 40
