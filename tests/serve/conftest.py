"""Fixtures of the serve tests: `truth-forge serve` in-process on 127.0.0.1, fed by the sandbox.

`ServeHarness` starts the real Starlette app under uvicorn (lifespan on, so the writer thread
starts and drains as in production) with a DuckDB warehouse file and an inbox file in tmp_path,
and registers a webhook in the sandbox that points at it with a known secret.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from truth_forge.core.crm_schema import CrmSchema, setup_schema
from truth_forge.core.listen import bind_tcp
from truth_forge.realtime.inbox import Inbox
from truth_forge.realtime.server import WebhookApp, build_server, uvicorn_server
from truth_forge.realtime.webhooks import OPERATIONS
from truth_forge.realtime.writer import ServeOptions, WriterSpec
from truth_forge.twenty import TwentyClient
from truth_forge.warehouse import open_warehouse

SCHEMA = CrmSchema.load()
SECRET = "a" * 64


CLIENT_OPTIONS = {"requests_per_minute": 100_000, "timeout": 5, "max_retries": 1}


def twenty_client(base_url: str, api_key: str) -> TwentyClient:
    return TwentyClient(base_url, api_key, **CLIENT_OPTIONS)  # type: ignore[arg-type]


@pytest.fixture
def crm(sandbox: Any) -> Iterator[TwentyClient]:
    """Our Twenty client on the sandbox, with truth-forge's custom fields set up."""
    with twenty_client(sandbox.base_url, sandbox.api_key) as client:
        setup_schema(client, SCHEMA)
        yield client


@dataclass
class ServeHarness:
    sandbox: Any
    warehouse_url: str
    inbox_path: Path
    options: ServeOptions
    app: WebhookApp | None = None
    _server: Any = None
    _thread: threading.Thread | None = None
    hooks: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.options.port}"

    def start(self) -> ServeHarness:
        self.inbox = Inbox(self.inbox_path)
        spec = WriterSpec(inbox_path=str(self.inbox_path), warehouse_url=self.warehouse_url,
                          twenty_base_url=self.sandbox.base_url, api_key=self.sandbox.api_key, options=self.options,
                          client_options=CLIENT_OPTIONS, secrets=(SECRET,))
        self.app = build_server(secret=SECRET, inbox=self.inbox, spec=spec)
        sock = bind_tcp("127.0.0.1", self.options.port)
        self.options.port = sock.getsockname()[1]
        self._server = uvicorn_server(self.app)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True)
        self._thread.start()
        wait_until(lambda: self._server.started, "the server to start")
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=60)
            assert not self._thread.is_alive(), "serve did not shut down"
        self.inbox.close()
        self._server = self._thread = None

    def wait_ready(self) -> None:
        wait_until(lambda: httpx.get(self.url + "/readyz").status_code == 200, "serve to be ready")

    def status(self) -> dict[str, Any]:
        return httpx.get(self.url + "/status").json()

    def wait_applied(self, count: int, timeout: float = 15.0) -> dict[str, Any]:
        """Until `count` events are applied and none waits (bounded by `timeout`)."""
        wait_until(lambda: (s := self.status()["inbox"])["applied"] >= count and s["pending"] == 0,
                   f"{count} webhook events to be applied", timeout)
        return self.status()

    def settle(self, timeout: float = 20.0) -> None:
        """Until every delivery the sandbox made was answered and applied (or set aside)."""
        def settled() -> bool:
            if not self.sandbox.wait_webhooks_idle(0.2):
                return False
            delivered = sum(1 for d in self.sandbox.webhook_deliveries if d.ok)
            inbox = self.inbox.counts()
            # Applying may write to Twenty (a new person's key), which sends one more event: idle again?
            return inbox["applied"] + inbox["failed"] >= delivered and self.sandbox.wait_webhooks_idle(0)
        wait_until(settled, "the deliveries to be applied", timeout)

    @contextlib.contextmanager
    def paused(self) -> Iterator[Any]:
        """Stop serve (its writer process holds the DuckDB file), open the warehouse, start serve again
        on the same port so the sandbox's webhook still reaches it."""
        self.settle()
        self.stop()
        with open_warehouse(self.warehouse_url) as wh:
            yield wh
        self.start()
        self.wait_ready()

    def register(self, sandbox_client: httpx.Client) -> str:
        hook = sandbox_client.post("/rest/metadata/webhooks", json={
            "targetUrl": self.url + "/webhooks/twenty", "operations": OPERATIONS, "secret": SECRET}).json()
        self.hooks.append(hook["id"])
        return hook["id"]


