"""Lists of ids are cut so that every request line stays within the client's limit, measured as the
server receives it; a read a proxy refuses as too long (414) lowers the limit and is cut again and
resent; a write so refused is a clear configuration error, sent once."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from truth_forge.core.config import Settings
from truth_forge.sandbox import SandboxConfig, SandboxServer
from truth_forge.twenty import NextStep, TwentyClient, TwentyRequestTooLong
from truth_forge.twenty.client import client_options
from truth_forge.twenty.records import _CURSOR_ROOM, in_filter
from truth_forge.twenty.transport import DEFAULT_MAX_REQUEST_LINE, MIN_REQUEST_LINE


def client_for(server: SandboxServer, **options: Any) -> TwentyClient:
    return TwentyClient(server.base_url, server.api_key, requests_per_minute=100_000, timeout=5.0, **options)


def lines_seen(server: SandboxServer) -> list[int]:
    """Request lines as the server received them: method, path, raw query, HTTP version."""
    return [len(e.method) + 1 + len(e.path) + (1 + len(e.query) if e.query else 0) + len(" HTTP/1.1")
            for e in server.request_log]


def make_people(client: TwentyClient, count: int) -> list[str]:
    made = client.records.create_many("people", [{"name": {"firstName": f"P{n}", "lastName": "L"}}
                                                 for n in range(count)])
    return [r["id"] for r in made.succeeded]


@pytest.fixture(scope="module")
def proxy() -> Iterator[SandboxServer]:
    """Twenty behind an nginx-like proxy: request lines over 8 KB answered 414."""
    with SandboxServer(SandboxConfig(rate_limit_per_minute=None, max_request_line=8192)) as server:
        yield server


def test_the_limit_is_8000_bytes_unless_set() -> None:
    # Under nginx's 8 KB request line, Apache's 8,190 and Node's 16 KiB head (docs/twenty-facts.md).
    assert DEFAULT_MAX_REQUEST_LINE == 8000
    assert client_options(Settings())["max_request_line"] == 8000
    assert client_options(Settings(TRUTH_FORGE_TWENTY_MAX_REQUEST_LINE=4096))["max_request_line"] == 4096


def test_a_long_id_list_is_read_in_as_many_requests_as_fit_and_no_more(sandbox: SandboxServer) -> None:
    with client_for(sandbox, max_request_line=2048) as client:
        ids = make_people(client, 300)
        sandbox.clear_request_log()
        found = client.records.find_in("people", "id", ids)
        assert sorted(r["id"] for r in found) == sorted(ids)
        seen = lines_seen(sandbox)
        assert max(seen) <= 2048
        runs = client.records.in_runs("people", "id", ids)
        assert len(seen) == len(runs) and sum(map(len, runs)) == 300
        # Each run is as long as the limit allows: one more id would not have fitted.
        # (The measure reserves room for a page cursor, about 170 bytes, and one id adds about 45.)
        assert all(line > 2048 - 170 - 2 * 45 for line in seen[:-1])


def test_a_batch_delete_splits_its_ids_to_fit(sandbox: SandboxServer) -> None:
    with client_for(sandbox) as client:
        ids = make_people(client, 300)
        sandbox.clear_request_log()
        deleted = client.records.delete_many("people", ids)
        assert sorted(r["id"] for r in deleted) == sorted(ids)
        seen = lines_seen(sandbox)
        assert max(seen) <= 8000 and len(seen) == 2  # 200 ids of about 45 bytes would be 9 KB
        assert list(client.records.iter_records("people")) == []


def test_a_request_over_the_limit_is_never_sent(sandbox: SandboxServer) -> None:
    with client_for(sandbox, max_request_line=1024) as client:
        sandbox.clear_request_log()
        with pytest.raises(TwentyRequestTooLong, match="TRUTH_FORGE_TWENTY_MAX_REQUEST_LINE"):
            client.records.find_page("people", filter="id[in]:[" + ",".join(['"x"'] * 400) + "]")
        assert sandbox.request_log == []


def test_a_read_a_proxy_refuses_lowers_the_limit_and_is_cut_again(proxy: SandboxServer,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    # A client told the proxy takes 16 KB: 200 ids go in one request, which the proxy refuses (8 KB);
    # the limit falls to half the refused line and the ids are read in requests that fit.
    with client_for(proxy, max_request_line=16_000) as client:
        ids = make_people(client, 200)
        proxy.clear_request_log()
        with caplog.at_level("INFO", logger="truth_forge.twenty.transport"):
            found = client.records.find_in("people", "id", ids)
        assert sorted(r["id"] for r in found) == sorted(ids)
        statuses = [e.status for e in proxy.request_log]
        runs = client.records.in_runs("people", "id", ids)  # cut at the learned limit
        assert statuses[0] == 414 and set(statuses[1:]) == {200} and len(statuses) == 1 + len(runs) == 4
        refused = lines_seen(proxy)[0]
        assert client.transport.max_request_line == refused // 2
        assert max(lines_seen(proxy)[1:]) <= refused // 2
        warned = [r for r in caplog.records if "refused a request line" in r.getMessage()]
        assert [r.levelname for r in warned] == ["WARNING"]
        # The learned limit holds for the rest of the client's life: no second refusal.
        proxy.clear_request_log()
        assert len(client.records.find_in("people", "id", ids)) == 200
        assert [e.status for e in proxy.request_log] == [200] * len(runs)


def test_a_limit_the_user_set_is_never_exceeded(proxy: SandboxServer) -> None:
    with client_for(proxy, max_request_line=2048) as client:
        ids = make_people(client, 100)
        proxy.clear_request_log()
        assert len(client.records.find_in("people", "id", ids)) == 100
        assert max(lines_seen(proxy)) <= 2048 and client.transport.max_request_line == 2048


def test_a_write_a_proxy_refuses_is_a_configuration_error_sent_once(proxy: SandboxServer) -> None:
    with client_for(proxy, max_request_line=16_000) as client:
        ids = make_people(client, 200)
        proxy.clear_request_log()
        with pytest.raises(TwentyRequestTooLong) as refused:
            client.records.delete_many("people", ids)
        assert refused.value.status == 414 and refused.value.next_step is NextStep.FIX_CONFIG
        message = str(refused.value)
        assert "HTTP 414" in message and "TRUTH_FORGE_TWENTY_MAX_REQUEST_LINE" in message
        assert [e.status for e in proxy.request_log] == [414]  # not resent
        assert len(client.records.find_in("people", "id", ids)) == 200  # nothing was deleted
    with client_for(proxy) as client:  # the default limit passes the same proxy
        assert len(client.records.find_in("people", "id", ids)) == 200
        assert len(client.records.delete_many("people", ids)) == 200


def test_the_limit_never_falls_below_the_floor(sandbox: SandboxServer) -> None:
    with client_for(sandbox, max_request_line=1500) as client:
        client.transport.learn_request_line(1400, 414)
        assert client.transport.max_request_line == MIN_REQUEST_LINE
        client.transport.learn_request_line(1100, 414)
        assert client.transport.max_request_line == MIN_REQUEST_LINE


def test_nodes_431_is_the_same_clear_error(sandbox: SandboxServer) -> None:
    with client_for(sandbox, max_request_line=64_000) as client:
        ids = make_people(client, 400)
        sandbox.clear_request_log()
        with pytest.raises(TwentyRequestTooLong, match="HTTP 431"):
            client.records.find_page("people", filter=in_filter("id", ids))  # 400 ids: about 18 KB
        assert [e.status for e in sandbox.request_log] == [431]


def test_runs_of_values_of_any_length_are_each_as_long_as_fits(sandbox: SandboxServer) -> None:
    # Emails of very different lengths (a look-up of holders): every run fits, and the next value
    # would not have (so no request is wasted), in the values' order.
    values = [f"{'x' * (n * 37 % 120 + 1)}{n}@example.com" for n in range(500)]
    with client_for(sandbox, max_request_line=2048) as client:
        records = client.records
        runs = records.in_runs("people", "emails.primaryEmail", values, with_deleted=True)
        assert [v for run in runs for v in run] == values

        def line(run: list[str]) -> int:
            return client.transport.request_line_length("GET", "/rest/people", records._find_params(
                in_filter("emails.primaryEmail", run, with_deleted=True), None, 200, _CURSOR_ROOM, None, 0))

        taken = 0
        for run in runs:
            taken += len(run)
            assert line(run) <= 2048
            if taken < len(values):
                assert line(run + [values[taken]]) > 2048
        found = records.find_in("people", "emails.primaryEmail", values, with_deleted=True)
        assert found == [] and all(e.status == 200 for e in sandbox.request_log[-len(runs):])
