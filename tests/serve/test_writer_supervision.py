"""serve supervises its writer process: a writer that dies is replaced and applies what waited, and
a writer whose server was SIGKILLed does not live on as an orphan."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests.sandbox.util import create_person
from tests.serve.conftest import ServeHarness, ServeProcess, serve_env, wait_until
from tests.serve.test_end_to_end import contact_of
from truth_forge.realtime.supervisor import restart_pause
from truth_forge.twenty import TwentyClient
from truth_forge.warehouse import open_warehouse


def test_a_killed_writer_is_restarted_and_applies_the_events_that_waited(
        make_harness: Callable[..., ServeHarness], crm: TwentyClient, sandbox_client: httpx.Client) -> None:
    harness = make_harness(restart_backoff=1.0)
    harness.wait_ready()
    harness.register(sandbox_client)
    assert harness.app is not None
    first_writer = harness.app.writer.pid
    assert first_writer is not None

    os.kill(first_writer, signal.SIGKILL)
    wait_until(lambda: httpx.get(harness.url + "/readyz").json()["state"] == "restarting", "serve to see the death")
    ready = httpx.get(harness.url + "/readyz")
    assert ready.status_code == 503 and "killed by SIGKILL" in ready.json()["detail"]
    assert httpx.get(harness.url + "/healthz").status_code == 200  # a new writer is on its way
    grace = create_person(sandbox_client, first="Grace", email="grace@example.com")  # acknowledged meanwhile

    harness.settle()
    process = harness.status()["writer"]["process"]
    assert process["pid"] != first_writer and process["restarts"] == 1
    assert "killed by SIGKILL" in process["last_exit"]
    assert "truth_forge_writer_restarts_total 1" in httpx.get(harness.url + "/metrics").text.splitlines()
    with harness.paused() as wh:
        contact = contact_of(wh, grace["id"])
        assert contact is not None and contact["primary_email"] == "grace@example.com"
        writer_errors = [e for e in wh.error_lifecycles() if e["operation"] == "writer"]
        assert len(writer_errors) == 1 and "killed by SIGKILL" in writer_errors[0]["error_message"]


def _children(pid: int) -> list[int]:
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _gone(pid: int) -> bool:
    """Exited (a zombie nobody reaped yet counts: it runs nothing and holds nothing)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_a_sigkilled_servers_writer_releases_the_lease_and_exits(
        sandbox: Any, crm: TwentyClient, tmp_path: Path) -> None:
    url = f"duckdb:///{tmp_path / 'w.duckdb'}"
    server = ServeProcess(serve_env(sandbox, url, tmp_path), tmp_path, "--no-sync-on-start")
    try:
        wait_until(lambda: server.get("/readyz").status_code == 200, "serve to hold the lease")
        writer = server.get("/status").json()["writer"]["process"]["pid"]
        children = _children(server.proc.pid)  # the writer and multiprocessing's resource tracker
        assert writer in children

        os.kill(server.proc.pid, signal.SIGKILL)  # the server alone: its writer is not signalled
        server.proc.wait(10)
        wait_until(lambda: all(_gone(child) for child in children), "serve's child processes to exit", timeout=20)
    finally:
        try:
            os.killpg(server.proc.pid, signal.SIGKILL)  # whatever is left of the group, if the test failed
        except ProcessLookupError:
            pass  # nothing left: the expected case
    with open_warehouse(url) as wh:
        lease = wh.read_lease("writer")
        assert lease is not None and lease["owner"] is None  # released on the way out, not left to expire


def test_the_restart_pause_doubles_with_each_quick_failure_up_to_its_limit() -> None:
    assert [restart_pause(n, 1.0, 60.0) for n in range(1, 9)] == [1, 2, 4, 8, 16, 32, 60, 60]
    assert restart_pause(10_000, 1.0, 60.0) == 60  # no overflow however long it keeps failing
