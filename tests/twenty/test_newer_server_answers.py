"""The client against answers newer Twenty servers give: 402 (usage quota), 409, X-Twenty-Fields-Capped.

Each must end in one clear error after one request: none of them gets better by sending the same
request again, and a capped read must never pass for a complete one.
"""

from __future__ import annotations

from typing import Any

import pytest

from truth_forge.sandbox import SandboxConfig, SandboxServer
from truth_forge.twenty import NextStep, TwentyClient
from truth_forge.twenty.errors import TwentyConflict, TwentyFieldsCapped, TwentyQuotaExhausted


def client_for(sandbox: Any) -> TwentyClient:
    return TwentyClient(sandbox.base_url, sandbox.api_key, requests_per_minute=100_000, timeout=5.0)


def test_a_spent_quota_is_one_clear_error_and_never_retried(sandbox: SandboxServer) -> None:
    sandbox.set_faults(quota_exhausted_rate=1.0)
    with client_for(sandbox) as client:
        with pytest.raises(TwentyQuotaExhausted) as caught:
            client.records.find_page("people", limit=1)
        assert client.transport.stats.requests == 1
    error = caught.value
    assert error.status == 402 and error.next_step is NextStep.FIX_CONFIG
    assert error.retry_after_s == 86_400
    assert "credit allowance is spent" in str(error) and "does not retry" in str(error)
    assert "renews in 24.0 h" in str(error)


def test_a_conflict_is_refused_once_and_the_record_skipped(sandbox: SandboxServer) -> None:
    sandbox.set_faults(conflict_rate=1.0)
    with client_for(sandbox) as client:
        with pytest.raises(TwentyConflict) as caught:
            client.records.create("people", {"name": {"firstName": "Ada"}})
        assert client.transport.stats.requests == 1
        sandbox.clear_faults()
        assert client.records.find_page("people", limit=1).records == []  # nothing was written
    assert caught.value.status == 409 and caught.value.next_step is NextStep.SKIP_RECORD


def test_a_capped_read_is_an_error_and_a_full_one_is_not() -> None:
    with SandboxServer(SandboxConfig(fields_cap=5, rate_limit_per_minute=None)) as capped, \
            client_for(capped) as client:
        client.records.create("people", {"name": {"firstName": "Ada"}})  # a write's answer: logged only
        with pytest.raises(TwentyFieldsCapped) as caught:
            client.records.find_page("people", limit=1)
        assert "X-Twenty-Fields-Capped" in str(caught.value)
        assert caught.value.next_step is NextStep.FIX_CONFIG
    with SandboxServer(SandboxConfig(rate_limit_per_minute=None)) as full, client_for(full) as client:
        client.records.create("people", {"name": {"firstName": "Ada"}})
        assert len(client.records.find_page("people", limit=1).records) == 1
