"""Record CRUD, envelopes and server-side value handling (reference §1.1-§1.3)."""

from __future__ import annotations

import uuid

import httpx
import pytest

from tests.sandbox.util import create_person, error_of, person
from truth_forge.sandbox import SandboxServer


def test_create_one_envelope_and_server_fields(sandbox_client: httpx.Client) -> None:
    response = sandbox_client.post("/rest/people", json=person("Ada", "Lovelace", "ada@example.com"))
    assert response.status_code == 201
    record = response.json()["data"]["createPerson"]
    uuid.UUID(record["id"])
    assert record["name"] == {"firstName": "Ada", "lastName": "Lovelace"}
    assert record["emails"] == {"primaryEmail": "ada@example.com", "additionalEmails": None}
    assert record["createdBy"] == {"source": "API", "workspaceMemberId": None,
                                   "name": "Sandbox API key", "context": {}}
    assert record["createdAt"] == record["updatedAt"]
    assert record["createdAt"].endswith("Z") and len(record["createdAt"]) == 24
    assert record["deletedAt"] is None
    assert record["companyId"] is None
    assert "company" not in record  # depth 0: join id only
    assert isinstance(record["position"], (int, float))


def test_client_may_set_created_by_source_and_id(sandbox_client: httpx.Client) -> None:
    rid = str(uuid.uuid4())
    response = sandbox_client.post("/rest/people", json={
        "id": rid, "createdBy": {"source": "EMAIL"}, **person("Ada")})
    record = response.json()["data"]["createPerson"]
    assert record["id"] == rid
    assert record["createdBy"]["source"] == "EMAIL"
    again = sandbox_client.post("/rest/people", json={"id": rid, **person("Bob")})
    assert error_of(again, 400) == "Record already exists"


def test_get_one_update_patch_and_put(sandbox_client: httpx.Client) -> None:
    created = create_person(sandbox_client, first="Ada", email="ada@example.com")
    got = sandbox_client.get(f"/rest/people/{created['id']}")
    assert got.status_code == 200 and got.json()["data"]["person"] == created
    patched = sandbox_client.patch(f"/rest/people/{created['id']}", json={"jobTitle": "CTO"})
    assert patched.status_code == 200
    updated = patched.json()["data"]["updatePerson"]
    assert updated["jobTitle"] == "CTO"
    assert updated["emails"]["primaryEmail"] == "ada@example.com"  # untouched fields stay
    assert updated["updatedAt"] > created["updatedAt"]
    assert updated["createdAt"] == created["createdAt"]
    put = sandbox_client.put(f"/rest/people/{created['id']}", json={"city": "Paris"})
    assert put.json()["data"]["updatePerson"]["city"] == "Paris"
    assert put.json()["data"]["updatePerson"]["jobTitle"] == "CTO"


def test_updated_at_strictly_increases_even_in_a_burst(sandbox_client: httpx.Client) -> None:
    created = create_person(sandbox_client, first="Ada")
    stamps = [created["updatedAt"]]
    for i in range(15):
        response = sandbox_client.patch(f"/rest/people/{created['id']}", json={"city": str(i)})
        stamps.append(response.json()["data"]["updatePerson"]["updatedAt"])
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)


def test_partial_composite_update_keeps_other_subfields(sandbox_client: httpx.Client) -> None:
    created = create_person(sandbox_client, first="Ada", last="Lovelace")
    response = sandbox_client.patch(f"/rest/people/{created['id']}",
                                     json={"name": {"firstName": "Augusta"}})
    assert response.json()["data"]["updatePerson"]["name"] == {"firstName": "Augusta",
                                                               "lastName": "Lovelace"}


def test_destroy_returns_only_the_id_and_removes_the_row(sandbox_client: httpx.Client) -> None:
    created = create_person(sandbox_client, first="Ada")
    response = sandbox_client.delete(f"/rest/people/{created['id']}")
    assert response.status_code == 200
    assert response.json() == {"data": {"deletePerson": {"id": created["id"]}}}
    assert sandbox_client.get(f"/rest/people/{created['id']}").status_code == 404
    restore = sandbox_client.patch(f"/rest/people/{created['id']}/restore")
    assert restore.status_code == 404  # destroyed rows cannot come back


