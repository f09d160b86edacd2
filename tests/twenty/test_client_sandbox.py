"""The Twenty client against the sandbox over real loopback HTTP: shapes, paging, batches, faults."""

from __future__ import annotations

from typing import Any

import pytest

from truth_forge.twenty import TwentyClient, TwentyConfigError, TwentyRateLimited, TwentyRecordRejected, shapes
from truth_forge.twenty.errors import TwentySchemaMismatch


def client_for(sandbox: Any, **options: Any) -> TwentyClient:
    options.setdefault("requests_per_minute", 100_000)
    options.setdefault("timeout", 5.0)
    return TwentyClient(sandbox.base_url, sandbox.api_key, **options)


def person(i: int) -> dict[str, Any]:
    return shapes.person_to_twenty(
        {"name": f"Person {i:04d}", "email": f"Person{i}@Example.com", "phone": f"+1415555{i:04d}"}
    )


def batch_posts(sandbox: Any) -> list[Any]:
    return [e for e in sandbox.request_log if e.method == "POST" and e.path.startswith("/rest/batch/people")]


def test_crud_round_trip_in_twenty_shapes(sandbox: Any) -> None:
    with client_for(sandbox) as client:
        created = client.records.create("people", person(1))
        assert created["name"] == {"firstName": "Person", "lastName": "0001"}
        assert created["emails"]["primaryEmail"] == "person1@example.com"  # Twenty lower-cases emails
        assert shapes.phones_to_list(created["phones"]) == ["+14155550001"]

        fetched = client.records.get("people", created["id"])
        assert fetched["id"] == created["id"]

        updated = client.records.update("people", created["id"], {"jobTitle": "Analyst"})
        assert updated["jobTitle"] == "Analyst"

        client.records.delete("people", created["id"])  # soft
        assert [p["id"] for p in client.records.iter_records("people")] == []
        restored = client.records.restore("people", created["id"])
        assert restored["deletedAt"] is None
        assert [p["id"] for p in client.records.iter_records("people")] == [created["id"]]


def test_paging_follows_cursors_until_has_next_page_is_false(sandbox: Any) -> None:
    with client_for(sandbox) as client:
        outcome = client.records.create_many("people", [person(i) for i in range(450)])
        assert not outcome.failures and outcome.aborted is None
        before = sandbox.request_count(method="GET", path_prefix="/rest/people")
        ids = [r["id"] for r in client.records.iter_records("people", page_size=200)]
        pages = sandbox.request_count(method="GET", path_prefix="/rest/people") - before
    assert len(ids) == 450 and len(set(ids)) == 450
    assert pages == 3


def test_batches_are_chunked_to_the_batch_size(sandbox: Any) -> None:
    with client_for(sandbox, batch_size=60) as client:
        outcome = client.records.create_many("people", [person(i) for i in range(130)])
    assert len(outcome.succeeded) == 130
    # Several chunks are on the wire at once: the sandbox logs them in the order they finish.
    assert sorted(e.batch_size for e in batch_posts(sandbox)) == [10, 60, 60]


def test_one_bad_record_does_not_sink_its_batch(sandbox: Any) -> None:
    records = [person(i) for i in range(10)]
    records[6] = {**records[6], "phones": {"primaryPhoneNumber": "612345678", "primaryPhoneCountryCode": "XX"}}
    with client_for(sandbox) as client:
        outcome = client.records.create_many("people", records)
        stored = list(client.records.iter_records("people"))
    assert len(stored) == 9
    assert [f.index for f in outcome.failures] == [6]
    assert isinstance(outcome.failures[0].error, TwentyRecordRejected)
    assert "XX" in str(outcome.failures[0].error)
    assert outcome.results[6] is None and all(outcome.results[i] for i in range(10) if i != 6)


def test_a_field_the_workspace_lacks_stops_the_write_after_one_request(sandbox: Any) -> None:
    # Every record would be refused alike: no splitting, no request per record.
    records = [{**person(i), "notAField": "x"} for i in range(10)]
    with client_for(sandbox) as client:
        outcome = client.records.create_many("people", records)
    assert isinstance(outcome.aborted, TwentySchemaMismatch) and outcome.aborted_at == 0
    assert len(batch_posts(sandbox)) == 1 and outcome.succeeded == []


