"""Our API key's name in Twenty's `updatedBy`: an apostrophe in it, and another key sharing it.

The pull leaves out records whose `updatedBy` names our key, so the name must (a) survive Twenty's
filter parser, which flips its quote tracking on every apostrophe, and (b) be ours alone: Twenty
does not make key names unique and the stamp carries the name only.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.sync.conftest import SCHEMA
from truth_forge.core.crm_schema import setup_schema
from truth_forge.sandbox import SandboxConfig, SandboxServer
from truth_forge.sync import own_writes
from truth_forge.sync.runner import run_sync
from truth_forge.sync.store import per_server
from truth_forge.twenty import TwentyClient

MEMBER = "member-token"


def serve(**config: Any) -> SandboxServer:
    return SandboxServer(SandboxConfig(member_tokens={MEMBER: "Ada Lovelace"}, rate_limit_per_minute=None, **config))


def client_for(sandbox: SandboxServer, token: str) -> TwentyClient:
    client = TwentyClient(sandbox.base_url, token, requests_per_minute=100_000, timeout=5)
    setup_schema(client, SCHEMA)
    return client


@pytest.fixture
def shared_name() -> Iterator[tuple[SandboxServer, TwentyClient]]:
    """Our key and another integration's key, both named "sync" (Twenty allows it)."""
    with serve(named_api_keys={"ours": "sync", "theirs": "sync"}) as sandbox, client_for(sandbox, "ours") as client:
        yield sandbox, client


def edit_category(sandbox: SandboxServer, token: str, client: TwentyClient) -> None:
    """Someone other than our key changes a synced field of one person."""
    person = client.records.find_page("people", limit=1).records[0]
    code = "C" if person["categoryCode"] != "C" else "D"
    with httpx.Client(base_url=sandbox.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=10) as http:
        assert http.patch(f"/rest/people/{person['id']}", json={"categoryCode": code}).status_code == 200


def test_a_key_name_with_an_apostrophe_keeps_the_filter_on(store: Any) -> None:
    with serve(named_api_keys={"obrien": "O'Brien sync"}) as sandbox, client_for(sandbox, "obrien") as client:
        first = run_sync(store, client, SCHEMA)
        assert "warnings" not in first.counts
        again = run_sync(store, client, SCHEMA)
        # Left out at the server: one empty page per object, no 400, no warning.
        assert again.counts["requests"] == 2 and "warnings" not in again.counts
        assert own_writes.status(store, sandbox.base_url) == (
            "on: records last updated by API key \"O'Brien sync\" are not read back; no other API key has that name")
        edit_category(sandbox, MEMBER, client)
        assert run_sync(store, client, SCHEMA).counts["pull_person"]["updated"] == 1


def test_a_filter_twenty_refuses_is_turned_off_and_said_once_in_the_run_counts(store: Any) -> None:
    with serve(named_api_keys={"ours": "sync"}) as sandbox, client_for(sandbox, "ours") as client:
        run_sync(store, client, SCHEMA)
        # A name stored by an older release, which Twenty's parser cannot hold (an unmatched parenthesis).
        store.set_watermark(per_server(own_writes.MARK_PREFIX.rstrip(":"), sandbox.base_url),
                            json.dumps({"source": "API", "name": "Nightly (main", "checked": "Nightly (main"}))
        assert own_writes.filter_clause(store, sandbox.base_url) is not None
        refused = run_sync(store, client, SCHEMA)
        assert refused.status == "succeeded"
        [warning] = refused.counts["warnings"]
        assert warning.startswith("own-writes filter off: Twenty refused the pull's filter on updatedBy (HTTP 400: ")
        assert "bracket is missing" in warning
        assert "warnings" not in run_sync(store, client, SCHEMA).counts  # said once


def test_another_key_with_our_name_turns_the_filter_off_and_its_edits_come_through(
        shared_name: tuple[SandboxServer, TwentyClient], store: Any) -> None:
    sandbox, client = shared_name
    first = run_sync(store, client, SCHEMA)
    [warning] = first.counts["warnings"]
    assert "2 API keys in this workspace are named 'sync'" in warning
    assert own_writes.status(store, sandbox.base_url).startswith("off: 2 API keys")
    assert own_writes.our_api_key_name(store, sandbox.base_url) is None  # the merge trusts no 'sync' stamp
    edit_category(sandbox, "theirs", client)
    second = run_sync(store, client, SCHEMA)
    assert second.counts["pull_person"]["updated"] == 1 and "warnings" not in second.counts


def test_a_name_ours_alone_is_checked_once(store: Any) -> None:
    with serve(named_api_keys={"ours": "sync", "theirs": "other"}) as sandbox, client_for(sandbox, "ours") as client:
        first = run_sync(store, client, SCHEMA)
        assert "warnings" not in first.counts
        assert sum(e.path.endswith("/apiKeys") for e in sandbox.request_log) == 1
        run_sync(store, client, SCHEMA)
        assert sum(e.path.endswith("/apiKeys") for e in sandbox.request_log) == 1
        assert own_writes.filter_clause(store, sandbox.base_url) is not None


def test_a_key_that_may_not_list_keys_says_so_in_plain_words_once(store: Any) -> None:
    with serve(named_api_keys={"ours": "sync"}, api_keys_without_settings_permission=["ours"]) as sandbox, \
            client_for(sandbox, "ours") as client:
        first = run_sync(store, client, SCHEMA)
        [warning] = first.counts["warnings"]
        assert "cannot check that no other API key is named 'sync'" in warning
        assert "lacks the 'API keys and webhooks' permission" in warning
        assert own_writes.filter_clause(store, sandbox.base_url) is not None  # unverified, not disproved
        assert own_writes.status(store, sandbox.base_url).endswith("could not be checked")
        assert "warnings" not in run_sync(store, client, SCHEMA).counts


def test_the_key_list_finds_our_key_by_the_id_in_a_jwt_token() -> None:
    """doctor reads our key's name from the list by the token's `jti` (no write needed)."""
    from truth_forge.operations.doctor import _api_key_id

    payload = base64.urlsafe_b64encode(json.dumps({"sub": "w", "jti": "key-1"}).encode()).decode().rstrip("=")
    assert _api_key_id(f"eyJhbGciOiJIUzI1NiJ9.{payload}.c2ln") == "key-1"
    assert _api_key_id("not-a-jwt") is None


def test_the_name_learnt_from_the_companies_is_checked_while_the_people_are_pushed(store: Any) -> None:
    """The check is one read: it goes out once the companies' answers taught the name, not after the
    last write, so its round trip overlaps the people's push (on a slow Twenty, a request's latency)."""
    with serve(named_api_keys={"ours": "sync", "theirs": "other"}) as sandbox, \
            client_for(sandbox, "ours"), \
            TwentyClient(sandbox.base_url, "ours", batch_size=2, max_in_flight=2, requests_per_minute=100_000,
                         timeout=5) as client:
        sandbox.set_faults(latency_ms=30)
        first = run_sync(store, client, SCHEMA)
        log = sandbox.request_log
    assert first.status == "succeeded" and "warnings" not in first.counts
    [check] = [e.seq for e in log if e.path.endswith("/apiKeys")]
    companies = [e.seq for e in log if e.path == "/rest/batch/companies"]
    people = [e.seq for e in log if e.path == "/rest/batch/people"]
    assert len(people) == 20 and companies[-1] < check < people[-1]
    assert own_writes.filter_clause(store, sandbox.base_url) is not None  # checked: ours alone