def test_soft_delete_hides_and_restore_brings_back_both_paths(
        sandbox_client: httpx.Client) -> None:
    a = create_person(sandbox_client, first="Ada")
    b = create_person(sandbox_client, first="Bob")
    for record, path in ((a, f"/rest/people/{a['id']}/restore"),
                         (b, f"/rest/restore/people/{b['id']}")):
        deleted = sandbox_client.delete(f"/rest/people/{record['id']}",
                                        params={"soft_delete": "true"})
        assert deleted.status_code == 200
        body = deleted.json()["data"]["deletePerson"]
        assert body["id"] == record["id"] and body["deletedAt"] is not None
        assert sandbox_client.get(f"/rest/people/{record['id']}").status_code == 404
        listed = sandbox_client.get("/rest/people").json()["data"]["people"]
        assert record["id"] not in [p["id"] for p in listed]
        restored = sandbox_client.patch(path)
        assert restored.status_code == 200, restored.text
        assert restored.json()["data"]["restorePerson"]["deletedAt"] is None
        assert sandbox_client.get(f"/rest/people/{record['id']}").status_code == 200


def test_soft_delete_flag_must_be_literal_true(sandbox_client: httpx.Client) -> None:
    created = create_person(sandbox_client, first="Ada")
    response = sandbox_client.delete(f"/rest/people/{created['id']}",
                                     params={"soft_delete": "1"})
    assert response.json()["data"]["deletePerson"] == {"id": created["id"]}  # destroyed


def test_many_forms_update_delete_restore(sandbox_client: httpx.Client) -> None:
    for i in range(3):
        create_person(sandbox_client, first=f"P{i}", jobTitle="Analyst")
    create_person(sandbox_client, first="Other", jobTitle="CEO")
    flt = {"filter": 'jobTitle[eq]:"Analyst"'}
    updated = sandbox_client.patch("/rest/people", params=flt, json={"city": "Lyon"})
    assert [p["city"] for p in updated.json()["data"]["updatePeople"]] == ["Lyon"] * 3
    assert error_of(sandbox_client.delete("/rest/people"), 400)  # a filter is required
    deleted = sandbox_client.delete("/rest/people", params={**flt, "soft_delete": "true"})
    assert len(deleted.json()["data"]["deletePeople"]) == 3
    assert sandbox_client.get("/rest/people").json()["totalCount"] == 1
    restored = sandbox_client.patch("/rest/people/restore", params=flt)
    assert len(restored.json()["data"]["restorePeople"]) == 3
    sandbox_client.delete("/rest/people", params={**flt, "soft_delete": "true"})
    restored_old = sandbox_client.patch("/rest/restore/people", params=flt)
    assert len(restored_old.json()["data"]["restorePeople"]) == 3
    destroyed = sandbox_client.delete("/rest/people", params=flt)
    assert all(set(p) == {"id"} for p in destroyed.json()["data"]["deletePeople"])
    assert sandbox_client.get("/rest/people").json()["totalCount"] == 1


def test_links_are_normalised(sandbox_client: httpx.Client) -> None:
    response = sandbox_client.post("/rest/companies", json={
        "name": "Acme",
        "domainName": {"primaryLinkUrl": "HTTPS://Acme.Example/"},
        "linkedinLink": {"primaryLinkUrl": "https://www.LinkedIn.com/Company/Acme/",
                         "secondaryLinks": [{"url": "https://ACME.dev/", "label": "dev"}]}})
    company = response.json()["data"]["createCompany"]
    assert company["domainName"]["primaryLinkUrl"] == "https://acme.example"
    assert company["linkedinLink"]["primaryLinkUrl"] == "https://www.linkedin.com/Company/Acme"
    assert company["linkedinLink"]["secondaryLinks"] == [{"url": "https://acme.dev",
                                                          "label": "dev"}]
    assert company["name"] == "Acme"  # company name is TEXT
    assert company["idealCustomerProfile"] is False


def test_mixed_case_emails_are_refused_by_latest_and_lower_cased_by_legacy(
        sandbox_client: httpx.Client, legacy_client: httpx.Client) -> None:
    body = {"emails": {"primaryEmail": "A@B.COM", "additionalEmails": ["X@Y.Com"]}}
    assert error_of(sandbox_client.post("/rest/people", json=body), 400) == \
        "Invalid string value 'A@B.COM' for email field \"emails.primaryEmail\""
    extra_only = {"emails": {"primaryEmail": "a@b.com", "additionalEmails": ["X@Y.Com"]}}
    assert error_of(sandbox_client.post("/rest/people", json=extra_only), 400) == \
        "Invalid string value 'X@Y.Com' for email field \"emails.additionalEmails\""
    response = legacy_client.post("/rest/people", json=body)
    assert response.json()["data"]["createPerson"]["emails"] == {
        "primaryEmail": "a@b.com", "additionalEmails": ["x@y.com"]}


