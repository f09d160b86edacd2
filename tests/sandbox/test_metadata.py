"""Metadata REST: objects, fields, validation rules, both envelope formats (reference §4)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.sandbox.util import SELECT_OPTIONS, create_field, create_person, error_of, object_id
from truth_forge.sandbox import SandboxConfig, SandboxServer


def _validation_codes(response: httpx.Response) -> list[str]:
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["statusCode"] == 400 and body["error"] == "METADATA_VALIDATION_ERROR"
    assert body["summary"]["totalErrors"] >= 1
    return [e["code"] for entry in body["errors"]["fieldMetadata"] for e in entry["errors"]]


def test_objects_list_has_person_and_company_with_standard_fields(
        sandbox_client: httpx.Client) -> None:
    body = sandbox_client.get("/rest/metadata/objects").json()
    assert body["totalCount"] == len(body["data"]) >= 2
    objects = {o["nameSingular"]: o for o in body["data"]}
    person, company = objects["person"], objects["company"]
    assert (person["namePlural"], company["namePlural"]) == ("people", "companies")
    person_fields = {f["name"]: f for f in person["fields"]}
    company_fields = {f["name"]: f for f in company["fields"]}
    assert person_fields["name"]["type"] == "FULL_NAME"
    assert person_fields["emails"]["type"] == "EMAILS" and person_fields["emails"]["isUnique"]
    assert person_fields["phones"]["type"] == "PHONES"
    assert person_fields["company"]["type"] == "RELATION"
    assert person_fields["company"]["settings"]["joinColumnName"] == "companyId"
    assert company_fields["name"]["type"] == "TEXT"
    assert company_fields["domainName"]["type"] == "LINKS"
    assert company_fields["domainName"]["isUnique"]
    for name in ("id", "createdAt", "updatedAt", "deletedAt", "createdBy", "position"):
        assert person_fields[name]["isSystem"]
    one = sandbox_client.get(f"/rest/metadata/objects/{person['id']}").json()
    assert one["nameSingular"] == "person" and len(one["fields"]) == len(person["fields"])


def test_created_field_shows_up_on_records_as_a_top_level_key(
        sandbox_client: httpx.Client) -> None:
    ada = create_person(sandbox_client, first="Ada")
    response = create_field(sandbox_client, "person", type="TEXT", name="warehouseContactId",
                            label="Warehouse contact id", description="from the warehouse")
    assert response.status_code == 201, response.text
    field = response.json()
    assert field["name"] == "warehouseContactId" and field["isCustom"] is True
    assert field["objectMetadataId"] == object_id(sandbox_client, "person")
    record = sandbox_client.get(f"/rest/people/{ada['id']}").json()["data"]["person"]
    assert record["warehouseContactId"] is None
    written = sandbox_client.patch(f"/rest/people/{ada['id']}",
                                   json={"warehouseContactId": "C-00042"})
    assert written.json()["data"]["updatePerson"]["warehouseContactId"] == "C-00042"
    listed = sandbox_client.get("/rest/people",
                                params={"filter": 'warehouseContactId[eq]:"C-00042"'}).json()
    assert listed["totalCount"] == 1
    fields = sandbox_client.get("/rest/metadata/fields").json()
    assert any(f["id"] == field["id"] for f in fields["data"])
    assert sandbox_client.get(f"/rest/metadata/fields/{field['id']}").json()["name"] == \
        "warehouseContactId"


def test_select_field_values_are_checked_and_patch_adds_options(
        sandbox_client: httpx.Client) -> None:
    response = create_field(sandbox_client, "person", type="SELECT", name="leadStatus",
                            label="Lead status", options=SELECT_OPTIONS, defaultValue="'NEW'")
    assert response.status_code == 201, response.text
    field = response.json()
    assert [o["value"] for o in field["options"]] == ["NEW", "QUALIFIED", "LOST_2024"]
    assert all(o["id"] for o in field["options"])
    ada = create_person(sandbox_client, first="Ada")
    assert ada["leadStatus"] == "NEW"  # the default, unquoted
    bad = sandbox_client.patch(f"/rest/people/{ada['id']}", json={"leadStatus": "WON"})
    assert error_of(bad, 400).startswith('Invalid value "WON" for field "leadStatus"')
    options = field["options"] + [{"value": "WON", "label": "Won", "color": "gold",
                                   "position": 3}]
    patched = sandbox_client.patch(f"/rest/metadata/fields/{field['id']}",
                                   json={"options": options})
    assert patched.status_code == 200, patched.text
    assert [o["value"] for o in patched.json()["options"]][-1] == "WON"
    ok = sandbox_client.patch(f"/rest/people/{ada['id']}", json={"leadStatus": "WON"})
    assert ok.json()["data"]["updatePerson"]["leadStatus"] == "WON"


def test_delete_field_removes_the_key(sandbox_client: httpx.Client) -> None:
    field = create_field(sandbox_client, "company", type="NUMBER", name="score",
                         label="Score").json()
    sandbox_client.post("/rest/companies", json={"name": "Acme", "score": 3})
    assert sandbox_client.delete(f"/rest/metadata/fields/{field['id']}").status_code == 200
    company = sandbox_client.get("/rest/companies").json()["data"]["companies"][0]
    assert "score" not in company
    assert sandbox_client.post("/rest/companies", json={"score": 1}).status_code == 400
    assert sandbox_client.get(f"/rest/metadata/fields/{field['id']}").status_code == 404


def test_standard_fields_cannot_be_deleted_or_renamed(sandbox_client: httpx.Client) -> None:
    objects = sandbox_client.get("/rest/metadata/objects").json()["data"]
    person = next(o for o in objects if o["nameSingular"] == "person")
    job = next(f for f in person["fields"] if f["name"] == "jobTitle")
    assert sandbox_client.delete(f"/rest/metadata/fields/{job['id']}").status_code == 403
    assert sandbox_client.patch(f"/rest/metadata/fields/{job['id']}",
                                json={"name": "role"}).status_code == 403
    relabel = sandbox_client.patch(f"/rest/metadata/fields/{job['id']}", json={"label": "Role"})
    assert relabel.status_code == 200 and relabel.json()["label"] == "Role"


@pytest.mark.parametrize(("name", "code"), [
    ("contact_id", "INVALID_FIELD_INPUT"),  # snake_case
    ("crmID", "INVALID_FIELD_INPUT"),  # lodash camelCase gives crmId
    ("field2name", "INVALID_FIELD_INPUT"),  # lodash camelCase gives field2Name
    ("URL", "INVALID_FIELD_INPUT"),
    ("2fast", "INVALID_FIELD_INPUT"),
    ("a" * 64, "INVALID_FIELD_INPUT"),
    ("", "INVALID_FIELD_INPUT"),
    ("type", "RESERVED_KEYWORD"),
    ("addresses", "RESERVED_KEYWORD"),
    ("users", "RESERVED_KEYWORD"),
    ("jobTitle", "NOT_AVAILABLE"),  # an existing field
    ("companyId", "NOT_AVAILABLE"),  # a join column
    ("emailsPrimaryEmail", "NOT_AVAILABLE"),  # a composite column
])
def test_field_name_rules(sandbox_client: httpx.Client, name: str, code: str) -> None:
    response = create_field(sandbox_client, "person", type="TEXT", name=name, label="X")
    assert code in _validation_codes(response)


@pytest.mark.parametrize("name", ["contactId", "crmId", "address2", "field2Name", "a" * 63])
def test_valid_field_names(sandbox_client: httpx.Client, name: str) -> None:
    assert create_field(sandbox_client, "person", type="TEXT", name=name,
                        label="X").status_code == 201


def test_duplicate_name_is_not_available_with_the_reference_message(
        sandbox_client: httpx.Client) -> None:
    assert create_field(sandbox_client, "person", type="TEXT", name="leadStatus",
                        label="A").status_code == 201
    response = create_field(sandbox_client, "person", type="TEXT", name="leadStatus", label="B")
    assert _validation_codes(response) == ["NOT_AVAILABLE"]
    error = response.json()["errors"]["fieldMetadata"][0]["errors"][0]
    assert error["message"] == \
        'Name "leadStatus" is not available as it is already used by another field'
    # The same name on another object is fine.
    assert create_field(sandbox_client, "company", type="TEXT", name="leadStatus",
                        label="C").status_code == 201


def _option(**overrides: Any) -> list[dict[str, Any]]:
    return [{**SELECT_OPTIONS[0], **overrides}, SELECT_OPTIONS[1]]


@pytest.mark.parametrize("options", [
    None,  # options are required
    [],
    _option(value="new"),
    _option(value="2024_LOST"),
    _option(value="A__B"),
    _option(value="A" * 64),
    _option(label="New, shiny"),
    _option(label="  "),
    _option(color="chartreuse"),
    _option(id="not-a-uuid"),
    _option(value="QUALIFIED"),  # duplicate value
    _option(position=1),  # duplicate position
])
def test_select_option_rules(sandbox_client: httpx.Client, options: Any) -> None:
    body: dict[str, Any] = {"type": "SELECT", "name": "leadStatus", "label": "Lead status"}
    if options is not None:
        body["options"] = options
    assert _validation_codes(create_field(sandbox_client, "person", **body)) == \
        ["INVALID_FIELD_INPUT"]


@pytest.mark.parametrize(("type_", "default"), [
    ("SELECT", "NEW"),  # must be quoted
    ("SELECT", "'WON'"),  # not an option
    ("MULTI_SELECT", "'NEW'"),  # must be an array
    ("MULTI_SELECT", []),
    ("MULTI_SELECT", ["'NEW'", "'NEW'"]),
])
def test_select_default_rules(sandbox_client: httpx.Client, type_: str, default: Any) -> None:
    response = create_field(sandbox_client, "person", type=type_, name="leadStatus",
                            label="Lead status", options=SELECT_OPTIONS, defaultValue=default)
    assert _validation_codes(response) == ["INVALID_FIELD_INPUT"]


def test_good_option_value_formats(sandbox_client: httpx.Client) -> None:
    options = [{"value": v, "label": v.title(), "color": "gray", "position": i}
               for i, v in enumerate(["NEW", "LOST_2024", "B", "A1_B2"])]
    response = create_field(sandbox_client, "person", type="MULTI_SELECT", name="flags",
                            label="Flags", options=options, defaultValue=["'NEW'", "'B'"])
    assert response.status_code == 201, response.text
    assert create_person(sandbox_client, first="X")["flags"] == ["NEW", "B"]


def test_unknown_object_and_type_are_400(sandbox_client: httpx.Client) -> None:
    assert sandbox_client.post("/rest/metadata/fields", json={
        "objectMetadataId": "00000000-0000-4000-8000-000000000000", "type": "TEXT",
        "name": "x", "label": "X"}).status_code == 400
    assert create_field(sandbox_client, "person", type="STRING", name="x",
                        label="X").status_code == 400


def test_custom_objects_get_record_routes(sandbox_client: httpx.Client) -> None:
    created = sandbox_client.post("/rest/metadata/objects", json={
        "nameSingular": "deal", "namePlural": "deals", "labelSingular": "Deal",
        "labelPlural": "Deals"})
    assert created.status_code == 201, created.text
    record = sandbox_client.post("/rest/deals", json={"name": "Big one"})
    assert record.status_code == 201
    assert record.json()["data"]["createDeal"]["name"] == "Big one"
    assert sandbox_client.get("/rest/deals").json()["data"]["deals"][0]["name"] == "Big one"


@pytest.fixture(scope="module")
def legacy_server() -> Iterator[SandboxServer]:
    config = SandboxConfig(api_keys=["k"], rate_limit_per_minute=None, metadata_format="legacy")
    with SandboxServer(config) as server:
        yield server


def test_legacy_envelopes(legacy_server: SandboxServer) -> None:
    with httpx.Client(base_url=legacy_server.base_url,
                      headers={"Authorization": "Bearer k"}) as client:
        objects = client.get("/rest/metadata/objects").json()
        assert isinstance(objects["data"]["objects"], list) and objects["totalCount"] >= 2
        person = next(o for o in objects["data"]["objects"] if o["nameSingular"] == "person")
        one = client.get(f"/rest/metadata/objects/{person['id']}").json()
        assert one["data"]["object"]["id"] == person["id"]
        created = client.post("/rest/metadata/fields", json={
            "objectMetadataId": person["id"], "type": "TEXT", "name": "legacyField",
            "label": "Legacy"})
        assert created.status_code == 201
        field = created.json()["data"]["createOneField"]
        assert client.get(f"/rest/metadata/fields/{field['id']}").json()["data"]["field"][
            "name"] == "legacyField"
        updated = client.patch(f"/rest/metadata/fields/{field['id']}", json={"label": "L2"})
        assert updated.json()["data"]["updateOneField"]["label"] == "L2"
        assert "fields" in client.get("/rest/metadata/fields").json()["data"]
        deleted = client.delete(f"/rest/metadata/fields/{field['id']}")
        assert deleted.json()["data"]["deleteOneField"]["id"] == field["id"]


def test_metadata_list_pagination_by_id(sandbox_client: httpx.Client) -> None:
    first = sandbox_client.get("/rest/metadata/fields", params={"limit": 5}).json()
    assert len(first["data"]) == 5 and first["pageInfo"]["hasNextPage"]
    second = sandbox_client.get("/rest/metadata/fields", params={
        "limit": 5, "starting_after": first["pageInfo"]["endCursor"]}).json()
    assert not {f["id"] for f in first["data"]} & {f["id"] for f in second["data"]}
    assert sandbox_client.get("/rest/metadata/fields", params={
        "starting_after": "a", "ending_before": "b"}).status_code == 400
