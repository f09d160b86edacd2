"""A writer stuck on a Twenty that drips its answers: `/readyz` says so, and SIGTERM does not wait on it.

`truth-forge serve` runs as a real process against the sandbox; every Twenty answer drips a byte at
a time (the sandbox's drip fault), the request deadline is one second, so the scheduled sync's
requests keep failing and being retried for a long while. Readiness must turn 503 ("stalled") while
that goes on, and SIGTERM must end the process with the sync's run closed as aborted and the lease
released, without waiting for the retries to run out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.serve.conftest import ServeProcess, serve_env, wait_until
from truth_forge.twenty import TwentyClient
from truth_forge.warehouse import open_warehouse


def test_a_writer_stalled_on_dripping_answers_is_not_ready_and_sigterm_does_not_wait_for_it(
        sandbox: Any, crm: TwentyClient, tmp_path: Path) -> None:
    url = f"duckdb:///{tmp_path / 'w.duckdb'}"
    with open_warehouse(url, create=True) as wh:
        wh.ensure_tables()
    env = serve_env(sandbox, url, tmp_path, TRUTH_FORGE_TWENTY_REQUEST_DEADLINE_SECONDS="1",
                    TRUTH_FORGE_TWENTY_MAX_RETRIES="20", TRUTH_FORGE_TWENTY_TIMEOUT_SECONDS="5")
    sandbox.set_faults(drip_rate=1.0, drip_interval_ms=200.0)
    serve = ServeProcess(env, tmp_path)  # syncs on start: its first request drips
    try:
        wait_until(lambda: serve.get("/readyz").json()["state"] == "stalled", "readiness to say stalled", 60)
        assert serve.get("/readyz").status_code == 503
        assert serve.get("/healthz").status_code == 200  # alive, only not working
    finally:
        stopped = serve.terminate()
        sandbox.clear_faults()
    assert stopped, serve.output()[-3000:]
    with open_warehouse(url) as wh:
        runs = wh.recent_runs(10)
        statuses = sorted(r["status"] for r in runs)
        errors = wh.error_lifecycles()
    assert "aborted" in statuses and "running" not in statuses, runs
    assert any("serve is stopping" in (e["error_message"] or "") for e in errors), errors
