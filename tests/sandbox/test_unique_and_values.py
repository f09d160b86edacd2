"""Unique keys stay taken by soft-deleted rows; emails and links are validated; composites are
rewritten the way Twenty's transformers rewrite them (docs/twenty-facts.md §1, §2, §5)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.sandbox.util import create_field, create_person, error_of, person

DUPLICATE = "A duplicate entry was detected. Duplicate {}. Please set a unique one."


def _soft_delete(client: httpx.Client, plural: str, rid: str) -> None:
    response = client.delete(f"/rest/{plural}/{rid}", params={"soft_delete": "true"})
    assert response.status_code == 200, response.text


def _create(client: httpx.Client, plural: str, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post(f"/rest/{plural}", json=body)
    assert response.status_code == 201, response.text
    return next(iter(response.json()["data"].values()))


# --------------------------------------------------------------------------------------------
# 1. Unique indexes include soft-deleted rows


def test_a_plain_update_cannot_take_a_soft_deleted_persons_email(
        sandbox_client: httpx.Client) -> None:
    gone = create_person(sandbox_client, first="Gone", email="gone@example.com")
    _soft_delete(sandbox_client, "people", gone["id"])
    live = create_person(sandbox_client, first="Live", email="live@example.com")
    response = sandbox_client.patch(f"/rest/people/{live['id']}",
                                    json={"emails": {"primaryEmail": "gone@example.com"}})
    assert error_of(response, 400) == DUPLICATE.format("Emails")
    after = sandbox_client.get(f"/rest/people/{live['id']}").json()["data"]["person"]
    assert after["emails"]["primaryEmail"] == "live@example.com"


def test_a_soft_deleted_companys_domain_stays_taken(sandbox_client: httpx.Client) -> None:
    acme = _create(sandbox_client, "companies",
                   {"name": "Acme", "domainName": {"primaryLinkUrl": "https://acme.example"}})
    _soft_delete(sandbox_client, "companies", acme["id"])
    again = sandbox_client.post("/rest/companies", json={
        "name": "Acme 2", "domainName": {"primaryLinkUrl": "HTTPS://ACME.example/"}})
    assert error_of(again, 400) == DUPLICATE.format("Domain Name")
    batch = sandbox_client.post("/rest/batch/companies", json=[
        {"name": "Other", "domainName": {"primaryLinkUrl": "https://other.example"}},
        {"name": "Acme 3", "domainName": {"primaryLinkUrl": "https://acme.example"}}])
    assert batch.status_code == 400
    assert sandbox_client.get("/rest/companies").json()["totalCount"] == 0  # all or nothing


def test_a_custom_unique_field_stays_taken_but_its_empty_value_never_collides(
        sandbox_client: httpx.Client) -> None:
    assert create_field(sandbox_client, "person", type="TEXT", name="contactId",
                        label="Contact id", isUnique=True).status_code == 201
    gone = create_person(sandbox_client, first="Gone", contactId="C-1")
    _soft_delete(sandbox_client, "people", gone["id"])
    dup = sandbox_client.post("/rest/people", json=person("New", contactId="C-1"))
    assert error_of(dup, 400) == DUPLICATE.format("Contact id")
    # The index leaves out the field's empty default: any number of rows may have none.
    for name in ("A", "B"):
        create_person(sandbox_client, first=name, contactId="")


def test_upsert_still_revives_the_soft_deleted_owner_of_the_key(
        sandbox_client: httpx.Client) -> None:
    gone = create_person(sandbox_client, first="Gone", email="gone@example.com")
    _soft_delete(sandbox_client, "people", gone["id"])
    response = sandbox_client.post("/rest/people", params={"upsert": "true"},
                                   json=person("Back", email="gone@example.com"))
    assert response.status_code == 201, response.text
    revived = response.json()["data"]["createPerson"]
    assert (revived["id"], revived["deletedAt"]) == (gone["id"], None)


def test_a_deleted_at_condition_brings_live_and_deleted_changes_in_one_query(
        sandbox_client: httpx.Client) -> None:
    live = create_person(sandbox_client, first="Live")
    gone = create_person(sandbox_client, first="Gone")
    since = gone["updatedAt"]
    _soft_delete(sandbox_client, "people", gone["id"])
    flt = f'or(updatedAt[gte]:"{since}",deletedAt[gte]:"{since}")'
    body = sandbox_client.get("/rest/people", params={"filter": flt}).json()
    assert {p["id"] for p in body["data"]["people"]} == {gone["id"]}
    everything = sandbox_client.get("/rest/people", params={
        "filter": 'or(deletedAt[is]:NULL,deletedAt[is]:NOT_NULL)'}).json()
    assert {p["id"] for p in everything["data"]["people"]} == {live["id"], gone["id"]}


# --------------------------------------------------------------------------------------------
# 2. Email and link validation


@pytest.mark.parametrize("email", ["not-an-email", "ada@", "@example.com", "a b@example.com",
                                   "a@b@example.com"])
def test_a_primary_email_that_is_not_an_address_is_refused_by_every_profile(
        sandbox_client: httpx.Client, legacy_client: httpx.Client, email: str) -> None:
    for client in (sandbox_client, legacy_client):
        response = client.post("/rest/people", json=person("Ada", email=email))
        assert error_of(response, 400) == \
            f"Invalid string value '{email}' for email field \"emails.primaryEmail\""


@pytest.mark.parametrize("email", ["ada@example", "ada..l@example.com", "tomás@example.com",
                                   ".ada@example.com"])
def test_latest_checks_addresses_with_the_ascii_pattern_and_legacy_with_the_unicode_one(
        sandbox_client: httpx.Client, legacy_client: httpx.Client, email: str) -> None:
    refused = sandbox_client.post("/rest/people", json=person("Ada", email=email))
    assert error_of(refused, 400) == \
        f"Invalid string value '{email}' for email field \"emails.primaryEmail\""
    accepted = _create(legacy_client, "people", person("Ada", email=email))
    assert accepted["emails"]["primaryEmail"] == email


def test_an_empty_email_is_refused_by_latest_and_stored_as_null_by_legacy(
        sandbox_client: httpx.Client, legacy_client: httpx.Client) -> None:
    assert error_of(sandbox_client.post("/rest/people", json=person("Ada", email="")), 400) == \
        "Invalid string value '' for email field \"emails.primaryEmail\""
    stored = _create(legacy_client, "people", person("Ada", email=""))
    assert stored["emails"]["primaryEmail"] is None
    # null stays the way to say "no email" on every profile.
    no_email = {"emails": {"primaryEmail": None}}
    assert _create(sandbox_client, "people", no_email)["emails"]["primaryEmail"] is None


def test_additional_emails_are_validated_one_by_one(sandbox_client: httpx.Client) -> None:
    bad = {"emails": {"primaryEmail": "a@b.com", "additionalEmails": ["c@d.com", "nope"]}}
    assert error_of(sandbox_client.post("/rest/people", json=bad), 400) == \
        "Invalid string value 'nope' for email field \"emails.additionalEmails\""
    not_strings = {"emails": {"additionalEmails": [1]}}
    assert error_of(sandbox_client.post("/rest/people", json=not_strings), 400).startswith(
        "Invalid value [1] for field \"emails.additionalEmails")


@pytest.mark.parametrize("url", ["javascript:alert(1)", "not a url", "lydia,com", "wikipedia",
                                 "ftp://files.example.com", "2", "https://"])
def test_invalid_link_urls_are_refused(sandbox_client: httpx.Client, url: str) -> None:
    primary = sandbox_client.post("/rest/companies", json={
        "name": "X", "domainName": {"primaryLinkUrl": url}})
    assert error_of(primary, 400) == "The URL of the link is not valid"
    secondary = sandbox_client.post("/rest/people", json={"linkedinLink": {
        "primaryLinkUrl": "https://ok.example", "secondaryLinks": [{"url": url, "label": "x"}]}})
    assert error_of(secondary, 400) == "The URL of the link is not valid"


@pytest.mark.parametrize(("url", "stored"), [
    ("acme.example", "acme.example"),
    ("WWW.Acme.Example/Path", "www.acme.example/Path"),
    ("http://localhost:3000", "http://localhost:3000"),
    ("192.168.2.10", "192.168.2.10"),
    ("https://acme.example/a?b=c", "https://acme.example/a?b=c"),
])
def test_valid_link_urls_are_stored_with_a_lower_cased_origin(
        sandbox_client: httpx.Client, url: str, stored: str) -> None:
    company = _create(sandbox_client, "companies",
                      {"name": "X", "domainName": {"primaryLinkUrl": url}})
    assert company["domainName"]["primaryLinkUrl"] == stored


def test_an_empty_primary_link_is_replaced_by_the_first_secondary_one(
        sandbox_client: httpx.Client) -> None:
    created = _create(sandbox_client, "people", {"linkedinLink": {
        "primaryLinkUrl": "", "secondaryLinks": [{"url": "", "label": "empty"},
                                                 {"url": "https://a.example", "label": "a"},
                                                 {"url": "https://b.example", "label": "b"}]}})
    assert created["linkedinLink"] == {
        "primaryLinkUrl": "https://a.example", "primaryLinkLabel": "a",
        "secondaryLinks": [{"url": "https://b.example", "label": "b"}]}


# --------------------------------------------------------------------------------------------
# 5. Composite writes


def test_an_emails_update_without_primary_email_clears_it(sandbox_client: httpx.Client) -> None:
    ada = create_person(sandbox_client, first="Ada", email="ada@example.com")
    response = sandbox_client.patch(f"/rest/people/{ada['id']}",
                                    json={"emails": {"additionalEmails": ["ada@work.example"]}})
    assert response.json()["data"]["updatePerson"]["emails"] == {
        "primaryEmail": None, "additionalEmails": ["ada@work.example"]}
    # additionalEmails left out is kept; an empty list is stored as null.
    kept = sandbox_client.patch(f"/rest/people/{ada['id']}",
                                json={"emails": {"primaryEmail": "ada@example.com"}})
    assert kept.json()["data"]["updatePerson"]["emails"]["additionalEmails"] == \
        ["ada@work.example"]
    emptied = sandbox_client.patch(f"/rest/people/{ada['id']}", json={"emails": {
        "primaryEmail": "ada@example.com", "additionalEmails": []}})
    assert emptied.json()["data"]["updatePerson"]["emails"]["additionalEmails"] is None


def test_a_phones_update_without_additional_phones_clears_them(
        sandbox_client: httpx.Client) -> None:
    ada = _create(sandbox_client, "people", {"phones": {
        "primaryPhoneNumber": "612345678", "primaryPhoneCountryCode": "FR",
        "additionalPhones": [{"number": "701234567", "countryCode": "FR"}]}})
    assert ada["phones"]["additionalPhones"] == [
        {"number": "701234567", "countryCode": "FR", "callingCode": "+33"}]
    response = sandbox_client.patch(f"/rest/people/{ada['id']}", json={"phones": {
        "primaryPhoneNumber": "612345679", "primaryPhoneCountryCode": "FR"}})
    phones = response.json()["data"]["updatePerson"]["phones"]
    assert phones["additionalPhones"] is None
    assert (phones["primaryPhoneNumber"], phones["primaryPhoneCallingCode"]) == \
        ("612345679", "+33")  # primary subfields left out keep their stored values


def test_empty_text_becomes_null_on_latest_and_stays_empty_on_legacy(
        sandbox_client: httpx.Client, legacy_client: httpx.Client) -> None:
    for client, expected in ((sandbox_client, None), (legacy_client, "")):
        ada = create_person(client, first="Ada", last="Lovelace", jobTitle="CTO")
        response = client.patch(f"/rest/people/{ada['id']}",
                                json={"jobTitle": "", "name": {"lastName": ""}})
        updated = response.json()["data"]["updatePerson"]
        assert updated["jobTitle"] == expected
        assert updated["name"] == {"firstName": "Ada", "lastName": expected}


def test_a_partial_links_update_is_merged_on_latest_and_rewrites_the_whole_on_legacy(
        sandbox_client: httpx.Client, legacy_client: httpx.Client) -> None:
    link = {"primaryLinkUrl": "https://linkedin.com/in/ada", "primaryLinkLabel": "Ada",
            "secondaryLinks": [{"url": "https://ada.dev", "label": "site"}]}
    for client in (sandbox_client, legacy_client):
        ada = _create(client, "people", {"linkedinLink": link})
        response = client.patch(f"/rest/people/{ada['id']}",
                                json={"linkedinLink": {"primaryLinkLabel": "LinkedIn"}})
        assert response.status_code == 200, response.text
        stored = response.json()["data"]["updatePerson"]["linkedinLink"]
        if client is sandbox_client:
            assert stored == {**link, "primaryLinkLabel": "LinkedIn"}
        else:
            # Only a label was sent: no URL is left, so the label goes too.
            assert stored == {"primaryLinkUrl": None, "primaryLinkLabel": None,
                              "secondaryLinks": []}
