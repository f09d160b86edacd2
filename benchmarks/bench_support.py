"""Shared pieces of the benchmark harness: a sandbox in its own process, request counting through the
sandbox's own request log, the steady-rate arithmetic, the machine description and the BENCHMARKS.md
section writer.

Everything here listens on or talks to 127.0.0.1 only, and every wait is bounded.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib import request as urlrequest

ROOT = Path(__file__).resolve().parent.parent
API_KEY = "bench-key"

SCOREBOARD = "issue-11-scoreboard"
START_MARKER, END_MARKER = (f"<!-- {SCOREBOARD}:start (written by benchmarks/scoreboard.py; edits inside are overwritten) -->",
                            f"<!-- {SCOREBOARD}:end -->")


def export_code(ref: str, into: Path) -> Path:
    """The truth_forge package of `ref`, read from git (no worktree, no checkout touched): the
    "before" side of a benchmark."""
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref, "truth_forge"], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    _install_dropped_dependencies(into)
    return into


# Packages older trees import that the project no longer installs (pyarrow left with issue 20), with
# the version the project last pinned, so a "before" from then still runs: installed beside its code.
_DROPPED_DEPENDENCIES = {"pyarrow": "pyarrow==26.0.1"}


def _install_dropped_dependencies(tree: Path) -> None:
    """pip-install into `tree` (which the side runs with on PYTHONPATH) each dropped package its code
    imports and this venv lacks; pip's own cache makes the second time cheap."""
    code = "\n".join(path.read_text(errors="replace") for path in (tree / "truth_forge").rglob("*.py"))
    wanted = []
    for module, requirement in _DROPPED_DEPENDENCIES.items():
        imported = re.search(rf"^\s*(import|from) {module}\b", code, re.MULTILINE)
        if imported and subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True).returncode:
            wanted.append(requirement)
    if wanted:
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                        "--target", str(tree), *wanted], check=True)


# -- BENCHMARKS.md --------------------------------------------------------------------------------

def replace_marked(document: str, name: str, writer: str, section: str) -> str:
    """The document with the text between `name`'s start and end markers replaced by `section` (markers
    kept; the start marker names the `writer` script); appended when the document has none yet.
    Nothing else changes."""
    start_marker = f"<!-- {name}:start (written by {writer}; edits inside are overwritten) -->"
    end_marker = f"<!-- {name}:end -->"
    block = f"{start_marker}\n{section.strip()}\n{end_marker}"
    start = re.search(rf"<!-- {re.escape(name)}:start[^>]*-->", document)
    if start is None:
        return document.rstrip("\n") + "\n\n" + block + "\n"
    end = document.find(end_marker, start.end())
    if end < 0:
        raise ValueError(f"BENCHMARKS.md has the start marker of {name} but not its end marker")
    return document[:start.start()] + block + document[end + len(end_marker):]


def replace_section(document: str, section: str) -> str:
    """The document with the scoreboard's section replaced by `section`."""
    return replace_marked(document, SCOREBOARD, "benchmarks/scoreboard.py", section)


def write_section(path: Path, section: str) -> None:
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    path.write_text(replace_section(text, section))


# -- arithmetic -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Sample:
    """One answered request, as the sandbox logged it."""

    at: float  # epoch seconds when the response finished
    records: int  # records written by it (a batch create/upsert body), 0 for anything else
    status: int | None = 200


def steady_rate(samples: Sequence[Sample], skip: int) -> tuple[float, int, float]:
    """(records per minute, requests, seconds) over the window that starts when request `skip` ends
    (so the burst the buckets allow at the start is left out) and ends with the last request.

    Records are those of the requests finished inside the window; every request in it counts
    toward the request figure, reads and refusals too, since all of them spend the budget."""
    ordered = sorted(samples, key=lambda s: s.at)
    if len(ordered) < skip + 2:
        raise ValueError(f"need at least {skip + 2} requests for a steady window, got {len(ordered)}")
    window = ordered[skip:]
    seconds = window[-1].at - window[0].at
    records = sum(s.records for s in window[1:])
    if seconds <= 0:
        raise ValueError("the steady window has no duration")
    return records * 60.0 / seconds, len(window) - 1, seconds


