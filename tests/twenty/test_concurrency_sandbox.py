"""Several requests on the wire against the sandbox over loopback HTTP: counted in its request log,
never timed."""

from __future__ import annotations

import threading
import time
from typing import Any

from tests.twenty.test_client_sandbox import batch_posts, client_for, person
from truth_forge.twenty.errors import TwentySchemaMismatch
from truth_forge.twenty.inflight import DEFAULT_MAX_IN_FLIGHT


def most_at_once(entries: list[Any]) -> int:
    """The most requests the sandbox was answering at one time (each from its arrival to its answer)."""
    edges = sorted([(e.at - e.duration_ms / 1000, 1) for e in entries] + [(e.at, -1) for e in entries])
    now = peak = 0
    for _, step in edges:
        now += step
        peak = max(peak, now)
    return peak


def test_batches_overlap_up_to_the_maximum_and_every_record_lands_once_in_input_order(sandbox: Any) -> None:
    sandbox.set_faults(latency_ms=(20, 60), seed=3)
    seen: list[tuple[int, int]] = []
    with client_for(sandbox, batch_size=10, max_in_flight=3) as client:
        outcome = client.records.create_many(
            "people", [person(i) for i in range(200)],
            on_write=lambda landed: seen.extend((threading.get_ident(), i) for i, _ in landed))
        stored = list(client.records.iter_records("people"))
    assert outcome.aborted is None and not outcome.failures and len(outcome.succeeded) == 200
    assert len(stored) == 200 and len({r["emails"]["primaryEmail"] for r in stored}) == 200
    # Bookkeeping on the caller's thread, one request at a time, in input order, each record once.
    assert {thread for thread, _ in seen} == {threading.get_ident()}
    assert [i for _, i in seen] == list(range(200))
    posts = batch_posts(sandbox)
    assert len(posts) == 20 and all(e.status == 201 for e in posts)
    assert 2 <= most_at_once(posts) <= 3


def test_writes_to_one_record_never_overlap_so_the_last_one_wins(sandbox: Any) -> None:
    sandbox.set_faults(latency_ms=(0, 80), seed=9)
    with client_for(sandbox, batch_size=4, max_in_flight=6) as client:
        ids = [r["id"] for r in client.records.create_many("people", [person(i) for i in range(12)]).succeeded]
        with client.records.stream("people", upsert=True, match_key="id") as stream:
            for round_ in range(5):
                # A chunk naming an id still on the wire waits for it; a repeat inside one add is cut apart.
                stream.add([{"id": i, "jobTitle": f"round {round_}"} for i in ids])
                stream.add([{"id": ids[0], "jobTitle": f"round {round_} again"}])
            stream.finish()
        titles = {r["id"]: r["jobTitle"] for r in client.records.iter_records("people")}
    assert titles[ids[0]] == "round 4 again"
    assert all(titles[i] == "round 4" for i in ids[1:])


def test_a_hard_failure_behind_writes_on_the_wire_says_exactly_which_inputs_landed(sandbox: Any) -> None:
    sandbox.set_faults(latency_ms=(10, 40), seed=4)
    records = [person(i) for i in range(100)]
    records[45] = {**records[45], "noSuchField": 1}  # no record of this batch can pass: an abort, not a split
    landed: list[int] = []
    with client_for(sandbox, batch_size=10, max_in_flight=4) as client:
        outcome = client.records.create_many("people", records,
                                             on_write=lambda pairs: landed.extend(i for i, _ in pairs))
        stored = {r["emails"]["primaryEmail"] for r in client.records.iter_records("people")}
    assert isinstance(outcome.aborted, TwentySchemaMismatch) and outcome.aborted_at == 40
    assert all(outcome.results[i] is not None for i in range(40))
    assert all(outcome.results[i] is None for i in range(40, 50))
    said_landed = {records[i]["emails"]["primaryEmail"] for i, r in enumerate(outcome.results) if r is not None}
    assert said_landed == stored  # batches after the failure that were already on the wire are counted too
    assert landed == sorted(landed) and set(landed) == {i for i, r in enumerate(outcome.results) if r is not None}