@pytest.mark.parametrize(("phones", "expected"), [
    ({"primaryPhoneNumber": "+33 6 12 34 56 78"},
     {"primaryPhoneNumber": "612345678", "primaryPhoneCountryCode": "FR",
      "primaryPhoneCallingCode": "+33"}),
    ({"primaryPhoneNumber": "06 12 34 56 78", "primaryPhoneCountryCode": "FR"},
     {"primaryPhoneNumber": "612345678", "primaryPhoneCountryCode": "FR",
      "primaryPhoneCallingCode": "+33"}),
    ({"primaryPhoneNumber": "612345678", "primaryPhoneCallingCode": "+33"},
     {"primaryPhoneNumber": "612345678", "primaryPhoneCountryCode": "FR",
      "primaryPhoneCallingCode": "+33"}),
])
def test_phones_store_the_national_number_and_infer_codes(
        sandbox_client: httpx.Client, phones: dict[str, str], expected: dict[str, str]) -> None:
    response = sandbox_client.post("/rest/people", json={"phones": phones})
    assert response.status_code == 201, response.text
    stored = response.json()["data"]["createPerson"]["phones"]
    assert {k: stored[k] for k in expected} == expected


@pytest.mark.parametrize(("phones", "message"), [
    ({"primaryPhoneNumber": "612345678", "primaryPhoneCountryCode": "ZZ"},
     "Invalid country code ZZ"),
    ({"primaryPhoneNumber": "612345678", "primaryPhoneCallingCode": "+999"},
     "Invalid calling code +999"),
    ({"primaryPhoneNumber": "612345678", "primaryPhoneCountryCode": "FR",
      "primaryPhoneCallingCode": "+1"}, "Provided country code and calling code are conflicting"),
    ({"primaryPhoneNumber": "+44 20 7946 0958", "primaryPhoneCountryCode": "FR"},
     "Provided and inferred country code are conflicting"),
    ({"primaryPhoneNumber": "612345678"}, "Provided phone number is invalid 612345678"),
])
def test_bad_phones_are_rejected(sandbox_client: httpx.Client, phones: dict[str, str],
                                 message: str) -> None:
    assert error_of(sandbox_client.post("/rest/people", json={"phones": phones}), 400) == message


def test_additional_phones_are_validated(sandbox_client: httpx.Client) -> None:
    response = sandbox_client.post("/rest/people", json={"phones": {"additionalPhones": [
        {"number": "701234567", "countryCode": "FR", "callingCode": "+33"}]}})
    assert response.json()["data"]["createPerson"]["phones"]["additionalPhones"] == [
        {"number": "701234567", "countryCode": "FR", "callingCode": "+33"}]


def test_unknown_field_and_subfield_messages(sandbox_client: httpx.Client) -> None:
    assert error_of(sandbox_client.post("/rest/people", json={"email": "a@b.c"}), 400) == \
        'Object person doesn\'t have any "email" field.'
    assert error_of(sandbox_client.post("/rest/people", json={"phones": {"x": "1"}}), 400) == \
        'Invalid subfield x for phones field "phones"'
    assert error_of(sandbox_client.post("/rest/people", json={"customFields": {}}), 400) == \
        'Object person doesn\'t have any "customFields" field.'


def test_wrong_value_types_are_rejected(sandbox_client: httpx.Client) -> None:
    assert sandbox_client.post("/rest/people", json={"name": "Ada Lovelace"}).status_code == 400
    assert sandbox_client.post("/rest/companies", json={"employees": "ten"}).status_code == 400
    assert sandbox_client.post("/rest/people", json={"companyId": "nope"}).status_code == 400
    assert sandbox_client.post("/rest/people",
                               json={"companyId": str(uuid.uuid4())}).status_code == 400


def test_duplicate_unique_values_are_400(sandbox_client: httpx.Client) -> None:
    create_person(sandbox_client, first="Ada", email="ada@example.com")
    response = sandbox_client.post("/rest/people", json=person("Eve", email="ada@example.com"))
    assert error_of(response, 400) == \
        "A duplicate entry was detected. Duplicate Emails. Please set a unique one."
    sandbox_client.post("/rest/companies", json={"domainName": {"primaryLinkUrl": "acme.io"}})
    again = sandbox_client.post("/rest/companies",
                                json={"domainName": {"primaryLinkUrl": "ACME.io/"}})
    assert again.status_code == 400
    # Empty values never collide.
    assert sandbox_client.post("/rest/people", json=person("X")).status_code == 201
    assert sandbox_client.post("/rest/people", json=person("Y")).status_code == 201