def test_a_create_refused_for_a_taken_value_is_not_split(sandbox: Any) -> None:
    # The caller finds the holders in one read; splitting 10 records to find them would cost ~7 requests.
    with client_for(sandbox) as client:
        client.records.create_many("people", [person(3)])
        before = len(batch_posts(sandbox))
        outcome = client.records.create_many("people", [person(i) for i in range(10)])
    assert len(batch_posts(sandbox)) - before == 1
    assert sorted(f.index for f in outcome.failures) == list(range(10))
    assert all(isinstance(f.error, TwentyRecordRejected) and f.error.is_duplicate for f in outcome.failures)


def test_delete_many_soft_deletes_by_id_and_takes_gone_ids_as_done(sandbox: Any) -> None:
    with client_for(sandbox, batch_size=2) as client:
        ids = [r["id"] for r in client.records.create_many("people", [person(i) for i in range(5)]).succeeded]
        client.records.delete("people", ids[0], soft=False)  # destroyed: the batch delete still succeeds
        deleted = client.records.delete_many("people", ids, soft=True)
        left = list(client.records.iter_records("people"))
        trash = list(client.records.iter_records("people", filter="deletedAt[is]:NOT_NULL"))
    assert sorted(d["id"] for d in deleted) == sorted(ids[1:])
    assert left == [] and sorted(t["id"] for t in trash) == sorted(ids[1:])


def test_upsert_matches_on_a_unique_email_and_does_not_duplicate(sandbox: Any) -> None:
    with client_for(sandbox) as client:
        first = client.records.create_many("people", [person(i) for i in range(5)], upsert=True)
        changed = [{**person(i), "jobTitle": "CTO"} for i in range(5)]
        second = client.records.create_many("people", changed, upsert=True)
        stored = list(client.records.iter_records("people"))
    assert [r["id"] for r in first.succeeded] == [r["id"] for r in second.succeeded]
    assert len(stored) == 5 and {r["jobTitle"] for r in stored} == {"CTO"}


def test_rate_limit_storm_every_call_finishes_and_no_batch_is_sent_twice(sandbox: Any) -> None:
    sandbox.set_faults(rate_limit_storm=0.5, seed=11)
    with client_for(sandbox, batch_size=20, max_retries=12) as client:
        client.transport.retry.base_delay = 0.01
        client.transport.retry.max_delay = 0.05
        outcome = client.records.create_many("people", [person(i) for i in range(100)], upsert=True)
        sandbox.set_faults(seed=0)
        stored = list(client.records.iter_records("people"))
    assert outcome.aborted is None and len(outcome.succeeded) == 100
    assert len(stored) == 100
    posts = batch_posts(sandbox)
    assert any(e.status == 429 for e in posts), "the storm should have hit some batches"
    assert sum(1 for e in posts if 200 <= (e.status or 0) < 300) == 5  # each of the 5 batches landed exactly once


def test_flaky_server_upserts_converge_without_duplicates(sandbox: Any) -> None:
    sandbox.set_faults(error_rate=0.3, drop_rate=0.1, seed=5)
    with client_for(sandbox, batch_size=10, max_retries=15, timeout=2.0) as client:
        client.transport.retry.base_delay = 0.01
        client.transport.retry.max_delay = 0.05
        outcome = client.records.create_many("people", [person(i) for i in range(60)], upsert=True)
        sandbox.set_faults(seed=0)
        stored = list(client.records.iter_records("people"))
    assert outcome.aborted is None and not outcome.failures
    assert len(stored) == 60
    assert len({r["emails"]["primaryEmail"] for r in stored}) == 60
    successes = [e for e in batch_posts(sandbox) if 200 <= (e.status or 0) < 300]
    assert len(successes) == 6