def spend(sandbox_client: Any, n: int) -> None:
    for _ in range(n):
        assert sandbox_client.get("/rest/people", params={"limit": 1}).status_code == 200


def test_a_gateways_remaining_count_keeps_the_workers_inside_the_servers_bucket(
        sandbox: Any, sandbox_client: Any) -> None:
    """Twenty itself sends X-RateLimit-* only on a 429; a gateway in front of it may send them on
    every answer, and then the workers stay inside the server's bucket from the first request."""
    sandbox.set_rate_limit(600, burst=30, style="gateway")
    spend(sandbox_client, 24)  # another client of the workspace took most of the bucket
    with client_for(sandbox, batch_size=1, requests_per_minute=600, burst=30, max_in_flight=4) as client:
        outcome = client.records.create_many("people", [person(i) for i in range(40)])
        assert client.transport.stats.rate_limited == 0
    assert len(outcome.succeeded) == 40
    assert not [e for e in sandbox.request_log if e.status == 429]


def test_without_headers_the_same_start_meets_429s_and_every_worker_still_finishes_once(
        sandbox: Any, sandbox_client: Any) -> None:
    """The control of the test above: a legacy server says nothing, so our bucket overspends once."""
    sandbox.set_rate_limit(600, burst=30, style="legacy")
    spend(sandbox_client, 24)
    with client_for(sandbox, batch_size=1, requests_per_minute=600, burst=30, max_in_flight=4) as client:
        client.transport.retry.base_delay = 0.05
        outcome = client.records.create_many("people", [person(i) for i in range(40)])
        assert client.transport.stats.rate_limited >= 1
    assert len(outcome.succeeded) == 40
    assert sum(1 for e in batch_posts(sandbox) if e.status == 201) == 40


def test_a_paced_client_never_overspends_the_servers_bucket(sandbox: Any) -> None:
    sandbox.set_rate_limit(300, burst=10, style="legacy")
    sandbox.set_faults(latency_ms=30)
    with client_for(sandbox, batch_size=5, requests_per_minute=300, burst=8, max_in_flight=4) as client:
        outcome = client.records.create_many("people", [person(i) for i in range(100)])
        peak = client.transport.gate.peak
    assert len(outcome.succeeded) == 100
    posts = batch_posts(sandbox)
    assert len(posts) == 20 and not [e for e in posts if e.status == 429]
    assert 2 <= most_at_once(posts) <= peak <= 4


def test_at_600_a_minute_and_slow_answers_the_bucket_not_the_gate_sets_the_pace(sandbox: Any) -> None:
    """600 requests a minute with 1.2 s a request needs 12 on the wire (rate × round trip): the
    default concurrency must allow them, or tokens wait while every slot waits for an answer."""
    sandbox.set_faults(latency_ms=1200)
    with client_for(sandbox, batch_size=1, requests_per_minute=600, burst=20) as client:
        outcome = client.records.create_many("people", [person(i) for i in range(30)])
        widest = client.transport.max_in_flight
    assert len(outcome.succeeded) == 30
    assert DEFAULT_MAX_IN_FLIGHT < most_at_once(batch_posts(sandbox)) <= widest


def test_a_client_told_only_the_limit_learns_the_servers_smaller_burst_from_its_first_429(sandbox: Any) -> None:
    """Told 600 a minute and nothing else, the client's bucket is 540; the server's is 10. Its first
    headerless 429 makes its bucket no bigger than what it had spent, and every record lands once."""
    sandbox.set_rate_limit(600, burst=10, style="legacy")
    with client_for(sandbox, batch_size=1, requests_per_minute=600, max_in_flight=4) as client:
        outcome = client.records.create_many("people", [person(i) for i in range(40)])
        assert client.transport.stats.rate_limited >= 1
        assert client.transport.budget.capacity <= 10 + 4  # at most the server's burst and what was on the wire
    assert len(outcome.succeeded) == 40
    assert sum(1 for e in batch_posts(sandbox) if e.status == 201) == 40


