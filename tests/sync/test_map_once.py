"""The push maps each row once: the merge view it keeps is made from the body it sends
(`views.body_view`), and must be the very view the row gave before, when it was mapped a second
time for it (`views.warehouse_view`), or a base saved by either would look changed to the other.

The reference below is a frozen copy of the view as truth-forge made it before the change (mapping
again, then the digest of `json.dumps`), so a later change to the shared helpers cannot make both
sides of the comparison drift together. Rows: sample data and the hostile corpus, read back from a
real DuckDB warehouse in the shape the push gets them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import pytest

from tests.fixtures.hostile_data import warehouse_businesses, warehouse_rows
from truth_forge.core.crm_schema import CrmSchema
from truth_forge.sync import mapping, views
from truth_forge.sync.objects import COMPANY, PERSON, SyncedObject
from truth_forge.warehouse import open_warehouse
from truth_forge.warehouse.sample_data import generate_sample_data

SCHEMA = CrmSchema.load()
SAMPLE_CONTACTS = 600


def _frozen_digest(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return views.DIGEST + hashlib.sha256(text.encode()).hexdigest()[:views.DIGEST_HEX]


def _frozen_view(obj: SyncedObject, row: Mapping[str, Any]) -> dict[str, Any]:
    """views.warehouse_view as it was before the push mapped rows once (issue 22)."""
    try:
        body = (mapping.contact_to_person(row, SCHEMA, left_out=[]) if obj is PERSON
                else mapping.business_to_company(row, SCHEMA, left_out=[]))
    except ValueError:
        view = {c: row.get(c) for c in views._two_way_columns(obj, SCHEMA)}
    else:
        view = obj.editable_from_crm(body, SCHEMA)
        for spec in SCHEMA.for_object(obj.object_type):
            if spec.sync == "push":
                view[spec.column] = _frozen_digest(body.get(spec.name))
    if obj is PERSON:
        view[views.COMPANY_LINK] = row.get(views.COMPANY_LINK)
    return view


def _push_body(obj: SyncedObject, row: Mapping[str, Any]) -> dict[str, Any]:
    """The body as the push builds it (push._Push._item): notes on what was left out, a company
    link and the Twenty id added on top."""
    left_out: list[str] = []
    if obj is PERSON:
        body = mapping.contact_to_person(row, SCHEMA, default_region=None, left_out=left_out)
        if row.get("business_id") is not None:
            body["companyId"] = f"company-{row['business_id']}"
    else:
        body = mapping.business_to_company(row, SCHEMA, left_out=left_out)
    body["id"] = f"record-{row[obj.key_column]}"
    return body


@pytest.fixture(scope="module")
def rows(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    path = tmp_path_factory.mktemp("map_once") / "w.duckdb"
    with open_warehouse(f"duckdb:///{path}") as wh:
        generate_sample_data(wh, SAMPLE_CONTACTS, SAMPLE_CONTACTS // 20, seed=7)
        for row in warehouse_rows():
            wh.upsert_contacts([row])  # one by one: the hostile rows carry different sets of fields
        for row in warehouse_businesses():
            wh.upsert_businesses([row])
        people_keys = [int(r["contact_id"]) for r in warehouse_rows()]
        company_keys = [int(r["business_id"]) for r in warehouse_businesses()]
        return {
            "person": wh.get_rows("person", [*range(1, SAMPLE_CONTACTS + 1), *people_keys]),
            "company": wh.get_rows("company", [*range(1, SAMPLE_CONTACTS // 20 + 1), *company_keys]),
        }


@pytest.mark.parametrize("obj", [PERSON, COMPANY], ids=lambda o: o.object_type)
def test_the_view_of_the_body_sent_is_the_view_the_row_gave_before(
        obj: SyncedObject, rows: dict[str, list[dict[str, Any]]]) -> None:
    compared, hostile = 0, 0
    for row in rows[obj.object_type]:
        try:
            body = _push_body(obj, row)
        except ValueError:
            continue  # the push fails such a row alone; it keeps no view
        before = _frozen_view(obj, row)
        assert views.body_view(obj, SCHEMA, row, body) == before, row[obj.key_column]
        assert views.warehouse_view(obj, SCHEMA, row) == before, row[obj.key_column]
        compared += 1
        hostile += int(row[obj.key_column]) > SAMPLE_CONTACTS
    expected_hostile = len(warehouse_rows() if obj is PERSON else warehouse_businesses())
    assert compared >= (SAMPLE_CONTACTS if obj is PERSON else SAMPLE_CONTACTS // 20)
    assert hostile >= expected_hostile // 2, "most hostile rows must be mappable, or this compares little"


def test_digests_are_the_same_as_before_for_awkward_values() -> None:
    values: list[Any] = [None, "", "plain", 'quote " and \\ backslash', "Zoë 😀 \u200d\x01 \u2028", 7, 1.5,
                         True, ["b", "a"], {"b": 1, "a": [None, "é"]}, "x" * 30_000]
    for value in values:
        assert views.digest(value) == _frozen_digest(value), repr(value)[:60]


def test_json_text_fields_are_encoded_as_before() -> None:
    spec = next(s for s in SCHEMA.for_object("person") if s.type == "TEXT" and s.sync == "push")
    for value in [{"z": 1, "a": {"é": [1, 2.5, None]}}, ["😀", "\x00"], {"when": object.__class__}, [], {}]:
        before = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
        assert mapping.to_twenty_value(spec, value) == before


def test_a_phone_read_again_is_the_same_phone() -> None:
    first = mapping.contact_to_person({"contact_id": 1, "primary_phone": "+33 6 12 34 56 78",
                                       "additional_phones": ["+1 650 253 0000"]}, SCHEMA, left_out=[])
    first["phones"]["additionalPhones"][0]["number"] = "changed by a caller"
    again = mapping.contact_to_person({"contact_id": 2, "primary_phone": "+33 6 12 34 56 78",
                                       "additional_phones": ["+1 650 253 0000"]}, SCHEMA, left_out=[])
    assert again["phones"] == {"primaryPhoneNumber": "612345678", "primaryPhoneCountryCode": "FR",
                               "primaryPhoneCallingCode": "+33", "additionalPhones": [
                                   {"number": "6502530000", "countryCode": "US", "callingCode": "+1"}]}
    with pytest.raises(ValueError, match="cannot be read|not a possible"):
        mapping.contact_to_person({"contact_id": 3, "primary_phone": "12"}, SCHEMA, left_out=[])
    with pytest.raises(ValueError, match="cannot be read|not a possible"):
        mapping.contact_to_person({"contact_id": 3, "primary_phone": "12"}, SCHEMA, left_out=[])
