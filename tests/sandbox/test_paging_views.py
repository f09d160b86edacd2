"""Cursor walks stay exact while the sandbox answers pages from maintained views.

A page is a bisect into a sorted view kept up to date on every write, not a fresh filter and
sort. These tests walk with `starting_after` through ties on `updatedAt` (every record of one
batch write shares one), with writes, failed writes and metadata changes between pages, and
compare each page with what a fresh query (a filter text no view holds yet) answers.
"""

from __future__ import annotations

import random
import uuid
from typing import Any

import httpx

from tests.sandbox.util import create_field, create_people, person
from truth_forge.sandbox.sortedkeys import SortedKeys

WALK = 'updatedAt[gte]:"2000-01-01T00:00:00.000Z"'


def _fresh_filter() -> str:
    # A filter no earlier request used, equal in effect to WALK: answered by a fresh build.
    return f'and({WALK},id[neq]:"{uuid.uuid4()}")'


def _page(client: httpx.Client, flt: str, order: str, limit: int,
          cursor: str | None = None, before: str | None = None) -> dict[str, Any]:
    params: dict[str, Any] = {"filter": flt, "order_by": order, "limit": limit}
    if cursor:
        params["starting_after"] = cursor
    if before:
        params["ending_before"] = before
    response = client.get("/rest/people", params=params)
    assert response.status_code == 200, response.text
    body = response.json()
    return {"ids": [p["id"] for p in body["data"]["people"]],
            "rows": body["data"]["people"], "info": body["pageInfo"],
            "total": body["totalCount"]}


def _same_as_fresh(client: httpx.Client, page: dict[str, Any], order: str, limit: int,
                   cursor: str | None) -> None:
    fresh = _page(client, _fresh_filter(), order, limit, cursor)
    assert page["ids"] == fresh["ids"]
    assert page["total"] == fresh["total"]
    assert page["info"]["hasNextPage"] == fresh["info"]["hasNextPage"]
    assert page["info"]["hasPreviousPage"] == fresh["info"]["hasPreviousPage"]


def _batches(client: httpx.Client, sizes: list[int], tag: str) -> list[str]:
    ids = []
    for b, size in enumerate(sizes):
        made = create_people(client, [person(f"{tag}{b}-{i}") for i in range(size)])
        assert len({p["updatedAt"] for p in made}) == 1  # one statement, one updatedAt
        ids += [p["id"] for p in made]
    return ids


def test_walk_through_ties_sees_every_record_once(sandbox_client: httpx.Client) -> None:
    ids = _batches(sandbox_client, [150, 3, 120, 1, 40], "t")
    for order in ("updatedAt", "updatedAt[DescNullsLast]", "updatedAt,name.firstName[DescNullsFirst]"):
        seen: list[str] = []
        keys: list[tuple[str, str]] = []
        cursor = None
        while True:
            page = _page(sandbox_client, WALK, order, 7, cursor)
            assert page["total"] == len(ids)
            assert page["info"]["hasPreviousPage"] == bool(cursor)
            seen += page["ids"]
            keys += [(p["updatedAt"], p["id"]) for p in page["rows"]]
            if not page["info"]["hasNextPage"]:
                break
            cursor = page["info"]["endCursor"]
        assert sorted(seen) == sorted(ids) and len(seen) == len(ids)
        if order == "updatedAt":
            assert keys == sorted(keys)  # updatedAt, then id inside a tie
        if order.startswith("updatedAt[Desc"):
            assert [k[0] for k in keys] == sorted((k[0] for k in keys), reverse=True)


def test_writes_between_pages_land_where_postgres_puts_them(
        sandbox_client: httpx.Client, member_client: httpx.Client) -> None:
    _batches(sandbox_client, [30, 30], "w")
    order, limit = "updatedAt", 10
    before_writes = _page(sandbox_client, _fresh_filter(), order, 200)["ids"]
    first = _page(sandbox_client, WALK, order, limit)
    cursor = first["info"]["endCursor"]
    second = _page(sandbox_client, WALK, order, limit, cursor)
    cursor = second["info"]["endCursor"]
    seen_before = first["ids"] + second["ids"]
    unseen = [i for i in before_writes if i not in seen_before]

    # Between pages: someone edits a record already seen and one not yet seen, one more is
    # created, one unseen record is soft-deleted, one is destroyed, and a batch that would
    # duplicate an email fails whole (its rollback must leave the view as it was).
    [dup] = create_people(sandbox_client, [person("dup", email="dup@example.com")])
    edited_seen, edited_unseen, deleted, destroyed = seen_before[3], unseen[5], unseen[7], unseen[9]
    for rid in (edited_seen, edited_unseen):
        assert member_client.patch(f"/rest/people/{rid}", json={"jobTitle": "x"}).status_code == 200
    assert sandbox_client.delete(f"/rest/people/{deleted}",
                                 params={"soft_delete": "true"}).status_code == 200
    assert sandbox_client.delete(f"/rest/people/{destroyed}").status_code == 200
    failed = sandbox_client.post("/rest/batch/people", json=[
        person("new1", email="fresh@example.com"), person("new2", email="dup@example.com")])
    assert failed.status_code == 400
    [created] = create_people(sandbox_client, [person("late")])

    rest: list[str] = []
    while True:
        page = _page(sandbox_client, WALK, order, limit, cursor)
        _same_as_fresh(sandbox_client, page, order, limit, cursor)
        rest += page["ids"]
        if not page["info"]["hasNextPage"]:
            break
        cursor = page["info"]["endCursor"]
    # Edited rows moved past the cursor and come (again) at the end, in write order; the
    # deleted and destroyed ones are gone; the failed batch left nothing.
    untouched = [i for i in unseen if i not in (edited_unseen, deleted, destroyed)]
    assert rest == untouched + [dup["id"], edited_seen, edited_unseen, created["id"]]


