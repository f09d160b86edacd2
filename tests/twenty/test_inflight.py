"""The in-flight gate and the budget's shared pause and server count: pure rules, no HTTP."""

from __future__ import annotations

import threading

import pytest

from tests.twenty.test_transport_retry import FakeClock
from truth_forge.twenty.inflight import InFlightGate, RateLimitHeaders
from truth_forge.twenty.transport import RequestBudget


def test_a_429_halves_the_window_and_answered_requests_widen_it_back_to_the_maximum() -> None:
    gate = InFlightGate(8)
    gate.narrow()
    gate.narrow()
    assert gate.limit == 2
    for _ in range(2):
        gate.widen()
    assert gate.limit == 3  # one window's worth of answers earns one slot
    for _ in range(100):
        gate.widen()
    assert gate.limit == 8
    for _ in range(10):
        gate.narrow()
    assert gate.limit == 1


def test_the_gate_holds_back_the_request_past_its_width() -> None:
    gate = InFlightGate(2)
    inside, release, third_in = threading.Semaphore(0), threading.Event(), threading.Event()

    def hold() -> None:
        with gate:
            inside.release()
            release.wait(5)

    holders = [threading.Thread(target=hold) for _ in range(2)]
    for t in holders:
        t.start()
    assert inside.acquire(timeout=5) and inside.acquire(timeout=5)

    def third() -> None:
        with gate:
            third_in.set()

    late = threading.Thread(target=third)
    late.start()
    assert not third_in.wait(0.2), "a third request went on the wire past a gate of two"
    release.set()
    assert third_in.wait(5)
    for t in (*holders, late):
        t.join(5)
    assert gate.peak == 2 and gate.active == 0


def test_a_hold_pauses_every_acquire_until_it_is_over() -> None:
    clock = FakeClock()
    budget = RequestBudget(6000, 10, clock=clock, sleep=clock.sleep)
    budget.hold(5.0)
    budget.acquire()
    assert sum(clock.sleeps) >= 5.0
    before = len(clock.sleeps)
    budget.acquire()  # the pause is over and tokens are there: no more waiting
    assert len(clock.sleeps) == before


def test_the_servers_remaining_count_caps_our_tokens_and_its_limit_caps_the_bucket() -> None:
    clock = FakeClock()
    budget = RequestBudget(60, 50, clock=clock, sleep=clock.sleep)
    budget.observe(server_limit=20, server_remaining=3, in_flight_elsewhere=2)
    assert budget.capacity == 20
    budget.acquire()  # the one token the server has that no request on the wire may be spending
    assert clock.sleeps == []
    budget.acquire()
    assert clock.sleeps == [pytest.approx(1.0)]  # one token a second at 60 a minute


@pytest.mark.parametrize(("headers", "expected"), [
    ({}, None),
    ({"x-ratelimit-limit": "100", "x-ratelimit-remaining": "7"}, RateLimitHeaders(100, 7)),
    ({"x-ratelimit-remaining": "soon"}, None),
])
def test_rate_limit_headers_are_read_only_when_sent(headers: dict[str, str], expected: object) -> None:
    assert RateLimitHeaders.read(headers) == expected


def test_a_burst_refused_together_halves_the_window_once() -> None:
    gate = InFlightGate(8)
    entered = [gate.narrowed for _ in range(5)]  # five requests on the wire at once, all refused
    for since in entered:
        gate.narrow(since=since)
    assert gate.limit == 4
    gate.narrow(since=gate.narrowed)  # a request sent after the halving, refused too: a new signal
    assert gate.limit == 2


def test_a_headerless_429_shrinks_the_bucket_to_what_was_spent_and_paces_from_empty() -> None:
    clock = FakeClock()
    budget = RequestBudget(600, clock=clock, sleep=clock.sleep)  # 540 tokens: told the limit only
    for _ in range(30):
        budget.acquire()
    took = budget.drains
    budget.drain(learn_burst=True, in_flight_elsewhere=6, since=took)  # the server's bucket was smaller
    assert budget.capacity == 24 and budget.tokens_left() == 0
    for _ in range(5):  # the rest of the burst, refused too: the burst was learned, nothing more to learn
        budget.drain(learn_burst=True, in_flight_elsewhere=5, since=took)
    assert budget.capacity == 24
    budget.drain(learn_burst=True, since=budget.drains)  # pacing from empty, refused again: no smaller burst
    assert budget.capacity == 24
    clock.now += 60  # a quiet minute: ours refills to what the server's held, not to 540
    assert budget.tokens_left() == 24
    budget.drain(learn_burst=True)  # refused with ours full: another client spent the server's
    assert budget.capacity == 24 and budget.tokens_left() == 0


def test_a_429_that_says_the_servers_count_leaves_the_burst_to_the_headers() -> None:
    clock = FakeClock()
    budget = RequestBudget(600, clock=clock, sleep=clock.sleep)
    for _ in range(30):
        budget.acquire()
    budget.drain()
    assert budget.capacity == 540 and budget.tokens_left() == 0


def test_a_refusal_restarts_the_bucket_from_the_refused_requests_departure() -> None:
    """Two requests sent together are refused, answered 0.6 s later: the server earned two tokens
    (at 200 a minute) between counting them and counting their resends, less the requests sent
    after them; a refusal of an earlier request, answered last, says less and changes nothing."""
    clock = FakeClock()
    budget = RequestBudget(200, 20, clock=clock, sleep=clock.sleep)
    tickets = [budget.acquire() for _ in range(20)]
    assert tickets == list(range(1, 21))
    sent_at = clock.now
    clock.now += 0.6
    budget.drain(learn_burst=True, since=0, ticket=19, sent_at=sent_at)
    assert budget.tokens_left() == pytest.approx(2 - 0.1 - 1)  # request 20 left after 19: counted before its resend
    budget.drain(learn_burst=True, since=0, ticket=20, sent_at=sent_at)
    assert budget.tokens_left() == pytest.approx(2 - 0.1)
    budget.drain(learn_burst=True, since=0, ticket=18, sent_at=sent_at)  # an earlier refusal, answered last
    assert budget.tokens_left() == pytest.approx(2 - 0.1)
    budget.drain(learn_burst=True, since=0)  # no departure known: from empty, now
    assert budget.tokens_left() == 0


def test_a_thread_asleep_on_an_empty_bucket_sees_tokens_a_refusal_gives_back() -> None:
    """A thread waiting for a token wakes at least once a token's time to look again: another
    request's refusal may have given the bucket tokens back meanwhile."""
    clock = FakeClock()
    budget = RequestBudget(60, 5, clock=clock, sleep=clock.sleep)  # a token a second
    for _ in range(5):
        budget.acquire()
    clock.now += 0.5
    budget.drain(ticket=1, sent_at=1000.0)  # the first request refused: four left after it
    assert budget.tokens_left() == 0

    def sleep(seconds: float) -> None:
        clock.sleep(seconds)
        if len(clock.sleeps) == 1:  # meanwhile the last request's refusal is answered
            budget.drain(ticket=5, sent_at=1000.0)

    budget._sleep = sleep
    budget.acquire()
    assert clock.sleeps == [pytest.approx(1.0)]  # not the 4.6 s the first refusal alone asked for
