"""Paging through a tie on `updatedAt`, as older Twenty servers page (profile "legacy").

Older servers compare the cursor's millisecond value with `>` against the microseconds Postgres
keeps, so every row of the cursor's own millisecond comes again and the id tie-breaker never
applies (docs/twenty-facts.md, "Paging through a tie"). A walk through a tie larger than a page
sees the same page again; the newest rules (profile "latest") walk it once. A walk ordered by
`id` is exact on both.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.sandbox.util import create_people, person
from truth_forge.sandbox import SandboxConfig, SandboxServer

TIE = 450


def _tie_of_people(server: SandboxServer, client: httpx.Client) -> set[str]:
    """TIE people written in three requests that all carry one `updatedAt`."""
    server.freeze_clock()
    try:
        ids: set[str] = set()
        for start in range(0, TIE, 200):
            rows = create_people(client, [person(f"P{n}") for n in range(start, min(start + 200, TIE))])
            ids |= {r["id"] for r in rows}
    finally:
        server.freeze_clock(False)
    return ids


def _walk(client: httpx.Client, order: str, max_pages: int = 10) -> list[dict[str, Any]]:
    """Every page of one cursor walk (bounded); stops when the server repeats its cursor."""
    pages: list[dict[str, Any]] = []
    cursor = None
    for _ in range(max_pages):
        params: dict[str, Any] = {"order_by": order, "limit": 200}
        if cursor:
            params["starting_after"] = cursor
        body = client.get("/rest/people", params=params).raise_for_status().json()
        pages.append(body)
        end = body["pageInfo"]["endCursor"]
        if not body["pageInfo"]["hasNextPage"] or end == cursor:
            break
        cursor = end
    return pages


def _ids(page: dict[str, Any]) -> list[str]:
    return [p["id"] for p in page["data"]["people"]]


def test_a_frozen_clock_gives_every_write_one_updated_at(sandbox: SandboxServer,
                                                          sandbox_client: httpx.Client) -> None:
    _tie_of_people(sandbox, sandbox_client)
    people = sandbox_client.get("/rest/people", params={"limit": 200}).json()["data"]["people"]
    assert len({p["updatedAt"] for p in people}) == 1
    later = create_people(sandbox_client, [person("After")])[0]
    assert later["updatedAt"] > people[0]["updatedAt"]


def test_legacy_paging_sees_the_same_page_again_inside_a_tie(legacy_sandbox: SandboxServer,
                                                              legacy_client: httpx.Client) -> None:
    _tie_of_people(legacy_sandbox, legacy_client)
    pages = _walk(legacy_client, "updatedAt")
    assert len(pages) == 2
    assert _ids(pages[1]) == _ids(pages[0])  # the tie starts again at its first row
    assert pages[1]["pageInfo"]["endCursor"] == pages[0]["pageInfo"]["endCursor"]
    assert pages[1]["pageInfo"]["hasNextPage"]


def test_legacy_paging_repeats_the_tie_a_page_ends_in(legacy_sandbox: SandboxServer,
                                                       legacy_client: httpx.Client) -> None:
    """A tie smaller than a page: the next page starts at its first row again, then goes on."""
    first = {r["id"] for r in create_people(legacy_client, [person(f"A{n}") for n in range(150)])}
    second = {r["id"] for r in create_people(legacy_client, [person(f"B{n}") for n in range(100)])}
    pages = _walk(legacy_client, "updatedAt")
    assert len(pages) == 2
    assert set(_ids(pages[0])) == first | set(_ids(pages[0])[150:])
    assert set(_ids(pages[1])) == second  # 50 of them a second time
    assert not pages[1]["pageInfo"]["hasNextPage"]


@pytest.mark.parametrize("order", ["id", "updatedAt"])
def test_latest_paging_walks_a_tie_once(sandbox: SandboxServer, sandbox_client: httpx.Client, order: str) -> None:
    ids = _tie_of_people(sandbox, sandbox_client)
    pages = _walk(sandbox_client, order)
    walked = [i for page in pages for i in _ids(page)]
    assert len(walked) == TIE and set(walked) == ids


def test_legacy_paging_by_id_walks_a_tie_once(legacy_sandbox: SandboxServer, legacy_client: httpx.Client) -> None:
    ids = _tie_of_people(legacy_sandbox, legacy_client)
    walked = [i for page in _walk(legacy_client, "id") for i in _ids(page)]
    assert len(walked) == TIE and set(walked) == ids


def test_cursor_paging_is_a_profile_rule_with_an_override() -> None:
    assert SandboxConfig().behaviour.cursor_paging == "keyset"
    assert SandboxConfig(twenty_version="legacy").behaviour.cursor_paging == "sort_value"
    assert SandboxConfig(twenty_version="legacy", cursor_paging="keyset").behaviour.cursor_paging == "keyset"
    with pytest.raises(ValueError):
        SandboxConfig(cursor_paging="bogus")  # type: ignore[arg-type]