def bucket_empty_from(taken: Sequence[float], capacity: float, per_minute: float,
                      below: float = 0.1) -> int | None:
    """The first token (its index in `taken`, the times the client took them) that left the
    client's bucket with less than `below` of one: replayed from a full bucket refilled at the limit.
    From there every later request waited for a token earned after it, so no token saved up before
    can lift a rate measured from it above the limit (by more than `below` of a request). None:
    never emptied (the limit never set the pace)."""
    rate = per_minute / 60.0
    tokens, last = capacity, taken[0] if taken else 0.0
    for i, when in enumerate(taken):
        tokens = min(capacity, tokens + (when - last) * rate) - 1.0
        last = when
        if tokens < below:
            return i
    return None


def paced_rate(taken: Sequence[float], entries: Sequence[dict[str, Any]], start: int) -> tuple[float, int, float]:
    """(records per minute, requests, seconds) from token `start` to the last one taken: the records
    of the requests sent after it (the sandbox's log in order of arrival, matched to the tokens in
    order) ÷ that span. Every request spends the budget, reads and refusals too; records count for
    successful batch writes only."""
    seconds = taken[-1] - taken[start] if len(taken) > start else 0.0
    if seconds <= 0:
        raise ValueError(f"no paced window from request {start} of {len(taken)}")
    arrived = sorted(entries, key=lambda e: e["at"] - (e.get("duration_ms") or 0.0) / 1000)
    records = sum(s.records for s in samples_of(arrived[start + 1 : len(taken)]))
    return records * 60.0 / seconds, len(taken) - 1 - start, seconds


def efficiency(records_per_minute: float, limit_per_minute: float, batch: int) -> float:
    """The issue's steady-push figure: records/min ÷ (limit × batch)."""
    return records_per_minute / (limit_per_minute * batch)


def floor_seconds(requests: int, limit_per_minute: float) -> float:
    """The least time `requests` can take at the limit (the issue's "requests needed ÷ rate")."""
    return requests * 60.0 / limit_per_minute


def late_rate(finished_at: Sequence[float], started: float, ended: float) -> float:
    """Items per minute over the second half of [started, ended] (a bounded loop's steady rate:
    the first half holds the burst the server's bucket allows)."""
    half = started + (ended - started) / 2
    done = sum(1 for t in finished_at if half < t <= ended)
    return done * 60.0 / max(1e-9, ended - half)


def fmt_pct(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.1f} %"


def fmt_s(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 120:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.1f} s"


# -- the sandbox in its own process ---------------------------------------------------------------

_URL_RE = re.compile(r"export TWENTY_BASE_URL=(http://127\.0\.0\.1:\d+)")


def parse_base_url(line: str) -> str | None:
    """The sandbox's base URL from the CLI's ready message (`export TWENTY_BASE_URL=...`)."""
    match = _URL_RE.search(line)
    return match.group(1) if match else None


