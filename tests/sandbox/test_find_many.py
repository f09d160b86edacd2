"""Find many: limit, cursors, order_by, filters, deletedAt, totalCount (reference §2)."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import pytest

from tests.sandbox.util import create_people, create_person, error_of, person


def _people(client: httpx.Client, **params: Any) -> dict[str, Any]:
    response = client.get("/rest/people", params=params)
    assert response.status_code == 200, response.text
    return response.json()


def test_default_limit_60_and_max_200(sandbox_client: httpx.Client) -> None:
    create_people(sandbox_client, [person(f"P{i}") for i in range(200)])
    create_people(sandbox_client, [person(f"Q{i}") for i in range(10)])
    body = _people(sandbox_client)
    assert len(body["data"]["people"]) == 60 and body["totalCount"] == 210
    assert body["pageInfo"]["hasNextPage"] is True
    assert body["pageInfo"]["hasPreviousPage"] is False
    assert len(_people(sandbox_client, limit=500)["data"]["people"]) == 200
    for bad in ("-1", "ten"):
        assert error_of(sandbox_client.get("/rest/people", params={"limit": bad}), 400) == \
            f"limit '{bad}' is invalid. Should be an integer"


def test_cursor_is_base64_json_with_order_values_and_id(sandbox_client: httpx.Client) -> None:
    create_people(sandbox_client, [person("A"), person("B")])
    body = _people(sandbox_client, limit=1, order_by="name.firstName")
    decoded = json.loads(base64.b64decode(body["pageInfo"]["endCursor"]))
    record = body["data"]["people"][0]
    assert decoded == {"name": {"firstName": "A"}, "id": record["id"]}
    assert error_of(sandbox_client.get("/rest/people", params={"starting_after": "%%%"}),
                    400).startswith("Invalid cursor")


def test_paging_with_inserts_in_between_sees_everything_once(
        sandbox_client: httpx.Client) -> None:
    create_people(sandbox_client, [person(f"P{i:02d}") for i in range(25)])
    seen: list[str] = []
    cursor = None
    for page_number in range(20):  # bounded: 25 + 3*2 records at 7 per page need < 20 pages
        params: dict[str, Any] = {"limit": 7, "order_by": "createdAt,id"}
        if cursor:
            params["starting_after"] = cursor
        body = _people(sandbox_client, **params)
        seen += [p["id"] for p in body["data"]["people"]]
        if page_number < 3:  # writes land between page reads
            create_people(sandbox_client, [person(f"N{page_number}a"), person(f"N{page_number}b")])
        if not body["pageInfo"]["hasNextPage"]:
            break
        cursor = body["pageInfo"]["endCursor"]
    else:
        pytest.fail("pagination did not end")
    assert len(seen) == len(set(seen)) == 31


def test_ending_before_walks_backwards(sandbox_client: httpx.Client) -> None:
    create_people(sandbox_client, [person(f"P{i:02d}") for i in range(10)])
    last_page = _people(sandbox_client, order_by="name.firstName", limit=4,
                        starting_after=_people(sandbox_client, order_by="name.firstName",
                                               limit=6)["pageInfo"]["endCursor"])
    assert [p["name"]["firstName"] for p in last_page["data"]["people"]] == \
        ["P06", "P07", "P08", "P09"]
    previous = _people(sandbox_client, order_by="name.firstName", limit=4,
                       ending_before=last_page["pageInfo"]["startCursor"])
    assert [p["name"]["firstName"] for p in previous["data"]["people"]] == \
        ["P02", "P03", "P04", "P05"]
    assert previous["pageInfo"]["hasPreviousPage"] is True
    assert previous["pageInfo"]["hasNextPage"] is True
    assert sandbox_client.get("/rest/people", params={
        "starting_after": last_page["pageInfo"]["startCursor"],
        "ending_before": last_page["pageInfo"]["startCursor"]}).status_code == 400


def test_order_by_four_directions_with_nulls_and_id_tiebreak(
        sandbox_client: httpx.Client) -> None:
    for name, employees in (("a", 10), ("b", None), ("c", 5), ("d", 10)):
        sandbox_client.post("/rest/companies", json={"name": name, "employees": employees})

    def names(direction: str) -> list[str]:
        body = sandbox_client.get("/rest/companies",
                                  params={"order_by": f"employees[{direction}]"}).json()
        return [c["name"] for c in body["data"]["companies"]]

    ids = {c["name"]: c["id"] for c in
           sandbox_client.get("/rest/companies").json()["data"]["companies"]}
    tens = sorted(["a", "d"], key=lambda n: ids[n])  # equal values fall back to id order
    assert names("AscNullsFirst") == ["b", "c", *tens]
    assert names("AscNullsLast") == ["c", *tens, "b"]
    assert names("DescNullsFirst") == ["b", *tens, "c"]
    assert names("DescNullsLast") == [*tens, "c", "b"]
    message = error_of(sandbox_client.get("/rest/companies",
                                          params={"order_by": "employees[Up]"}), 400)
    assert message.startswith("'order_by' direction 'Up' invalid.")
    assert sandbox_client.get("/rest/people", params={"order_by": "name"}).status_code == 400
    assert sandbox_client.get("/rest/people", params={"order_by": "nope"}).status_code == 400


@pytest.fixture
def crowd(sandbox_client: httpx.Client) -> dict[str, str]:
    acme = sandbox_client.post("/rest/companies", json={
        "name": "Acme", "employees": 120, "idealCustomerProfile": True,
        "domainName": {"primaryLinkUrl": "https://acme.example"}}).json()["data"]["createCompany"]
    sandbox_client.post("/rest/companies", json={"name": "Tiny", "employees": 3})
    ids = {}
    for first, last, email, job, city in (
            ("Ada", "Lovelace", "ada@example.com", "Analyst", "London"),
            ("Alan", "Turing", "alan@example.com", "Senior analyst", "Manchester"),
            ("Grace", "Hopper", "grace@navy.mil", "Admiral", ""),
            ("Edsger", "Dijkstra", "edsger@example.nl", "Professor", "Austin")):
        ids[first] = create_person(sandbox_client, first=first, last=last, email=email,
                                   jobTitle=job, city=city,
                                   companyId=acme["id"] if first != "Grace" else None)["id"]
    ids["acme"] = acme["id"]
    return ids


def _firsts(client: httpx.Client, flt: str) -> list[str]:
    body = _people(client, filter=flt, order_by="name.firstName")
    assert body["totalCount"] == len(body["data"]["people"])
    return [p["name"]["firstName"] for p in body["data"]["people"]]


@pytest.mark.parametrize(("flt", "expected"), [
    ('name.firstName[eq]:"Ada"', ["Ada"]),
    ("name.firstName[eq]:'Ada'", ["Ada"]),
    ('name.firstName[neq]:"Ada"', ["Alan", "Edsger", "Grace"]),
    ('emails.primaryEmail[eq]:"ADA@example.com"', ["Ada"]),
    ('emails.primaryEmail[in]:["ada@example.com","grace@navy.mil"]', ["Ada", "Grace"]),
    ('emails.primaryEmail[like]:"%@example.%"', ["Ada", "Alan", "Edsger"]),
    ('jobTitle[ilike]:"%ANALYST%"', ["Ada", "Alan"]),
    ('jobTitle[like]:"%Analyst%"', ["Ada"]),
    ('name.lastName[startsWith]:"Tu"', ["Alan"]),
    ('name.lastName[endsWith]:"stra"', ["Edsger"]),
    ("city[is]:NULL", ["Grace"]),
    ("city[is]:NOT_NULL", ["Ada", "Alan", "Edsger"]),
    ('name.firstName[gt]:"Alan"', ["Edsger", "Grace"]),
    ('name.firstName[gte]:"Alan"', ["Alan", "Edsger", "Grace"]),
    ('name.firstName[lt]:"Alan"', ["Ada"]),
    ('name.firstName[lte]:"Alan"', ["Ada", "Alan"]),
    ('or(emails.primaryEmail[eq]:"ada@example.com",jobTitle[ilike]:"%admiral%")',
     ["Ada", "Grace"]),
    ('and(jobTitle[ilike]:"%analyst%",not(city[eq]:"London"))', ["Alan"]),
    ('city[neq]:"London",jobTitle[ilike]:"%analyst%"', ["Alan"]),
    ('or(and(city[eq]:"London",name.firstName[eq]:"Ada"),'
     'and(city[eq]:"Austin",not(name.lastName[eq]:"Knuth")))', ["Ada", "Edsger"]),
    ('name.firstName[eq]:"Ada, Countess"', []),
])
def test_filters(sandbox_client: httpx.Client, crowd: dict[str, str], flt: str,
                 expected: list[str]) -> None:
    assert _firsts(sandbox_client, flt) == expected


def test_filters_on_join_ids_numbers_booleans_links_dates(
        sandbox_client: httpx.Client, crowd: dict[str, str]) -> None:
    assert _firsts(sandbox_client, f'companyId[in]:["{crowd["acme"]}"]') == \
        ["Ada", "Alan", "Edsger"]
    assert _firsts(sandbox_client, "companyId[is]:NULL") == ["Grace"]

    def company_names(flt: str) -> list[str]:
        body = sandbox_client.get("/rest/companies",
                                  params={"filter": flt, "order_by": "name"}).json()
        return [c["name"] for c in body["data"]["companies"]]

    assert company_names("employees[gte]:10") == ["Acme"]
    assert company_names("and(employees[gte]:1,not(idealCustomerProfile[eq]:false))") == ["Acme"]
    assert company_names('domainName.primaryLinkUrl[eq]:"https://acme.example"') == ["Acme"]
    future = "2999-01-01T00:00:00Z"
    assert _firsts(sandbox_client, f'updatedAt[gte]:"{future}"') == []
    assert len(_firsts(sandbox_client, 'createdAt[lt]:"2999-01-01T00:00:00.000Z"')) == 4


def test_contains_any_on_a_multi_select(sandbox_client: httpx.Client) -> None:
    from tests.sandbox.util import SELECT_OPTIONS, create_field

    assert create_field(sandbox_client, "person", type="MULTI_SELECT", name="tags",
                        label="Tags", options=SELECT_OPTIONS).status_code == 201
    create_person(sandbox_client, first="A", tags=["NEW", "LOST_2024"])
    create_person(sandbox_client, first="B", tags=["QUALIFIED"])
    create_person(sandbox_client, first="C")
    assert _firsts(sandbox_client, "tags[containsAny]:[NEW,QUALIFIED]") == ["A", "B"]
    assert _firsts(sandbox_client, 'tags[containsAny]:["LOST_2024"]') == ["A"]
    bad = sandbox_client.get("/rest/people", params={"filter": "tags[containsAny]:[WON]"})
    # The REST layer checks enum values before any SQL (check-filter-enum-values.util.ts).
    assert error_of(bad, 400) == ("'filter' enum value 'WON' not available in 'tags' enum. "
                                  "Available enum values are ['NEW', 'QUALIFIED', 'LOST_2024']")


@pytest.mark.parametrize(("flt", "message"), [
    ("name.firstName[eq]:\"a\")", "'filter' invalid. 1 open bracket is missing in the query"),
    ("and(name.firstName[eq]:\"a\"", "'filter' invalid. 1 close bracket is missing in the query"),
    ("not(city[eq]:\"a\",city[eq]:\"b\")",
     "'filter' invalid. 'not' conjunction should contain only 1 condition. eg: not(field[eq]:1)"),
    ("city:\"a\"", "'filter' invalid for 'city:\"a\"'. eg: price[gte]:10"),
    ("email[eq]:\"a\"", 'Object person doesn\'t have any "email" field.'),
    ("emails.primary[eq]:\"a\"", 'Invalid subfield primary for emails field "emails"'),
    ("city[in]:\"a\"", "'filter' invalid for 'in' operator. Received '\"a\"' but array value "
                       "expected eg: 'field[in]:[value_1,value_2]'"),
])
def test_bad_filters_are_400(sandbox_client: httpx.Client, flt: str, message: str) -> None:
    assert error_of(sandbox_client.get("/rest/people", params={"filter": flt}), 400) == message


def test_unknown_comparator_lists_the_allowed_ones(sandbox_client: httpx.Client) -> None:
    message = error_of(sandbox_client.get("/rest/people", params={"filter": "city[has]:1"}), 400)
    assert message.startswith("'filter' invalid for 'city[has]:1', comparator has not in eq,")


def test_relation_name_cannot_be_filtered(sandbox_client: httpx.Client) -> None:
    assert sandbox_client.get("/rest/people",
                              params={"filter": "company[is]:NULL"}).status_code == 400


def test_deleted_at_filter_finds_soft_deleted_rows(sandbox_client: httpx.Client) -> None:
    a = create_person(sandbox_client, first="A")
    create_person(sandbox_client, first="B")
    c = create_person(sandbox_client, first="C")
    for rid in (a["id"], c["id"]):
        sandbox_client.delete(f"/rest/people/{rid}", params={"soft_delete": "true"})
    assert _firsts(sandbox_client, "deletedAt[is]:NOT_NULL") == ["A", "C"]
    assert _firsts(sandbox_client, "deletedAt[is]:NULL") == ["B"]
    assert _people(sandbox_client)["totalCount"] == 1


def test_in_splits_its_list_on_every_comma_quotes_or_not(sandbox_client: httpx.Client) -> None:
    for first in ("a", "b", "a,b"):
        create_person(sandbox_client, first=first)
    assert _firsts(sandbox_client, "name.firstName[in]:[a,b]") == ["a", "b"]
    assert _firsts(sandbox_client, 'name.firstName[in]:["a","b"]') == ["a", "b"]
    # '"a' and 'b"' keep their lone quotes: "a,b" is not found.
    assert _firsts(sandbox_client, 'name.firstName[in]:["a,b"]') == []
    # No trimming either: ' b' is not 'b'.
    assert _firsts(sandbox_client, "name.firstName[in]:[a, b]") == ["a"]