def test_a_soft_deleted_record_keeps_its_unique_email_taken(
        sandbox_client: httpx.Client, legacy_client: httpx.Client) -> None:
    for client in (sandbox_client, legacy_client):  # not version-dependent
        first = create_person(client, first="Ada", email="ada@example.com")
        client.delete(f"/rest/people/{first['id']}", params={"soft_delete": "true"})
        again = client.post("/rest/people", json=person("Ada2", email="ada@example.com"))
        assert error_of(again, 400) == \
            "A duplicate entry was detected. Duplicate Emails. Please set a unique one."
        assert client.patch(f"/rest/people/{first['id']}/restore").status_code == 200


def test_depth_one_embeds_relations_and_fields_projects(sandbox_client: httpx.Client) -> None:
    company = sandbox_client.post("/rest/companies", json={"name": "Acme"}).json()[
        "data"]["createCompany"]
    ada = create_person(sandbox_client, first="Ada", companyId=company["id"])
    deep = sandbox_client.get(f"/rest/people/{ada['id']}", params={"depth": 1}).json()
    assert deep["data"]["person"]["company"]["name"] == "Acme"
    shallow = sandbox_client.get(f"/rest/companies/{company['id']}").json()["data"]["company"]
    assert "people" not in shallow
    with_people = sandbox_client.get(f"/rest/companies/{company['id']}",
                                     params={"depth": "1"}).json()["data"]["company"]
    assert [p["id"] for p in with_people["people"]] == [ada["id"]]
    assert error_of(sandbox_client.get("/rest/people", params={"depth": 2}), 400) == \
        "'depth=2' parameter invalid. Allowed values are 0, 1"
    projected = sandbox_client.get("/rest/people", params={"fields": "name,emails"}).json()
    assert set(projected["data"]["people"][0]) == {"id", "name", "emails"}
    assert sandbox_client.get("/rest/people", params={"fields": "nope"}).status_code == 400


def test_destroying_a_company_nulls_the_join_column(sandbox_client: httpx.Client) -> None:
    company = sandbox_client.post("/rest/companies", json={"name": "Acme"}).json()[
        "data"]["createCompany"]
    ada = create_person(sandbox_client, first="Ada", companyId=company["id"])
    sandbox_client.delete(f"/rest/companies/{company['id']}")
    assert sandbox_client.get(f"/rest/people/{ada['id']}").json()["data"]["person"][
        "companyId"] is None


def test_position_puts_new_records_first(sandbox_client: httpx.Client) -> None:
    a = create_person(sandbox_client, first="A")
    b = create_person(sandbox_client, first="B")
    assert b["position"] < a["position"]
    c = create_person(sandbox_client, first="C", position=42)
    assert c["position"] == 42


def test_reset_gives_a_fresh_workspace(sandbox: SandboxServer,
                                       sandbox_client: httpx.Client) -> None:
    create_person(sandbox_client, first="Ada")
    sandbox.reset()
    assert sandbox_client.get("/rest/people").json()["totalCount"] == 0
    assert sandbox.request_count() == 1


def test_restoring_a_live_record_bumps_updated_at_and_emits_restored(
        sandbox: SandboxServer, sandbox_client: httpx.Client) -> None:
    ada = create_person(sandbox_client, first="Ada")
    hook = sandbox_client.post("/rest/metadata/webhooks", json={
        "targetUrl": "http://127.0.0.1:9/hook", "operations": ["person.restored"]})
    assert hook.status_code == 201
    response = sandbox_client.patch(f"/rest/people/{ada['id']}/restore")
    assert response.status_code == 200
    restored = response.json()["data"]["restorePerson"]
    assert restored["deletedAt"] is None
    assert restored["updatedAt"] > ada["updatedAt"]
    deliveries = sandbox.wait_for_deliveries(1)
    assert [d.event_name for d in deliveries] == ["person.restored"]
    # The many form restores every row its filter matches, live ones included.
    many = sandbox_client.patch("/rest/people/restore",
                                params={"filter": 'name.firstName[eq]:"Ada"'})
    assert [p["id"] for p in many.json()["data"]["restorePeople"]] == [ada["id"]]
    assert len(sandbox.wait_for_deliveries(2)) == 2