def test_client_budget_keeps_a_long_run_clear_of_429(sandbox: Any) -> None:
    # Twenty's limiter scaled up for speed: 120 tokens, refilled at 120 a minute. A client with the
    # same budget (bursting to 90% of it) sends 118 requests, about 5 s of waiting, and never sees a 429.
    sandbox.set_rate_limit(120, window_ms=60_000)
    with client_for(sandbox, requests_per_minute=120, max_retries=0) as client:
        for _ in range(118):
            client.records.find_page("people", limit=1)
        assert client.transport.stats.rate_limited == 0
    assert sandbox.request_count() == 118
    # 10 requests past the client's burst of 108, at 2 a second: the run cannot take less than ~5 s
    # (a lower bound, so a slow machine cannot make it fail; only a budget that does not wait can).
    log = sandbox.request_log
    assert log[-1].at - log[0].at >= 4.5
    assert all(e.status == 200 for e in sandbox.request_log)


def test_without_the_budget_the_same_run_is_throttled(sandbox: Any) -> None:
    # The control for the test above: the server's limit is real, so the budget is what avoids it.
    sandbox.set_rate_limit(120, window_ms=60_000)
    with client_for(sandbox, requests_per_minute=100_000, max_retries=0) as client:
        with pytest.raises(TwentyRateLimited):
            for _ in range(130):
                client.records.find_page("people", limit=1)


def with_contact_id(i: int) -> dict[str, Any]:
    return {**person(i), "contactId": f"C{i}"}


def test_batch_results_are_matched_by_external_key(sandbox: Any) -> None:
    from truth_forge.core.crm_schema import CrmSchema, setup_schema

    with client_for(sandbox) as client:
        setup_schema(client, CrmSchema.load())
        client.records.create_many("people", [with_contact_id(i) for i in range(0, 20, 2)], upsert=True)
        mixed = [with_contact_id(i) for i in range(20)]  # half updates, half inserts
        outcome = client.records.create_many("people", mixed, upsert=True, match_key="contactId")
    assert not outcome.failures
    assert [r["contactId"] for r in outcome.results] == [f"C{i}" for i in range(20)]


def test_inputs_sharing_a_key_send_only_the_last(sandbox: Any) -> None:
    from truth_forge.core.crm_schema import CrmSchema, setup_schema

    with client_for(sandbox) as client:
        setup_schema(client, CrmSchema.load())
        first, second = with_contact_id(1), {**with_contact_id(2), "contactId": "C1"}
        outcome = client.records.create_many("people", [first, second], upsert=True, match_key="contactId")
        stored = list(client.records.iter_records("people"))
    assert [f.index for f in outcome.failures] == [0]
    assert "only the last is sent" in str(outcome.failures[0].error)
    assert [r["emails"]["primaryEmail"] for r in stored] == ["person2@example.com"]


def test_a_request_wide_rejection_stops_the_write_early(sandbox: Any) -> None:
    # contactId does not exist before setup: every record fails alike. Bisecting all 120 would cost
    # about 240 requests; the write must stop after a handful and say it is a setup problem.
    with client_for(sandbox) as client:
        outcome = client.records.create_many("people", [with_contact_id(i) for i in range(120)], upsert=True)
    assert isinstance(outcome.aborted, TwentyConfigError)
    assert "truth-forge setup" in str(outcome.aborted) and "contactId" in str(outcome.aborted)
    assert outcome.requests <= 15
    assert sandbox.request_count(method="POST") == outcome.requests


def test_a_request_body_is_freed_when_its_answer_is_read_not_left_to_the_collector(sandbox: Any) -> None:
    """httpx's streamed response and its stream refer to each other; the transport cuts that cycle, so
    an encoded body is freed as soon as its answer is read, also while young collections are rare
    (a push makes them rare, sync/push.py). Counted: what httpx allocated (the encoded bodies), not
    what the in-process sandbox stored."""
    import gc
    import tracemalloc

    def held_by_httpx() -> int:
        snapshot = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(True, "*/httpx/*")])
        return sum(stat.size for stat in snapshot.statistics("filename"))

    with client_for(sandbox) as client:
        client.records.create("people", person(0))  # connections and caches made before measuring
        gc.collect()
        gc.disable()
        tracemalloc.start()
        try:
            before = held_by_httpx()
            for i in range(1, 11):
                client.records.create("people", {**person(i), "name": {"firstName": "x" * 200_000, "lastName": f"L{i}"}})
            held = held_by_httpx() - before
        finally:
            tracemalloc.stop()
            gc.enable()
    assert held < 200_000, f"{held:,} bytes that httpx allocated still held after ten 200 KB writes"