class SandboxProcess:
    """`python -m truth_forge.sandbox` in a child process, on a free loopback port.

    A separate process, so the sandbox's CPU does not compete with the measured client for one
    interpreter lock. Controlled over its `/_sandbox/*` routes: request log, faults, reset."""

    def __init__(self, *, rate_limit: int | None, burst: int | None = None, api_key: str = API_KEY,
                 start_timeout: float = 30.0) -> None:
        args = [sys.executable, "-m", "truth_forge.sandbox", "--port", "0", "--host", "127.0.0.1",
                "--api-key", api_key, "--rate-limit", str(rate_limit or 0)]
        if burst is not None and rate_limit:
            args += ["--rate-limit-burst", str(burst)]
        self.api_key = api_key
        self.rate_limit = rate_limit
        self.burst = burst
        self._proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                      text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.base_url = self._wait_for_url(start_timeout)
        self._drain = threading.Thread(target=self._discard_stdout, daemon=True)
        self._drain.start()

    def _wait_for_url(self, timeout: float) -> str:
        found: list[str] = []

        def read() -> None:
            assert self._proc.stdout is not None
            for line in self._proc.stdout:
                url = parse_base_url(line)
                if url:
                    found.append(url)
                    return

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(timeout)
        if not found:
            self.stop()
            raise RuntimeError(f"the sandbox did not start within {timeout:.0f} s")
        return found[0]

    def _discard_stdout(self) -> None:
        assert self._proc.stdout is not None
        for _ in self._proc.stdout:
            pass

    @property
    def pid(self) -> int:
        return self._proc.pid

    def _admin(self, method: str, path: str, body: Any = None, timeout: float = 120.0) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urlrequest.Request(self.base_url + path, data=data, method=method,
                                 headers={"Authorization": f"Bearer {self.api_key}",
                                          "Content-Type": "application/json"})
        with urlrequest.urlopen(req, timeout=timeout) as response:  # loopback only
            return json.loads(response.read() or b"null")

    def entries(self) -> list[dict[str, Any]]:
        return self._admin("GET", "/_sandbox/requests")

    def mark(self) -> int:
        """The sequence number of the last logged request (log entries after it are "since")."""
        entries = self.entries()
        return entries[-1]["seq"] if entries else 0

    def since(self, mark: int) -> list[dict[str, Any]]:
        return [e for e in self.entries() if e["seq"] > mark]

    def set_latency(self, ms: float) -> None:
        """A fixed delay before every API request is answered (the sandbox's latency fault)."""
        self._admin("POST", "/_sandbox/faults", {"latency_ms": ms})

    def reset(self) -> None:
        self._admin("POST", "/_sandbox/reset", {})

    def rss_mib(self) -> float | None:
        return process_rss_mib(self._proc.pid)

    def stop(self) -> None:
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(10)

    def __enter__(self) -> SandboxProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def samples_of(entries: Iterable[dict[str, Any]]) -> list[Sample]:
    """Log entries -> samples; only a batch create/upsert that succeeded counts records."""
    out = []
    for e in entries:
        ok = e.get("status") is not None and 200 <= e["status"] < 300
        wrote = e["method"] == "POST" and e["path"].startswith("/rest/batch/")
        out.append(Sample(e["at"], (e.get("batch_size") or 0) if ok and wrote else 0, e.get("status")))
    return out


def count_status(entries: Iterable[dict[str, Any]], status: int) -> int:
    return sum(1 for e in entries if e.get("status") == status)


def process_rss_mib(pid: int) -> float | None:
    return proc_status_mib(pid, "VmRSS")


def proc_status_mib(pid: int, field: str) -> float | None:
    """A memory figure of a live process from /proc (VmRSS now, VmHWM its peak), in MiB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


# -- the machine ----------------------------------------------------------------------------------

def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10)


def git_commit() -> str:
    """HEAD, and whether truth_forge/ is main's (the figures are about the code, not the harness)."""
    try:
        head = _git("rev-parse", "--short", "HEAD").stdout.strip()
        main = _git("rev-parse", "--short", "main").stdout.strip()
        if _git("status", "--porcelain", "--", "truth_forge").stdout.strip():
            where = "truth_forge/ has uncommitted changes"
        elif main and _git("diff", "--quiet", "main", "--", "truth_forge").returncode == 0:
            where = f"truth_forge/ as on main {main}"
        else:
            where = "truth_forge/ differs from main"
        return f"{head} ({where})"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def load_average() -> str:
    try:
        return " / ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "?"


def machine_line() -> str:
    import duckdb

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (f"{cores} cores ({cpu_model()}, {platform.machine()}), {platform.system()} "
            f"{platform.release()}, {platform.python_implementation()} {platform.python_version()}, "
            f"duckdb {duckdb.__version__}")


def today() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


class Deadline:
    """A bound on the whole run: steps ask it how much time is left."""

    def __init__(self, seconds: float) -> None:
        self.ends = time.monotonic() + seconds

    def left(self) -> float:
        return self.ends - time.monotonic()

    def check(self, what: str) -> None:
        if self.left() <= 0:
            raise TimeoutError(f"the benchmark's time bound ran out before {what}")


def run_step(script: str, timeout: float, step: str, *args: str, cwd: str | None = None) -> dict[str, Any]:
    """`python SCRIPT --step STEP ARGS...` in a fresh process group, bounded by `timeout`: the JSON
    object on its last line of output, or {"failed": why} (the whole group is killed on a timeout)."""
    proc = subprocess.Popen([sys.executable, script, "--step", step, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True, cwd=cwd)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return {"failed": f"{step} ran over {timeout:.0f} s and was stopped"}
    if proc.returncode != 0:
        lines = err.strip().splitlines()
        return {"failed": f"{step} exited {proc.returncode}: {[x for x in lines if 'Error' in x][-1:] or lines[-3:]}"}
    return dict(json.loads(out.strip().splitlines()[-1]))
