"""Where the sandbox is now as strict as Twenty (issue 19, points 2, 5 and 6).

Each test names the server source it follows; docs/twenty-facts.md §13 has the paths.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from tests.sandbox.test_webhooks import Receiver, receiver  # noqa: F401 (the fixture)
from tests.sandbox.util import SELECT_OPTIONS, create_field, create_person, error_of
from truth_forge.sandbox import SandboxConfig, SandboxServer
from truth_forge.sandbox.filters import split_filter_content

# --- the filter parser, step for step (parse-filter-content.util.ts) -------------------------


@pytest.mark.parametrize(("text", "parts"), [
    # Twenty's own cases (parse-filter-content.util.spec.ts)
    ("and(fieldNumber[eq]:1)", ["fieldNumber[eq]:1"]),
    ("and(fieldNumber[eq]:1,fieldNumber[eq]:2)", ["fieldNumber[eq]:1", "fieldNumber[eq]:2"]),
    ("and(fieldNumber[eq]:1,or(fieldNumber[eq]:2,fieldNumber[eq]:3))",
     ["fieldNumber[eq]:1", "or(fieldNumber[eq]:2,fieldNumber[eq]:3)"]),
    ("and(fieldNumber[in]:[1,2],fieldNumber[eq]:4)", ["fieldNumber[in]:[1,2]", "fieldNumber[eq]:4"]),
    ('and(fieldText[eq]:"val,ue")', ['fieldText[eq]:"val,ue"']),
    ("and(fieldText[eq]:'val,ue')", ["fieldText[eq]:'val,ue'"]),
    # An apostrophe inside a double-quoted value flips the single-quote tracker for good:
    # the commas after it no longer split.
    ('and(name[eq]:"O\'Brien",city[eq]:"Paris")', ['name[eq]:"O\'Brien",city[eq]:"Paris"']),
    # ... unless nothing follows it in that conjunction.
    ('and(city[eq]:"Paris",name[eq]:"O\'Brien")', ['city[eq]:"Paris"', 'name[eq]:"O\'Brien"']),
])
def test_conditions_are_split_as_twenty_splits_them(text: str, parts: list[str]) -> None:
    assert split_filter_content(text) == parts


def _not_ours(name: str) -> str:
    return (f'or(updatedBy.source[neq]:API,updatedBy.source[is]:NULL,'
            f'updatedBy.name[is]:NULL,updatedBy.name[neq]:"{name}")')


@pytest.fixture
def apostrophe_key() -> Iterator[tuple[SandboxServer, httpx.Client]]:
    name = "O'Brien sync"
    config = SandboxConfig(named_api_keys={"obrien": name}, member_tokens={"ada": "Ada Lovelace"},
                           rate_limit_per_minute=None)
    with SandboxServer(config) as sb, httpx.Client(base_url=sb.base_url, timeout=10,
                                                   headers={"Authorization": "Bearer obrien"}) as http:
        yield sb, http


def test_a_key_name_with_an_apostrophe_breaks_the_filter_unless_it_comes_last(
        apostrophe_key: tuple[SandboxServer, httpx.Client]) -> None:
    sb, http = apostrophe_key
    ours = create_person(http, first="Ours")
    edited = create_person(http, first="Edited")
    http.patch(f"/rest/people/{edited['id']}", json={"city": "Paris"},
               headers={"Authorization": "Bearer ada"})
    since = 'updatedAt[gte]:"2000-01-01T00:00:00.000Z"'
    deleted = 'deletedAt[gte]:"2000-01-01T00:00:00.000Z"'
    name = "O'Brien sync"
    # The clause before a comma of the outer or(): everything after the apostrophe stays one
    # condition, whose field is `and(updatedAt` -- the 400 truth-forge used to get.
    broken = http.get("/rest/people", params={"filter": f"or(and({since},{_not_ours(name)}),{deleted})"})
    assert error_of(broken, 400) == 'Object person doesn\'t have any "and(updatedAt" field.'
    # Last in every conjunction around it: the same filter parses and means what it says.
    fixed = http.get("/rest/people", params={"filter": f"or({deleted},and({since},{_not_ours(name)}))"})
    assert fixed.status_code == 200, fixed.text
    assert [p["id"] for p in fixed.json()["data"]["people"]] == [edited["id"]]
    assert ours["id"] != edited["id"]


# --- enum values ------------------------------------------------------------------------------


def test_an_unknown_actor_source_is_refused_like_postgres_refuses_it(sandbox_client: httpx.Client) -> None:
    bad = sandbox_client.get("/rest/people", params={"filter": "updatedBy.source[eq]:BOGUS"})
    assert error_of(bad, 400) == 'invalid input value for enum "person_updatedBySource_enum": "BOGUS"'
    bad_in = sandbox_client.get("/rest/people", params={"filter": "updatedBy.source[in]:[API,NOPE]"})
    assert error_of(bad_in, 400).endswith('"NOPE"')
    create_person(sandbox_client, first="A")
    # like/ilike compare the column cast to text: any pattern passes.
    like = sandbox_client.get("/rest/people", params={"filter": "updatedBy.source[like]:%AP%"})
    assert like.status_code == 200 and len(like.json()["data"]["people"]) == 1


def test_select_values_and_patterns_are_checked_against_the_options(sandbox_client: httpx.Client) -> None:
    assert create_field(sandbox_client, "person", type="SELECT", name="stage", label="Stage",
                        options=SELECT_OPTIONS).status_code == 201
    for flt in ("stage[eq]:WON", "stage[like]:%NEW%", "stage[in]:[NEW,WON]"):
        bad = sandbox_client.get("/rest/people", params={"filter": flt})
        assert error_of(bad, 400).startswith("'filter' enum value '"), flt
        assert "not available in 'stage' enum" in bad.json()["messages"][0]
    for flt in ("stage[eq]:NEW", "stage[is]:NULL", "stage[in]:[NEW,QUALIFIED]"):
        assert sandbox_client.get("/rest/people", params={"filter": flt}).status_code == 200, flt


# --- error bodies -----------------------------------------------------------------------------


def test_twentys_own_exceptions_carry_a_code_on_latest_only(sandbox_client: httpx.Client,
                                                            legacy_client: httpx.Client) -> None:
    unbalanced = {"filter": 'and(name.firstName[eq]:"a"'}
    latest = sandbox_client.get("/rest/people", params=unbalanced)
    assert latest.status_code == 400
    assert latest.json() == {"statusCode": 400, "error": "BadRequestException",
                             "messages": ["'filter' invalid. 1 close bracket is missing in the query"],
                             "code": "INVALID_FILTER_QUERY_PARAM"}
    assert "code" not in legacy_client.get("/rest/people", params=unbalanced).json()
    # Nest's own exceptions never carry one.
    assert "code" not in sandbox_client.get("/rest/people", params={"filter": "city:x"}).json()


# --- rate limits: the short bucket first, then the long one -----------------------------------


def test_the_short_bucket_refuses_first_with_its_own_numbers(sandbox: SandboxServer,
                                                             sandbox_client: httpx.Client) -> None:
    sandbox.set_rate_limit(1000, window_ms=60_000, short=(3, 60_000))
    statuses = [sandbox_client.get("/rest/people").status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    refused = sandbox_client.get("/rest/people")
    assert refused.json()["messages"] == ["Limit reached (3 tokens per 60000 ms)"]


def test_the_default_short_bucket_is_twentys(sandbox: SandboxServer) -> None:
    config = SandboxConfig()
    assert (config.rate_limit_short_limit, config.rate_limit_short_window_ms) == (100, 1000)
    assert (config.rate_limit_per_minute, config.rate_limit_window_ms) == (100, 60_000)


def test_the_long_bucket_still_refuses_when_the_short_one_has_room(sandbox: SandboxServer,
                                                                   sandbox_client: httpx.Client) -> None:
    sandbox.set_rate_limit(2, window_ms=60_000)  # short: Twenty's 100 per second
    statuses = [sandbox_client.get("/rest/people").status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    assert sandbox_client.get("/rest/people").json()["messages"] == ["Limit reached (2 tokens per 60000 ms)"]


# --- 402 and 409 ------------------------------------------------------------------------------


def test_a_spent_quota_answers_402_without_retry_headers(sandbox: SandboxServer,
                                                         sandbox_client: httpx.Client) -> None:
    sandbox.set_faults(quota_exhausted_rate=1.0)
    answer = sandbox_client.get("/rest/people")
    assert answer.status_code == 402
    body = answer.json()
    assert body["error"] == "QUOTA_EXHAUSTED" and body["limitKind"] == "quota"
    assert body["retryAfterSeconds"] > 0
    assert "retry-after" not in answer.headers and "x-ratelimit-limit" not in answer.headers


def test_a_conflict_answers_409_and_writes_nothing(sandbox: SandboxServer,
                                                   sandbox_client: httpx.Client) -> None:
    sandbox.set_faults(conflict_rate=1.0, max_faults=1)
    answer = sandbox_client.post("/rest/people", json={"name": {"firstName": "Ada"}})
    assert answer.status_code == 409 and answer.json()["error"] == "ConflictException"
    assert sandbox_client.get("/rest/people").json()["totalCount"] == 0


# --- webhook bodies ---------------------------------------------------------------------------


def test_webhook_bodies_name_the_member_and_never_an_api_key(
        sandbox: SandboxServer, sandbox_client: httpx.Client, member_client: httpx.Client,
        receiver: Receiver) -> None:  # noqa: F811 (the fixture)
    sandbox_client.post("/rest/metadata/webhooks", json={"targetUrl": receiver.url,
                                                         "operations": ["person.*"]})
    by_key = create_person(sandbox_client, first="ByKey")
    member_client.patch(f"/rest/people/{by_key['id']}", json={"city": "Paris"})
    bodies = {json.loads(raw)["eventName"]: json.loads(raw) for _, raw in receiver.wait(2)}
    assert "userId" not in bodies["person.created"] and "workspaceMemberId" not in bodies["person.created"]
    updated = bodies["person.updated"]
    assert updated["workspaceMemberId"] == updated["record"]["updatedBy"]["workspaceMemberId"]
    assert updated["userId"] and updated["userId"] != updated["workspaceMemberId"]


def test_upserted_is_never_delivered(sandbox: SandboxServer, sandbox_client: httpx.Client,
                                     receiver: Receiver) -> None:  # noqa: F811 (the fixture)
    """The ORM emits `upserted` next to `created`/`updated`, but the listener that queues webhook
    jobs (EntityEventsToDbListener) subscribes to created/updated/deleted/restored/destroyed only."""
    sandbox_client.post("/rest/metadata/webhooks", json={"targetUrl": receiver.url,
                                                         "operations": ["person.upserted"]})
    sandbox_client.post("/rest/batch/people?upsert=true", json=[{"name": {"firstName": "Ada"}}])
    assert sandbox.wait_webhooks_idle()
    assert receiver.received == []


# --- API keys ---------------------------------------------------------------------------------


def test_the_api_key_list_shows_every_key_and_repeats_names() -> None:
    config = SandboxConfig(api_keys=["t1", "t2"], api_key_name="sync",
                           named_api_keys={"t3": "sync", "t4": "other"},
                           api_keys_without_settings_permission=["t4"], rate_limit_per_minute=None)
    with SandboxServer(config) as sb:
        def get(token: str, path: str = "/rest/metadata/apiKeys") -> httpx.Response:
            return httpx.get(sb.base_url + path, headers={"Authorization": f"Bearer {token}"}, timeout=10)

        keys = get("t1").json()
        assert sorted(k["name"] for k in keys) == ["other", "sync", "sync"]  # t1 and t2: one key
        assert get("t1", "/rest/apiKeys").json() == keys  # the deprecated route answers the same
        assert all(k["revokedAt"] is None and k["workspaceId"] == sb.workspace_id for k in keys)
        denied = get("t4")
        assert denied.status_code == 403 and denied.json()["code"] == "PERMISSION_DENIED"
        made = httpx.post(sb.base_url + "/rest/metadata/apiKeys", json={"name": "sync", "expiresAt": "2030-01-01"},
                          headers={"Authorization": "Bearer t1"}, timeout=10)
        assert made.status_code == 201
        assert [k["name"] for k in get("t1").json()].count("sync") == 3
        httpx.delete(f"{sb.base_url}/rest/metadata/apiKeys/{made.json()['id']}",
                     headers={"Authorization": "Bearer t1"}, timeout=10)
        assert [k["name"] for k in get("t1").json()].count("sync") == 2  # revoked keys are not listed


# --- X-Twenty-Fields-Capped -------------------------------------------------------------------


def test_a_read_without_fields_on_a_wide_object_is_capped_and_says_so() -> None:
    with SandboxServer(SandboxConfig(fields_cap=6, rate_limit_per_minute=None)) as sb, \
            httpx.Client(base_url=sb.base_url, timeout=10,
                         headers={"Authorization": f"Bearer {sb.api_key}"}) as http:
        ada = create_person(http, first="Ada")
        page = http.get("/rest/people")
        assert page.headers["x-twenty-fields-capped"] == "true"
        record = page.json()["data"]["people"][0]
        assert list(record)[:2] == ["id", "name"] and len(record) <= 6
        one = http.get(f"/rest/people/{ada['id']}")
        assert one.headers["x-twenty-fields-capped"] == "true"
        chosen = http.get("/rest/people", params={"fields": "jobTitle,emails"})
        assert "x-twenty-fields-capped" not in chosen.headers
        assert set(chosen.json()["data"]["people"][0]) == {"id", "jobTitle", "emails"}