def test_resends_timed_from_the_refused_requests_departure_land_once_without_a_storm(sandbox: Any) -> None:
    """Told only the limit, the client outruns the server's bucket of 6 once, with half a second of
    latency. Its refused requests are resent on what the server earned since they left (the rule is
    pinned in test_inflight.py), which never outruns the server a second time: every record lands
    once and the 429s stay within the first refused round (the burst's overflow and the requests its
    answers sent before the refusals came back)."""
    sandbox.set_rate_limit(300, burst=6, style="legacy")
    sandbox.set_faults(latency_ms=500)
    with client_for(sandbox, batch_size=1, requests_per_minute=300, max_in_flight=8) as client:
        outcome = client.records.create_many("people", [person(i) for i in range(24)])
        refused = client.transport.stats.rate_limited
    assert len(outcome.succeeded) == 24
    posts = batch_posts(sandbox)
    assert sum(1 for e in posts if e.status == 201) == 24
    assert 1 <= refused == sum(1 for e in posts if e.status == 429) <= 8


def test_finish_runs_the_callers_bookkeeping_while_answers_are_still_on_the_wire(sandbox: Any) -> None:
    """`while_waiting` runs on the caller's thread, each time the next answer is not back yet, after
    every answer already back was handed over: never once the last one was."""
    sandbox.set_faults(latency_ms=200)
    handed: list[int] = []
    waits: list[tuple[int, int]] = []  # (thread, records handed over so far)
    with client_for(sandbox, batch_size=10, max_in_flight=4) as client:
        client.transport.while_waiting = lambda: waits.append((threading.get_ident(), len(handed)))
        outcome = client.records.create_many("people", [person(i) for i in range(60)],
                                             on_write=lambda landed: handed.extend(i for i, _ in landed))
    assert len(outcome.succeeded) == 60 and handed == list(range(60))
    assert waits and {thread for thread, _ in waits} == {threading.get_ident()}
    assert all(n < 60 for _, n in waits)


def test_answers_handed_over_together_get_one_pause_and_none_is_left_unpaused_when_the_stream_waits(
        sandbox: Any) -> None:
    """`on_pause` (where the sync saves the answers it kept) runs on the caller's thread after
    answers were handed over, before the stream waits for one and before `add` or `finish` returns:
    answers back at the same moment share one pause, and no answer waits through a wait unpaused."""
    sandbox.set_faults(latency_ms=150)
    events: list[tuple[str, int]] = []
    threads: set[int] = set()

    def on_write(landed: Any) -> None:
        threads.add(threading.get_ident())
        events.append(("write", len(landed)))

    def on_pause() -> None:
        threads.add(threading.get_ident())
        events.append(("pause", 0))

    with client_for(sandbox, batch_size=10, max_in_flight=4) as client:
        client.transport.while_waiting = lambda: events.append(("wait", 0))
        with client.records.stream("people", upsert=False, match_key=None, on_write=on_write,
                                   on_pause=on_pause) as stream:
            stream.add([person(i) for i in range(40)])  # four requests on the wire, none back yet
            assert events == []
            deadline = time.monotonic() + 10
            while len(batch_posts(sandbox)) < 4 and time.monotonic() < deadline:
                time.sleep(0.02)
            time.sleep(0.5)  # their answers are read by the workers
            stream.add([])  # hands over the four answers already back: one pause for them
            assert events == [("write", 10)] * 4 + [("pause", 0)]
            events.clear()
            stream.add([person(i) for i in range(40, 80)])
            stream.finish()
    assert threads == {threading.get_ident()}
    assert sum(n for kind, n in events if kind == "write") == 40
    assert events[-1] == ("pause", 0)  # nothing left unpaused when finish returned
    for at, (kind, _) in enumerate(events):
        if kind == "wait":  # the answers handed over before a wait were paused first
            before = [k for k, _ in events[:at] if k != "wait"]
            assert not before or before[-1] == "pause"
    assert ("wait", 0) in events  # finish had to wait: the answers were 150 ms away