def test_ending_before_walks_back(sandbox_client: httpx.Client) -> None:
    ids = _batches(sandbox_client, [25, 25], "b")
    forward = _page(sandbox_client, WALK, "updatedAt", 200)["ids"]
    assert sorted(forward) == sorted(ids)
    # The newest record's cursor (a descending walk's first page holds the same values).
    newest = _page(sandbox_client, WALK, "updatedAt[DescNullsLast],id[DescNullsLast]", 1)
    assert newest["ids"] == forward[-1:]
    back, before = newest["ids"], newest["info"]["endCursor"]
    while True:
        page = _page(sandbox_client, WALK, "updatedAt", 7, before=before)
        assert page["info"]["hasNextPage"] is True
        back = page["ids"] + back
        if not page["info"]["hasPreviousPage"]:
            break
        before = page["info"]["startCursor"]
    assert back == forward


def test_metadata_change_between_pages(sandbox_client: httpx.Client) -> None:
    options = [{"value": v, "label": v.title(), "color": "blue", "position": i}
               for i, v in enumerate(("NEW", "QUALIFIED"))]
    created = create_field(sandbox_client, "person", type="SELECT", name="leadStatus",
                           label="Lead status", options=options)
    assert created.status_code == 201, created.text
    made = create_people(sandbox_client, [person(f"m{i}", leadStatus="QUALIFIED" if i % 2 else "NEW")
                                          for i in range(40)])
    walk, order = "or(leadStatus[is]:NULL,leadStatus[eq]:NEW)", "name.firstName"
    first = _page(sandbox_client, walk, order, 6)
    assert first["total"] == 20
    # Removing an option empties that value on every record: they join the walk.
    patched = sandbox_client.patch(f"/rest/metadata/fields/{created.json()['id']}",
                                   json={"options": options[:1]})
    assert patched.status_code == 200, patched.text
    cursor, seen = first["info"]["endCursor"], list(first["ids"])
    while cursor:
        page = _page(sandbox_client, walk, order, 6, cursor)
        assert page["total"] == 40
        seen += page["ids"]
        cursor = page["info"]["endCursor"] if page["info"]["hasNextPage"] else None
    # Postgres's answer: the first page, then every record named after its last one.
    last = first["rows"][-1]["name"]["firstName"]
    later = sorted((p for p in made if p["name"]["firstName"] > last),
                   key=lambda p: p["name"]["firstName"])
    assert seen == first["ids"] + [p["id"] for p in later]


def test_index_backed_lookups_match_a_scan(sandbox_client: httpx.Client) -> None:
    made = create_people(sandbox_client, [person(f"L{i}", email=f"l{i}@example.com")
                                          for i in range(30)])
    ids = [p["id"] for p in made]
    assert sandbox_client.delete(f"/rest/people/{ids[0]}",
                                 params={"soft_delete": "true"}).status_code == 200
    quoted = ",".join(f'"{i}"' for i in ids[:3])

    def firsts(flt: str) -> list[str]:
        body = _page(sandbox_client, flt, "name.firstName", 200)
        return [p["name"]["firstName"] for p in body["rows"]]

    assert firsts(f"id[in]:[{quoted}]") == ["L1", "L2"]  # the soft-deleted one stays hidden
    assert firsts(f"and(id[in]:[{quoted}],or(deletedAt[is]:NULL,deletedAt[is]:NOT_NULL))") == \
        ["L0", "L1", "L2"]
    assert firsts(f"id[in]:[{ids[1].upper()}]") == ["L1"]
    assert firsts('emails.primaryEmail[in]:["L4@EXAMPLE.COM","l5@example.com","nobody@x.io"]') \
        == ["L4", "L5"]
    assert firsts(f'or(id[eq]:"{ids[6]}",name.firstName[eq]:"L7")') == ["L6", "L7"]
    assert firsts(f'and(id[eq]:"{ids[8]}",name.firstName[eq]:"L9")') == []
    assert firsts(f'not(id[in]:[{quoted}])') == sorted(f"L{i}" for i in range(3, 30))
    assert firsts('emails.primaryEmail[eq]:""') == []


def test_sorted_keys_against_a_plain_list() -> None:
    rng = random.Random(7)
    keys = SortedKeys(rng.sample(range(100_000), 3000))
    plain = sorted(keys.slice(0, len(keys)))
    for _ in range(6000):
        k = rng.randrange(100_000)
        if rng.random() < 0.5 and k not in plain:
            keys.add(k)
            plain.append(k)
            plain.sort()
        elif k in plain:
            assert keys.discard(k)
            plain.remove(k)
        else:
            assert not keys.discard(k)
        if rng.random() < 0.05:
            probe = rng.randrange(100_000)
            lo = keys.bisect_left(probe)
            hi = keys.bisect_right(probe)
            assert keys.slice(lo - 3, hi + 3) == [x for x in plain if x < probe][-3:] + \
                [x for x in plain if x == probe] + [x for x in plain if x > probe][:3]
    assert keys.slice(0, len(keys)) == plain and len(keys) == len(plain)
