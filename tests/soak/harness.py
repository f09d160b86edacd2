"""Run `truth-forge sync` as a separate process against the in-process sandbox, and kill it on cue.

Why it exists: only a real process can be killed the way a machine dies (SIGKILL: no `finally`, no
flush, DuckDB's WAL left behind), stopped the way a service manager stops it (SIGTERM), or frozen
(SIGSTOP) the way a paused VM or a long GC freezes it. The sandbox logs every request it answers, so a test can watch the
log and kill the sync right after the k-th answered request. Twenty-side edits go through plain HTTP
(`PlainTwenty`), never through truth-forge's own client, so a misunderstanding cannot hide in both.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.fixtures.sandbox import as_person
from truth_forge.core.crm_schema import CrmSchema, setup_schema
from truth_forge.sandbox import SandboxServer
from truth_forge.twenty import TwentyClient

SCHEMA = CrmSchema.load()
METADATA_PREFIX = "/rest/metadata"
SYNC_TIMEOUT_S = 180.0  # a hung sync is a failure, never a hung test
EXIT_STOPPED = 128 + signal.SIGTERM  # a sync stopped by SIGTERM exits 143 (truth_forge.core.shutdown)
TERM_EXIT_S = 30.0  # after SIGTERM the sync must exit by itself within this (its requests have deadlines)
POLL_S = 0.002
# Environment the sync must not inherit from the machine running the tests.
_FOREIGN_ENV = ("TRUTH_FORGE_", "TWENTY_", "GOOGLE_", "GCP_")


def record_requests(sandbox: SandboxServer) -> list[Any]:
    """Answered requests for records (reads and writes), not the schema check's metadata reads."""
    return [e for e in sandbox.request_log if not e.path.startswith(METADATA_PREFIX) and e.status is not None]


def fresh_workspace(sandbox: SandboxServer) -> None:
    """An empty Twenty workspace with truth-forge's custom fields, and an empty request log."""
    sandbox.reset()
    with TwentyClient(sandbox.base_url, sandbox.api_key, requests_per_minute=100_000, timeout=10) as client:
        setup_schema(client, SCHEMA)
    sandbox.clear_request_log()


def sync_env(sandbox: SandboxServer, db_path: Path, url_options: str = "", **settings: Any) -> dict[str, str]:
    """The environment of a sync process: this sandbox, this DuckDB file (with `url_options`, e.g.
    `?journal_fold_share=...`), `settings` as TRUTH_FORGE_<NAME>."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_FOREIGN_ENV)}
    env.update(TWENTY_BASE_URL=sandbox.base_url, TWENTY_API_KEY=sandbox.api_key,
               TRUTH_FORGE_WAREHOUSE_URL=f"duckdb:///{db_path}{url_options}",
               TRUTH_FORGE_TWENTY_REQUESTS_PER_MINUTE="100000")
    env.update({f"TRUTH_FORGE_{name.upper()}": str(value) for name, value in settings.items()})
    return env


@dataclass
class SyncRun:
    """How one sync process ended. `killed_after` is the answered-request count seen when it was killed."""

    returncode: int
    stdout: str
    stderr: str
    killed_after: int | None = None
    signal_name: str = "SIGKILL"  # the signal sent at `killed_after`
    paused: bool = False  # frozen (SIGSTOP) for a while before that, then resumed (SIGCONT)

    @property
    def crashed(self) -> bool:
        """An unhandled exception, whatever the exit code says (Python exits 1 on one, like "partial")."""
        return "Traceback (most recent call last)" in self.stderr

    def describe(self) -> str:
        """Exit code and the evidence: the run's first error lines, or the end of a traceback."""
        lines = [line.strip() for line in self.stdout.splitlines()]
        errors = [line for line in lines if line.startswith("error ")]
        # Run-level errors first (no object, no key: "error push  : ..."), then the records' own.
        said = [line for line in lines if line.startswith("run ")] + sorted(errors, key=lambda e: "  :" not in e)
        if self.crashed or not said:
            said += self.stderr.strip().splitlines()[-3:]
        paused = ", paused before" if self.paused else ""
        killed = f" ({self.signal_name} after {self.killed_after} answers{paused})" if self.killed_after else ""
        more = f" | ... {len(errors)} error lines in all" if len(errors) > 3 else ""
        return f"exit {self.returncode}{killed}: " + " | ".join(line[:300] for line in said[:4]) + more


