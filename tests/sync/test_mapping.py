"""Warehouse rows <-> Twenty bodies: shapes, value conversion and field ownership."""

from __future__ import annotations

import json

import pytest

from truth_forge.core.crm_schema import CrmSchema
from truth_forge.sync.mapping import (
    business_to_company,
    check_storable,
    company_to_business,
    contact_to_person,
    crm_hash,
    person_to_contact,
)

SCHEMA = CrmSchema.load()

ROW = {
    "contact_id": 42,
    "canonical_name": "Ada van Lovelace",
    "primary_email": "Ada@Example.com",
    "additional_emails": ["ada@work.example", "ADA@example.com"],
    "primary_phone": "+33 6 12 34 56 78",
    "additional_phones": ["+1 415 555 0100"],
    "category_code": "b",
    "subcategory_code": "B1_BEST_FRIENDS",
    "relationship_category": "close friend",
    "llm_context": {"summary": "mathematician", "topics": ["engines"]},
    "communication_stats": None,
    "business_id": 7,
}


def test_contact_becomes_a_whole_twenty_person() -> None:
    body = contact_to_person(ROW, SCHEMA, company_crm_id="c0ffee00-0000-4000-8000-000000000000")
    assert body["name"] == {"firstName": "Ada", "lastName": "van Lovelace"}
    # The primary is not repeated among the additional emails.
    assert body["emails"] == {"primaryEmail": "ada@example.com", "additionalEmails": ["ada@work.example"]}  # as Twenty stores it
    assert body["phones"] == {
        "primaryPhoneNumber": "612345678", "primaryPhoneCountryCode": "FR", "primaryPhoneCallingCode": "+33",
        "additionalPhones": [{"number": "4155550100", "countryCode": "US", "callingCode": "+1"}],
    }
    assert body["contactId"] == "42"
    assert body["categoryCode"] == "B" and body["relationshipCategory"] == "CLOSE_FRIEND"
    assert json.loads(body["llmContext"]) == ROW["llm_context"]
    assert body["communicationStats"] is None
    assert body["companyId"] == "c0ffee00-0000-4000-8000-000000000000"
    assert not any("_" in key for key in body)  # nothing snake_case reaches Twenty


def test_what_twenty_cannot_store_is_refused_naming_the_field() -> None:
    """NUL in text (Postgres refuses it) and NaN or Infinity anywhere (JSON has none: the request's
    encoder would send null), at the top or nested; finite numbers and None pass."""
    check_storable({"score": 1.5, "data": {"x": [0.0, -2e300, None, "text"]}, "none": None})
    for body, field in [({"score": float("nan")}, "score"), ({"data": {"x": [1.5, float("-inf")]}}, "data"),
                        ({"name": "a\x00b"}, "name"), ({"data": ["ok", {"deep": "nul\x00"}]}, "data")]:
        with pytest.raises(ValueError, match=f"^{field} (holds|contains)"):
            check_storable(body)


def test_bad_phone_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="cannot be read"):
        contact_to_person({**ROW, "primary_phone": "call me maybe"}, SCHEMA)


def test_pull_takes_only_human_editable_fields() -> None:
    record = {
        "id": "p1",
        "name": {"firstName": "Ada", "lastName": "King"},
        "emails": {"primaryEmail": "ada@example.com", "additionalEmails": []},
        "phones": {"primaryPhoneNumber": "612345678", "primaryPhoneCountryCode": "FR",
                   "primaryPhoneCallingCode": "+33", "additionalPhones": []},
        "contactId": "42", "categoryCode": "C", "subcategoryCode": "", "relationshipCategory": "FAMILY",
        "llmContext": "edited by hand in the CRM",
    }
    row = person_to_contact(record, SCHEMA)
    assert row == {
        "canonical_name": "Ada King", "primary_email": "ada@example.com", "additional_emails": [],
        "primary_phone": "+33612345678", "additional_phones": [],
        "category_code": "C", "subcategory_code": None, "relationship_category": "FAMILY",
    }


def test_business_round_trip() -> None:
    row = {"business_id": 7, "business_name": "Acme", "website": "acme.example", "industry": "Tools",
           "business_type": "llc", "business_data": {"employees": 12}}
    body = business_to_company(row, SCHEMA)
    assert body["domainName"] == {"primaryLinkUrl": "https://acme.example", "primaryLinkLabel": None,
                                  "secondaryLinks": []}
    assert body["businessType"] == "LLC" and body["businessId"] == "7"
    back = company_to_business({**body, "id": "x"}, SCHEMA)
    assert back == {"business_name": "Acme", "website": "https://acme.example", "industry": "Tools",
                    "business_type": "LLC"}


def test_crm_hash_is_order_independent_and_sensitive() -> None:
    assert crm_hash({"a": 1, "b": [1, 2]}) == crm_hash({"b": [1, 2], "a": 1})
    assert crm_hash({"a": 1}) != crm_hash({"a": 2})
