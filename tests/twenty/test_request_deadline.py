"""A whole-request deadline, against the sandbox's drip fault over real loopback HTTP.

httpx's timeout bounds each read; a server that sends one byte at a time, each well within it,
would keep a request (and a sync) waiting for as long as it likes. These tests give the sandbox an
answer that takes tens of seconds to drip out and a deadline of one second.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from truth_forge.sandbox import SandboxServer
from truth_forge.twenty import TwentyClient, TwentyError, shapes
from truth_forge.twenty.errors import NextStep

# Each byte comes in 20 ms, far inside any read timeout; a 2 KB answer would take 40 s.
DRIP_MS = 20.0


def _people(client: TwentyClient, count: int) -> None:
    client.records.create_many("people", [shapes.person_to_twenty({"name": f"Drip Person{i:03d}"})
                                          for i in range(count)])


def test_the_drip_fault_sends_the_answer_a_byte_at_a_time(sandbox: SandboxServer,
                                                          sandbox_client: httpx.Client) -> None:
    sandbox.set_faults(drip_rate=1.0, drip_interval_ms=5.0)
    with sandbox_client.stream("GET", "/rest/people") as response:
        pieces = [piece for piece in response.iter_raw()]
    assert response.status_code == 200
    # A reader held up on a busy machine finds two or three bytes waiting in one read; the answer in a
    # few large reads (no drip) is what must fail.
    body = sum(len(p) for p in pieces)
    assert len(pieces) > 10 and len(pieces) >= body / 2 and max(len(p) for p in pieces) <= 8, \
        [len(p) for p in pieces]
    assert [e.fault for e in sandbox.request_log] == ["drip"]


def test_a_dripping_answer_is_cut_off_at_the_deadline_and_counts_as_retryable(sandbox: SandboxServer) -> None:
    with TwentyClient(sandbox.base_url, sandbox.api_key, requests_per_minute=100_000, timeout=5.0,
                      max_retries=1, deadline=1.0) as client:
        _people(client, 20)  # an answer of some kilobytes
        sandbox.set_faults(drip_rate=1.0, drip_interval_ms=DRIP_MS)
        with pytest.raises(TwentyError) as caught:
            client.transport.request("GET", "/rest/people")
    error = caught.value
    assert error.next_step is NextStep.RETRY
    assert "TRUTH_FORGE_TWENTY_REQUEST_DEADLINE_SECONDS" in str(error)
    assert client.transport.stats.retries == 1  # sent again once, as after a broken connection


def test_a_write_whose_answer_drips_is_not_resent_blindly(sandbox: SandboxServer) -> None:
    with TwentyClient(sandbox.base_url, sandbox.api_key, requests_per_minute=100_000, timeout=5.0,
                      max_retries=3, deadline=0.5) as client:
        sandbox.set_faults(drip_rate=1.0, drip_interval_ms=DRIP_MS)
        with pytest.raises(TwentyError) as caught:
            client.transport.request("POST", "/rest/people", json_body=shapes.person_to_twenty({"name": "Ada L"}))
        sandbox.clear_faults()
        assert getattr(caught.value, "maybe_applied", False)  # it was carried out; only the answer crawled
        assert client.transport.stats.retries == 0
        assert len(list(client.records.iter_records("people"))) == 1


def test_a_deadline_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    from truth_forge.core.config import Settings
    from truth_forge.twenty.client import client_options

    monkeypatch.setenv("TRUTH_FORGE_TWENTY_REQUEST_DEADLINE_SECONDS", "7.5")
    assert client_options(Settings())["deadline"] == 7.5


def test_sync_against_a_dripping_server_stops_with_one_line_naming_the_setting(
        sandbox_env: SandboxServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sandbox = sandbox_env
    env: dict[str, Any] = {
        "TRUTH_FORGE_WAREHOUSE_URL": f"duckdb:///{tmp_path / 'w.duckdb'}",
        "TRUTH_FORGE_TWENTY_TIMEOUT_SECONDS": "5", "TRUTH_FORGE_TWENTY_MAX_RETRIES": "1",
        "TRUTH_FORGE_TWENTY_REQUEST_DEADLINE_SECONDS": "1",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    import os

    cli = [sys.executable, "-m", "truth_forge.cli.main"]
    subprocess.run([*cli, "setup"], check=True, capture_output=True, env=os.environ.copy(), timeout=120)
    sandbox.set_faults(drip_rate=1.0, drip_interval_ms=200.0)  # a byte every 0.2 s: minutes per answer
    done = subprocess.run([*cli, "sync", "--create", "--log-format", "text"], capture_output=True, text=True,
                          env=os.environ.copy(), timeout=90)
    assert done.returncode == 2, done.stderr
    assert "TRUTH_FORGE_TWENTY_REQUEST_DEADLINE_SECONDS" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_stop_while_a_refused_chunk_is_split_still_hands_over_the_parts_that_landed(sandbox: SandboxServer) -> None:
    from truth_forge.core import shutdown

    people = [shapes.person_to_twenty({"name": f"Split Person{i}", "email": f"split{i}@example.com"})
              for i in range(4)]
    people[3]["emails"] = {"primaryEmail": "not an email", "additionalEmails": []}  # refused: the chunk splits
    landed: list[int] = []
    with TwentyClient(sandbox.base_url, sandbox.api_key, requests_per_minute=100_000, timeout=5.0,
                      batch_size=4, max_in_flight=1) as client:
        send = client.transport.request
        posts = []

        def stop_after_the_first_half(method: str, path: str, **kwargs: Any) -> Any:
            answer = send(method, path, **kwargs)  # raises for the whole chunk (refused)
            posts.append(path)
            shutdown.request_stop("SIGTERM received")  # the first half landed: now the process is told to stop
            return answer

        client.transport.request = stop_after_the_first_half  # type: ignore[method-assign]
        try:
            with pytest.raises(shutdown.RunStopped):
                with client.records.stream("people", upsert=False, match_key=None,
                                           on_write=lambda pairs: landed.extend(i for i, _ in pairs)) as stream:
                    stream.add(people)
                    stream.finish()
        finally:
            shutdown.reset()
            client.transport.request = send  # type: ignore[method-assign]
        stored = sorted(r["name"]["lastName"] for r in client.records.iter_records("people"))
    assert landed == [0, 1] and posts == ["/rest/batch/people"]
    assert stored == ["Person0", "Person1"]
