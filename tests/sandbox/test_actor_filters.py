"""Filters on actor subfields, with SQL's NULL logic, checked against a real SQL engine.

Twenty turns a REST filter into one WHERE clause (compute-where-condition-parts.ts): `neq` is
`<>`, `not()` is `NOT (...)`, and a condition on a text column whose value is the column's empty
value ('' or the text NULL) gets `OR col IS NULL` / `AND col IS NOT NULL`. DuckDB has Postgres's
three-valued logic, so the same rows loaded into it and queried with the SQL Twenty would send
are the oracle for what the sandbox must answer.
"""

from __future__ import annotations

from typing import Any

import duckdb
import httpx
import pytest

from tests.sandbox.util import create_person
from truth_forge.sandbox import SandboxConfig, SandboxServer

KEY_NAME = "k"


@pytest.fixture
def actors() -> Any:
    """Six people whose updatedBy differ: two API keys, a member, and three with NULL or ''
    subfields (rows whose updatedBy was never written, as before the column was maintained)."""
    config = SandboxConfig(named_api_keys={"key-k": KEY_NAME, "key-other": "other"},
                           member_tokens={"member": "Ada Lovelace"}, rate_limit_per_minute=None)
    with SandboxServer(config) as sb, httpx.Client(base_url=sb.base_url, timeout=10) as http:
        def client(token: str) -> httpx.Client:
            http.headers["Authorization"] = f"Bearer {token}"
            return http

        ids = {"A": create_person(client("key-k"), first="A")["id"],
               "B": create_person(client("key-other"), first="B")["id"],
               "C": create_person(client("member"), first="C")["id"]}
        unwritten = {"D": None,
                     "E": {"source": "API", "name": "", "workspaceMemberId": None, "context": {}},
                     "F": {"source": "MANUAL", "name": None, "workspaceMemberId": None,
                           "context": None}}
        ws = sb.runtime.workspace
        for first, actor in unwritten.items():
            rid = create_person(client(sb.api_key), first=first)["id"]
            with ws.lock:  # no API writes such a value; put it straight into the table
                table = ws.table(ws.objects["person"])
                table.put({**(table.get(rid) or {}), "updatedBy": actor})
            ids[first] = rid
        client(sb.api_key)
        yield sb, http, ids


def _oracle(sb: SandboxServer, http: httpx.Client, where: str) -> list[str]:
    people = http.get("/rest/people", params={"limit": 200}).json()["data"]["people"]
    db = duckdb.connect()
    db.execute('CREATE TABLE person (first TEXT, "updatedBySource" TEXT, "updatedByName" TEXT, '
               '"updatedByWorkspaceMemberId" TEXT)')
    for p in people:
        actor = p["updatedBy"] or {}
        db.execute("INSERT INTO person VALUES (?, ?, ?, ?)",
                   [p["name"]["firstName"], actor.get("source"), actor.get("name"),
                    actor.get("workspaceMemberId")])
    return [row[0] for row in db.execute(f"SELECT first FROM person WHERE {where} ORDER BY first")
            .fetchall()]


def _sandbox(http: httpx.Client, flt: str) -> list[str]:
    response = http.get("/rest/people", params={"filter": flt, "order_by": "name.firstName"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["totalCount"] == len(body["data"]["people"])
    return [p["name"]["firstName"] for p in body["data"]["people"]]


SRC, NAME = '"updatedBySource"', '"updatedByName"'


@pytest.mark.parametrize(("flt", "where", "expected"), [
    ("updatedBy.source[eq]:API", f"{SRC} = 'API'", "ABE"),
    ('updatedBy.name[eq]:"k"', f"{NAME} = 'k'", "A"),
    ("updatedBy.source[neq]:API", f"{SRC} <> 'API'", "CF"),
    ('updatedBy.name[neq]:"k"', f"{NAME} <> 'k'", "BCE"),
    ("updatedBy.name[is]:NULL", f"({NAME} IS NULL OR {NAME} = '')", "DEF"),
    ("updatedBy.name[is]:NOT_NULL", f"{NAME} IS NOT NULL", "ABCE"),
    ("updatedBy.source[is]:NULL", f"{SRC} IS NULL", "D"),
    ('or(updatedBy.source[neq]:API,updatedBy.name[neq]:"k",updatedBy.name[is]:NULL)',
     f"({SRC} <> 'API' OR {NAME} <> 'k' OR ({NAME} IS NULL OR {NAME} = ''))", "BCDEF"),
    ("not(updatedBy.source[eq]:API)", f"NOT ({SRC} = 'API')", "CF"),
    ('not(updatedBy.name[eq]:"k")', f"NOT ({NAME} = 'k')", "BCE"),
    ('and(updatedBy.source[eq]:API,not(updatedBy.name[eq]:"k"))',
     f"({SRC} = 'API' AND NOT ({NAME} = 'k'))", "BE"),
    ('not(or(updatedBy.name[eq]:"k",updatedBy.source[eq]:MANUAL))',
     f"NOT ({NAME} = 'k' OR {SRC} = 'MANUAL')", "BE"),
    ('not(and(updatedBy.name[neq]:"k",updatedBy.source[eq]:API))',
     f"NOT ({NAME} <> 'k' AND {SRC} = 'API')", "ACF"),
    ('updatedBy.name[eq]:""', f"({NAME} = '' OR {NAME} IS NULL)", "DEF"),
    ('updatedBy.name[neq]:""', f"({NAME} <> '' AND {NAME} IS NOT NULL)", "ABC"),
    ('updatedBy.name[in]:["k","other"]', f"{NAME} IN ('k', 'other')", "AB"),
    ('updatedBy.source[eq]:API,updatedBy.name[neq]:"k"',
     f"({SRC} = 'API' AND {NAME} <> 'k')", "BE"),
])
def test_actor_filters_match_sql(actors: Any, flt: str, where: str, expected: str) -> None:
    sb, http, _ = actors
    oracle = _oracle(sb, http, where)
    assert "".join(oracle) == expected  # the oracle itself, so a wrong SQL line shows up here
    assert _sandbox(http, flt) == oracle


def test_filter_on_member_id(actors: Any) -> None:
    sb, http, _ = actors
    member_id = sb.actor("member")["workspaceMemberId"]
    assert _sandbox(http, f"updatedBy.workspaceMemberId[eq]:{member_id}") == ["C"]
    assert _sandbox(http, f"updatedBy.workspaceMemberId[neq]:{member_id}") == []
    assert _sandbox(http, "updatedBy.workspaceMemberId[is]:NULL") == ["A", "B", "D", "E", "F"]