class SyncProcess:
    """One `truth-forge sync` subprocess; output goes to files so a full pipe can never block it."""

    def __init__(self, env: dict[str, str], workdir: Path, name: str, args: tuple[str, ...] = ()) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self._out, self._err = workdir / f"{name}.out", workdir / f"{name}.err"
        # cwd = workdir: no stray .env file of the developer's is read.
        with open(self._out, "w") as out, open(self._err, "w") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "truth_forge", "sync", *args], env=env, cwd=workdir,
                                         stdout=out, stderr=err)

    def wait(self, timeout: float = SYNC_TIMEOUT_S, killed_after: int | None = None) -> SyncRun:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired as exc:
            self.proc.kill()
            self.proc.wait(10)
            raise AssertionError(
                f"sync did not finish within {timeout:.0f} s:\n{self._err.read_text()[-2000:]}") from exc
        return SyncRun(code, self._out.read_text(), self._err.read_text(), killed_after)

    def kill_after(self, sandbox: SandboxServer, answers: int, *, grace_s: float = 0.0) -> SyncRun:
        """SIGKILL once the sandbox has answered `answers` record requests (+ `grace_s`), or let it finish first."""
        deadline = time.monotonic() + SYNC_TIMEOUT_S
        while self.proc.poll() is None:
            seen = len(record_requests(sandbox))
            if seen >= answers:
                if grace_s:
                    time.sleep(grace_s)
                self.proc.send_signal(signal.SIGKILL)
                return self.wait(killed_after=seen)
            if time.monotonic() > deadline:
                break
            time.sleep(POLL_S)
        return self.wait()


    def signal_after(self, sandbox: SandboxServer, answers: int, signum: int, *, grace_s: float = 0.0,
                     pause_at: int | None = None, pause_s: float = 0.0) -> SyncRun:
        """Send `signum` once the sandbox has answered `answers` record requests (+ `grace_s`); before that,
        at `pause_at` answers, freeze the process for `pause_s` (SIGSTOP, then SIGCONT). A SIGTERMed sync
        gets `TERM_EXIT_S` to exit by itself; one that finished before its cue is simply waited for."""
        deadline = time.monotonic() + SYNC_TIMEOUT_S
        paused = False
        while self.proc.poll() is None and time.monotonic() < deadline:
            seen = len(record_requests(sandbox))
            if pause_at is not None and not paused and seen >= pause_at:
                self.proc.send_signal(signal.SIGSTOP)
                time.sleep(pause_s)
                self.proc.send_signal(signal.SIGCONT)
                paused = True
                continue
            if seen >= answers:
                if grace_s:
                    time.sleep(grace_s)
                self.proc.send_signal(signum)
                run = self.wait(TERM_EXIT_S if signum == signal.SIGTERM else SYNC_TIMEOUT_S, killed_after=seen)
                run.signal_name, run.paused = signal.Signals(signum).name, paused
                return run
            time.sleep(POLL_S)
        run = self.wait()
        run.paused = paused
        return run


def run_sync(sandbox: SandboxServer, db_path: Path, workdir: Path, name: str, url_options: str = "",
             **settings: Any) -> SyncRun:
    """One whole sync run to its end."""
    return SyncProcess(sync_env(sandbox, db_path, url_options, **settings), workdir, name).wait()


def wait_until_quiet(sandbox: SandboxServer, quiet_s: float, timeout_s: float = 30.0) -> None:
    """Wait until no request has finished for `quiet_s`: a killed sync's last request may still be landing."""
    deadline = time.monotonic() + timeout_s
    last, since = len(sandbox.request_log), time.monotonic()
    while time.monotonic() - since < quiet_s:
        if time.monotonic() > deadline:
            raise AssertionError("the sandbox never went quiet after the sync was killed")
        time.sleep(0.01)
        now = len(sandbox.request_log)
        if now != last:
            last, since = now, time.monotonic()


class PlainTwenty:
    """Someone using Twenty over plain HTTP: reads for the checker, edits for the trials."""

    def __init__(self, sandbox: SandboxServer) -> None:
        self.http = httpx.Client(base_url=sandbox.base_url, timeout=30,
                                 headers=as_person(sandbox))

    def __enter__(self) -> PlainTwenty:
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.close()

    def records(self, plural: str, *, deleted: bool = False) -> list[dict[str, Any]]:
        """Every live record (or every soft-deleted one), all pages."""
        return list(self._pages(plural, "deletedAt[is]:NOT_NULL" if deleted else None))

    def _pages(self, plural: str, filter_: str | None) -> Iterator[dict[str, Any]]:
        cursor = None
        while True:
            params = {k: v for k, v in {"limit": 200, "starting_after": cursor, "filter": filter_}.items() if v}
            body = self._ok(self.http.get(f"/rest/{plural}", params=params))
            yield from body["data"][plural]
            if not body["pageInfo"]["hasNextPage"]:
                return
            cursor = body["pageInfo"]["endCursor"]

    def create(self, plural: str, body: dict[str, Any]) -> dict[str, Any]:
        data = self._ok(self.http.post(f"/rest/{plural}", json=body))["data"]
        return next(iter(data.values()))

    def try_create(self, plural: str, body: dict[str, Any]) -> dict[str, Any] | None:
        """Create, or None when Twenty refuses the record itself (400): hostile input may not get in at all."""
        response = self.http.post(f"/rest/{plural}", json=body)
        if response.status_code == 400:
            return None
        return next(iter(self._ok(response)["data"].values()))

    def update(self, plural: str, record_id: str, patch: dict[str, Any]) -> dict[str, Any]:
        data = self._ok(self.http.patch(f"/rest/{plural}/{record_id}", json=patch))["data"]
        return next(iter(data.values()))

    def soft_delete(self, plural: str, record_id: str) -> None:
        self._ok(self.http.delete(f"/rest/{plural}/{record_id}", params={"soft_delete": "true"}))

    @staticmethod
    def _ok(response: httpx.Response) -> Any:
        if response.is_error:
            raise AssertionError(f"the sandbox refused {response.request.method} {response.request.url}: "
                                 f"{response.status_code} {response.text[:500]}")
        return response.json()