def wait_until(condition: Callable[[], Any], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


@pytest.fixture
def make_harness(sandbox: Any, tmp_path: Path) -> Iterator[Callable[..., ServeHarness]]:
    started: list[ServeHarness] = []

    def _make(**overrides: Any) -> ServeHarness:
        options = ServeOptions(port=0, sync_on_start=False, sync_interval=3600, lease_ttl=dt.timedelta(seconds=5),
                               lease_poll=0.1, retry_pause=0.1, drain_seconds=10)
        for name, value in overrides.items():
            setattr(options, name, value)
        harness = ServeHarness(sandbox, f"duckdb:///{tmp_path / 'w.duckdb'}", tmp_path / "inbox.sqlite3", options)
        started.append(harness.start())
        return harness

    yield _make
    for harness in started:
        if harness._server is not None:
            harness.stop()


@pytest.fixture
def harness(make_harness: Callable[..., ServeHarness]) -> ServeHarness:
    h = make_harness()
    h.wait_ready()
    return h


class ServeProcess:
    """`python -m truth_forge.cli.main serve` in a child process (so it can be SIGKILLed), on 127.0.0.1."""

    COMMAND = "serve"

    def __init__(self, env: dict[str, str], cwd: Path, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "truth_forge.cli.main", self.COMMAND, "--port", "0", *args],
            env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True)  # its own process group: kill() takes the writer process down too
        self.url = self._announced_url()

    def _announced_url(self) -> str:
        """The URL from serve's 'listening on' line (log lines may come first), within 30 s; the
        rest of the output is read by a thread, so a chatty server never blocks on a full pipe."""
        assert self.proc.stdout is not None
        self.lines: list[str] = []
        found = threading.Event()

        def read() -> None:
            for line in self.proc.stdout:  # type: ignore[union-attr]
                self.lines.append(line)
                if "listening on" in line:
                    found.set()

        self._reader = threading.Thread(target=read, daemon=True)
        self._reader.start()
        found.wait(30)
        for line in self.lines:
            match = re.search(r"listening on (http://127\.0\.0\.1:\d+)", line)
            if match:
                return match.group(1)
        self.proc.kill()
        raise AssertionError(f"{self.COMMAND} did not start:\n" + "".join(self.lines))

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.url + path, timeout=5)

    def kill(self) -> None:
        """SIGKILL the server and its writer process at once, as a crash of the machine's process would."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self._reader.join(10)  # the pipe closes once every process of the group is gone

    def terminate(self) -> bool:
        """SIGTERM, the graceful way; True when the process finished its work and exited as asked
        (uvicorn re-raises the signal once it has shut down, so the code says 'terminated')."""
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(90)
        self._reader.join(10)  # the output ends when the process (and its writer) closed the pipe
        return code in (0, -signal.SIGTERM) and "Writer lease released" in self.output()

    def output(self) -> str:
        return "".join(self.lines)


def serve_env(sandbox: Any, warehouse_url: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRUTH_FORGE_", "TWENTY_", "GOOGLE_CLOUD"))}
    env.update({
        "TWENTY_BASE_URL": sandbox.base_url, "TWENTY_API_KEY": sandbox.api_key, "TWENTY_WEBHOOK_SECRET": SECRET,
        "TRUTH_FORGE_WAREHOUSE_URL": warehouse_url, "TRUTH_FORGE_SERVE_INBOX_PATH": str(tmp_path / "inbox.sqlite3"),
        "TRUTH_FORGE_TWENTY_REQUESTS_PER_MINUTE": "100000", "TRUTH_FORGE_LEASE_TTL_SECONDS": "3",
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]), **extra,
    })
    return env
