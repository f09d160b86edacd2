"""Retry, backoff and budget rules of the transport, with mocked HTTP (the one place mocks are allowed).

Everything that touches a real server is tested against the sandbox instead (test_client_sandbox.py).
"""

from __future__ import annotations

import random

import httpx
import pytest
import respx

from truth_forge.twenty.errors import (
    NextStep,
    TwentyAuthError,
    TwentyConfigError,
    TwentyNotFound,
    TwentyRateLimited,
    TwentyRecordRejected,
    TwentySchemaMismatch,
    TwentyTransientError,
)
from truth_forge.twenty.transport import RequestBudget, RetryPolicy, Transport

BASE = "https://crm.example.test"
KEY = "secret-key-value-123"
UUID = "0b0f8a2e-6d3c-4c1e-9a57-1f2d3c4b5a69"


class FakeClock:
    """Time that only moves when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make_transport(clock: FakeClock, *, max_retries: int = 4, per_minute: float = 6000) -> Transport:
    return Transport(
        BASE,
        KEY,
        requests_per_minute=per_minute,
        retry=RetryPolicy(max_retries=max_retries, rng=random.Random(7)),
        clock=clock,
        sleep=clock.sleep,
    )


def ok(payload: object = None) -> httpx.Response:
    return httpx.Response(200, json=payload if payload is not None else {"data": {"people": []}})


def test_retry_after_header_is_honoured(clock: FakeClock) -> None:
    with respx.mock(base_url=BASE, assert_all_called=True) as mock:
        route = mock.get("/rest/people").mock(
            side_effect=[httpx.Response(429, headers={"Retry-After": "7"}, json={"messages": ["slow down"]}), ok()]
        )
        body = make_transport(clock).request("GET", "/rest/people")
    assert body == {"data": {"people": []}}
    assert route.call_count == 2
    assert 7.0 <= clock.sleeps[-1] <= 7.0 + 0.5  # what the server asked, plus a little jitter


def test_ratelimit_reset_header_is_honoured(clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("truth_forge.twenty.transport.time.time", lambda: 5000.0)
    with respx.mock(base_url=BASE) as mock:
        mock.get("/rest/people").mock(
            side_effect=[httpx.Response(429, headers={"X-RateLimit-Reset": "5012"}), ok()]
        )
        make_transport(clock).request("GET", "/rest/people")
    assert 12.0 <= clock.sleeps[-1] <= 12.5


def test_legacy_429_without_headers_backs_off_and_drains_budget(clock: FakeClock) -> None:
    transport = make_transport(clock, per_minute=100)
    with respx.mock(base_url=BASE) as mock:
        mock.get("/rest/people").mock(
            side_effect=[httpx.Response(429, json={"messages": ["Limit reached (100 tokens per 60000 ms)"]}), ok()]
        )
        transport.request("GET", "/rest/people")
    assert transport.stats.rate_limited == 1
    # After a 429 the bucket is empty: the retry waited for a refilled token (0.6 s at 100/min) at least.
    assert sum(clock.sleeps) >= 0.6


def test_a_headerless_429_is_resent_after_one_token_then_backs_off_more(clock: FakeClock) -> None:
    transport = make_transport(clock, per_minute=200)  # a token every 0.3 s
    with respx.mock(base_url=BASE) as mock:
        refused = httpx.Response(429, json={"messages": ["Limit reached (200 tokens per 60000 ms)"]})
        mock.get("/rest/people").mock(side_effect=[refused, refused, ok()])
        transport.request("GET", "/rest/people")
    assert transport.stats.rate_limited == 2
    # Answered at once (this clock stands still on the wire): the first resend waits one token (and
    # the margin) from the refused request's departure, nothing more; the second waits longer (the
    # limit may be lower than we were told).
    first_resend = sum(clock.sleeps[:-1])
    assert first_resend == pytest.approx(0.3 * 1.1) and clock.sleeps[-1] >= 0.6
    assert transport.budget.capacity < 180  # the burst learned: no more than was spent


def test_a_headerless_429_counts_the_refusals_round_trip_as_earned(clock: FakeClock) -> None:
    """The server counted the refused request somewhere on its round trip and counts the resend at
    the same point of its own: the tokens it earned while the refusal travelled back are there."""
    transport = make_transport(clock, per_minute=200)  # a token every 0.3 s
    refused = httpx.Response(429, json={"messages": ["Limit reached (200 tokens per 60000 ms)"]})
    answers = iter([refused, ok()])

    def slow_server(request: httpx.Request) -> httpx.Response:
        clock.now += 0.6  # a 600 ms round trip: two tokens
        return next(answers)

    with respx.mock(base_url=BASE) as mock:
        route = mock.get("/rest/people").mock(side_effect=slow_server)
        transport.request("GET", "/rest/people")
    assert route.call_count == 2
    assert sum(clock.sleeps) == 0  # resent at once, not a round trip and a token later
    # The resend took one of them, and its own round trip earned two more.
    assert transport.budget.tokens_left() == pytest.approx(2 - 0.1 - 1 + 2)


def test_a_429_that_says_the_servers_count_is_believed_over_the_round_trip(clock: FakeClock) -> None:
    """Rate limits v2 say what is left (0) and when to come back: nothing is credited for the time
    the refusal took to come back; the bucket refills from empty while the resend waits."""
    transport = make_transport(clock, per_minute=200)
    said = httpx.Response(429, headers={"Retry-After": "1", "X-RateLimit-Limit": "200", "X-RateLimit-Remaining": "0"},
                          json={"statusCode": 429, "error": "RATE_LIMITED"})
    answers = iter([said, ok()])

    def slow_server(request: httpx.Request) -> httpx.Response:
        clock.now += 0.6
        return next(answers)

    with respx.mock(base_url=BASE) as mock:
        mock.get("/rest/people").mock(side_effect=slow_server)
        transport.request("GET", "/rest/people")
    waited = sum(clock.sleeps)
    assert waited >= 1.0
    # Empty at the refusal, refilled while waiting and during the resend's round trip, less the resend.
    assert transport.budget.tokens_left() == pytest.approx((waited + 0.6) * 200 / 60 - 1)


def test_gives_up_after_max_retries_with_typed_error(clock: FakeClock) -> None:
    with respx.mock(base_url=BASE) as mock:
        route = mock.get("/rest/people").mock(return_value=httpx.Response(429, json={"messages": ["nope"]}))
        with pytest.raises(TwentyRateLimited) as info:
            make_transport(clock, max_retries=3).request("GET", "/rest/people")
    assert route.call_count == 4
    assert info.value.next_step is NextStep.RETRY
    assert info.value.messages == ["nope"]


def test_backoff_grows_exponentially_with_bounded_jitter() -> None:
    policy = RetryPolicy(base_delay=1.0, max_delay=30.0, rng=random.Random(1))
    for attempt in range(8):
        step = min(30.0, 2.0**attempt)
        for _ in range(20):
            assert step * 0.5 <= policy.backoff(attempt) <= step


def test_5xx_on_get_is_retried(clock: FakeClock) -> None:
    with respx.mock(base_url=BASE) as mock:
        route = mock.get("/rest/people").mock(side_effect=[httpx.Response(502), httpx.Response(500), ok()])
        make_transport(clock).request("GET", "/rest/people")
    assert route.call_count == 3
    assert len(clock.sleeps) == 2 and clock.sleeps[1] > clock.sleeps[0] * 0.9


def test_plain_create_is_not_resent_after_an_ambiguous_failure(clock: FakeClock) -> None:
    with respx.mock(base_url=BASE) as mock:
        route = mock.post("/rest/batch/people").mock(side_effect=httpx.ReadError("connection reset"))
        with pytest.raises(TwentyTransientError) as info:
            make_transport(clock).request("POST", "/rest/batch/people", json_body=[{}])
    assert route.call_count == 1
    assert info.value.maybe_applied is True


def test_plain_create_is_not_resent_after_a_500(clock: FakeClock) -> None:
    with respx.mock(base_url=BASE) as mock:
        route = mock.post("/rest/people").mock(return_value=httpx.Response(500))
        with pytest.raises(TwentyTransientError) as info:
            make_transport(clock).request("POST", "/rest/people", json_body={})
    assert route.call_count == 1
    assert info.value.maybe_applied is True


def test_upsert_is_resent_after_an_ambiguous_failure(clock: FakeClock) -> None:
    with respx.mock(base_url=BASE) as mock:
        route = mock.post("/rest/batch/people").mock(
            side_effect=[httpx.ReadError("reset"), httpx.Response(201, json={"data": {"createPeople": []}})]
        )
        make_transport(clock).request("POST", "/rest/batch/people", json_body=[], idempotent=True)
    assert route.call_count == 2


def test_connect_errors_are_resent_even_for_creates(clock: FakeClock) -> None:
    with respx.mock(base_url=BASE) as mock:
        route = mock.post("/rest/people").mock(
            side_effect=[httpx.ConnectError("refused"), httpx.Response(201, json={"data": {"createPerson": {}}})]
        )
        make_transport(clock).request("POST", "/rest/people", json_body={})
    assert route.call_count == 2


def test_400_is_not_retried_and_carries_twentys_message(clock: FakeClock) -> None:
    body = {"statusCode": 400, "error": "BadRequestException",
            "messages": ['Invalid value "Z" for field "categoryCode"']}
    with respx.mock(base_url=BASE) as mock:
        route = mock.post("/rest/people").mock(return_value=httpx.Response(400, json=body))
        with pytest.raises(TwentyRecordRejected) as info:
            make_transport(clock).request("POST", "/rest/people", json_body={"categoryCode": "Z"})
    assert route.call_count == 1
    assert info.value.next_step is NextStep.SKIP_RECORD
    assert 'for field "categoryCode"' in str(info.value)
    assert info.value.error_code == "BadRequestException"


def test_a_400_naming_a_missing_field_is_a_setup_problem_for_every_record(clock: FakeClock) -> None:
    body = {"statusCode": 400, "error": "BadRequestException",
            "messages": ['Object person doesn\'t have any "contactId" field.']}
    with respx.mock(base_url=BASE) as mock:
        route = mock.post("/rest/batch/people").mock(return_value=httpx.Response(400, json=body))
        with pytest.raises(TwentySchemaMismatch) as info:
            make_transport(clock).request("POST", "/rest/batch/people", json_body=[{"contactId": "1"}])
    assert route.call_count == 1
    assert info.value.next_step is NextStep.FIX_CONFIG and "truth-forge setup" in str(info.value)


@pytest.mark.parametrize("message", [
    "deadlock detected",
    "canceling statement due to statement timeout",
    "could not serialize access due to concurrent update",
])
def test_a_database_error_answered_400_is_retried_even_for_a_create(clock: FakeClock, message: str) -> None:
    # Twenty maps every QueryFailedError to 400; these ones say nothing about the record, and the
    # failed statement was rolled back, so sending it again is safe even for a plain create.
    body = {"statusCode": 400, "error": "QueryFailedError", "messages": [message]}
    with respx.mock(base_url=BASE) as mock:
        route = mock.post("/rest/batch/people").mock(side_effect=[
            httpx.Response(400, json=body), httpx.Response(201, json={"data": {"createPeople": [{"id": "a"}]}})])
        answer = make_transport(clock).request("POST", "/rest/batch/people", json_body=[{}])
    assert route.call_count == 2 and answer["data"]["createPeople"] == [{"id": "a"}]


def test_a_database_error_that_outlasts_the_retries_is_transient_not_a_bad_record(clock: FakeClock) -> None:
    body = {"statusCode": 400, "error": "QueryFailedError", "messages": ["deadlock detected"]}
    with respx.mock(base_url=BASE) as mock:
        route = mock.post("/rest/batch/people").mock(return_value=httpx.Response(400, json=body))
        with pytest.raises(TwentyTransientError) as info:
            make_transport(clock, max_retries=2).request("POST", "/rest/batch/people", json_body=[{}])
    assert route.call_count == 3 and info.value.next_step is NextStep.RETRY


def test_record_not_found_answered_400_is_not_found(clock: FakeClock) -> None:
    body = {"statusCode": 400, "error": "BadRequestException", "messages": ["Record not found"]}
    with respx.mock(base_url=BASE) as mock:
        mock.delete(f"/rest/people/{UUID}").mock(return_value=httpx.Response(400, json=body))
        with pytest.raises(TwentyNotFound):
            make_transport(clock).request("DELETE", f"/rest/people/{UUID}")


def test_auth_error_never_shows_the_key(clock: FakeClock) -> None:
    echo = {"statusCode": 401, "error": "UNAUTHENTICATED", "messages": [f"Token invalid: {KEY}"]}
    with respx.mock(base_url=BASE) as mock:
        mock.get("/rest/people").mock(return_value=httpx.Response(401, json=echo))
        with pytest.raises(TwentyAuthError) as info:
            make_transport(clock).request("GET", "/rest/people")
    assert info.value.next_step is NextStep.FIX_CONFIG
    for text in (str(info.value), repr(info.value.to_dict()), info.value.body_excerpt or ""):
        assert KEY not in text
    assert "***" in str(info.value)


def test_metadata_validation_errors_are_surfaced(clock: FakeClock) -> None:
    body = {"statusCode": 400, "error": "METADATA_VALIDATION_ERROR", "message": "Validation failed",
            "errors": {"fieldMetadata": [{"type": "create", "errors": [
                {"code": "NOT_AVAILABLE", "message": 'Name "contactId" is not available'}]}]}}
    with respx.mock(base_url=BASE) as mock:
        mock.post("/rest/metadata/fields").mock(return_value=httpx.Response(400, json=body))
        with pytest.raises(TwentyRecordRejected) as info:
            make_transport(clock).request("POST", "/rest/metadata/fields", json_body={})
    assert "NOT_AVAILABLE" in str(info.value) and "contactId" in str(info.value)


def test_budget_never_exceeds_its_rate(clock: FakeClock) -> None:
    budget = RequestBudget(per_minute=60, burst=5, clock=clock, sleep=clock.sleep)
    sent_at = []
    for _ in range(65):
        budget.acquire()
        sent_at.append(clock.now)
    # Over any window of w seconds at most burst + w * rate requests went out.
    for i, start in enumerate(sent_at):
        for j in range(i, len(sent_at)):
            window = sent_at[j] - start
            assert j - i + 1 <= 5 + window * 1.0 + 1e-9
    assert sent_at[-1] - sent_at[0] >= 59.9  # 65 requests at 1/s after a burst of 5


def test_transport_repr_hides_key() -> None:
    transport = Transport(BASE, KEY)
    assert KEY not in repr(transport)
    transport.close()


def test_a_redirect_never_shows_a_key_that_rides_in_its_location(clock: FakeClock) -> None:
    location = f"https://login.example.test/auth?token={KEY}&next=/rest"
    with respx.mock(base_url=BASE) as mock:
        mock.get("/rest/metadata/objects").mock(return_value=httpx.Response(302, headers={"Location": location}))
        with pytest.raises(TwentyConfigError) as info:
            make_transport(clock).request("GET", "/rest/metadata/objects")
    assert KEY not in str(info.value) and KEY not in repr(info.value.to_dict())
    assert "https://login.example.test/auth" in str(info.value)


def test_a_redirect_is_a_configuration_error_not_a_rejected_record(clock: FakeClock) -> None:
    with respx.mock(base_url=BASE) as mock:
        route = mock.post("/rest/batch/people").mock(
            return_value=httpx.Response(301, headers={"Location": "https://crm.example.test/new/rest/batch/people"}))
        with pytest.raises(TwentyConfigError, match="redirects to https://crm.example.test/new"):
            make_transport(clock).request("POST", "/rest/batch/people", json_body=[])
    assert route.call_count == 1


def test_budget_refuses_an_empty_bucket() -> None:
    with pytest.raises(ValueError, match="burst"):
        RequestBudget(per_minute=100, burst=0)
