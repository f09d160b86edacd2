"""How fast `truth-forge serve` acknowledges and applies webhook events, on loopback.

Sets up the bundled sandbox and a DuckDB warehouse of synced contacts, starts `truth-forge serve`
in a child process (so the load generator does not share its interpreter), then posts signed
`person.updated` deliveries that each rename a real, synced person:

1. a burst: as fast as `--burst-connections` connections allow, `--burst` events: acknowledged events/s,
   and applied events/s (first acknowledgement until the inbox is empty);
2. a steady rate: `--rate` events/s for `--seconds`: p50/p99/max acknowledgement latency, and how
   long each event waited between its acknowledgement and being applied (p50/p99/max);
3. CPU seconds per event of the server process and of its writer process, which unlike rates do not
   depend on what else the machine is running.

Every loop is bounded by a count and a deadline. Prints a Markdown table for BENCHMARKS.md.
With `--before REV`, the same scenario runs first with serve from that git revision (exported
with `git archive`, no checkout touched), then with this checkout, one after the other.

    .venv/bin/python benchmarks/bench_webhooks.py --contacts 1000 --burst 3000 --rate 500 --seconds 10
    .venv/bin/python benchmarks/bench_webhooks.py --rate 1000 --before main
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import hmac
import http.client
import json
import os
import platform
import re
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_support import export_code  # noqa: E402

from truth_forge.core.crm_schema import CrmSchema, setup_schema  # noqa: E402
from truth_forge.sandbox import SandboxConfig, SandboxServer  # noqa: E402
from truth_forge.sync.runner import run_sync  # noqa: E402
from truth_forge.twenty import TwentyClient  # noqa: E402
from truth_forge.warehouse import open_warehouse  # noqa: E402
from truth_forge.warehouse.sample_data import generate_sample_data  # noqa: E402

SECRET = secrets.token_hex(32)
DEADLINE_S = 300
ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Sent:
    acked_at: list[float] = field(default_factory=list)  # monotonic time of each 200
    latencies_ms: list[float] = field(default_factory=list)
    refused: int = 0


def signed(record: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    body = json.dumps({"eventName": "person.updated", "objectMetadata": {"id": "bench", "nameSingular": "person"},
                       "eventDate": _iso_now(), "record": record, "updatedFields": ["name"]},
                      separators=(",", ":")).encode()
    ts = str(time.time_ns() // 1_000_000)
    signature = hmac.new(SECRET.encode(), ts.encode() + b":" + body, hashlib.sha256).hexdigest()
    return body, {"Content-Type": "application/json", "X-Twenty-Webhook-Timestamp": ts,
                  "X-Twenty-Webhook-Signature": signature, "X-Twenty-Webhook-Nonce": secrets.token_hex(16)}


def _iso_now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def renamed(people: list[dict[str, Any]], index: int) -> dict[str, Any]:
    person = people[index % len(people)]
    return {**person, "name": {"firstName": f"Renamed{index}", "lastName": "Bench"}, "updatedAt": _iso_now()}


def send_all(url: str, people: list[dict[str, Any]], count: int, *, first_index: int, concurrency: int,
             rate: float | None) -> Sent:
    """Post `count` events over `concurrency` keep-alive connections, paced at `rate` per second if given.

    Bodies are signed before the clock starts and sent with http.client from threads: the load
    generator shares this 2-core machine with the server, so it must cost as little as possible.
    """
    prepared = [signed(renamed(people, first_index + i)) for i in range(count)]
    parts = urlsplit(url)
    sent = Sent()
    lock = threading.Lock()
    next_index = iter(range(count))
    started = time.monotonic()
    deadline = started + DEADLINE_S

    def worker() -> None:
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
        try:
            while time.monotonic() < deadline:
                with lock:
                    i = next(next_index, None)
                if i is None:
                    return
                if rate:
                    time.sleep(max(0.0, started + i / rate - time.monotonic()))
                body, headers = prepared[i]
                t0 = time.monotonic()
                connection.request("POST", parts.path, body=body, headers=headers)
                response = connection.getresponse()
                response.read()
                t1 = time.monotonic()
                with lock:
                    if response.status == 200:
                        sent.latencies_ms.append((t1 - t0) * 1000)
                        sent.acked_at.append(t1)
                    else:
                        sent.refused += 1
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(DEADLINE_S)
    return sent


class AppliedSampler:
    """Polls /status on a thread of its own while events are being sent: (time, applied) samples."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.samples: list[tuple[float, int]] = []
        self.failed = 0
        self._target: int | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        deadline = time.monotonic() + DEADLINE_S
        with httpx.Client(timeout=5) as client:
            while time.monotonic() < deadline:
                inbox = client.get(self.base + "/status").json()["inbox"]
                self.samples.append((time.monotonic(), inbox["applied"]))
                self.failed = inbox["failed"]
                if self._target is not None and inbox["applied"] + inbox["failed"] >= self._target:
                    self._done.set()
                    return
                time.sleep(0.05)  # 20 a second: enough resolution, little load on the server it measures

    def wait_for(self, total: int) -> list[tuple[float, int]]:
        """Until `total` events are applied (bounded by the deadline); returns the samples."""
        self._target = total
        if not self._done.wait(DEADLINE_S) or self.failed:
            raise SystemExit(f"not applied within the deadline, or {self.failed} events failed")
        return self.samples


def apply_lags(sent: Sent, already: int, samples: list[tuple[float, int]]) -> list[float]:
    """For the i-th acknowledged event, seconds until the applied count passed it (events apply in arrival order)."""
    lags, s = [], 0
    for i, acked in enumerate(sorted(sent.acked_at), start=already + 1):
        while samples[s][1] < i:
            s += 1
        lags.append(max(0.0, samples[s][0] - acked))
    return lags


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process so far (Linux /proc): robust on a shared, busy machine."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def writer_pid(server_pid: int) -> int:
    """The writer among serve's children (multiprocessing also starts a resource tracker)."""
    children = Path(f"/proc/{server_pid}/task/{server_pid}/children").read_text().split()
    writers = [int(pid) for pid in children if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()]
    if len(writers) != 1:
        raise SystemExit(f"expected one writer process under serve, found {writers} among {children}")
    return writers[0]


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def start_serve(env: dict[str, str], cwd: str) -> tuple[subprocess.Popen[bytes], str]:
    """Start serve with its output in serve.log (a pipe nobody reads would fill and stall it)."""
    log_path = Path(cwd) / "serve.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "truth_forge", "serve", "--port", "0",
                                 "--no-sync-on-start"], env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        match = re.search(r"listening on (http://127\.0\.0\.1:\d+)", log_path.read_text())
        if match:
            return proc, match.group(1)
        time.sleep(0.05)
    proc.kill()
    raise SystemExit("serve did not start:\n" + log_path.read_text()[-2000:])


def edit_to_warehouse(sandbox: SandboxServer, base: str, people: list[dict[str, Any]], edits: int) -> list[float]:
    """Seconds from a rename sent to the sandbox until serve reports it applied, one edit at a time."""
    seconds = []
    with httpx.Client(base_url=sandbox.base_url, headers={"Authorization": "Bearer bench-key"}, timeout=10) as twenty, \
            httpx.Client(timeout=5) as local:
        twenty.post("/rest/metadata/webhooks", json={"targetUrl": base + "/webhooks/twenty", "secret": SECRET,
                                                     "operations": ["person.*", "company.*"]})
        for i in range(edits):
            before = local.get(base + "/status").json()["inbox"]["applied"]
            started = time.monotonic()
            twenty.patch(f"/rest/people/{people[i]['id']}", json={"name": {"firstName": f"Edited{i}"}})
            deadline = started + 30
            while local.get(base + "/status").json()["inbox"]["applied"] <= before:
                if time.monotonic() > deadline:
                    raise SystemExit("an edit in the sandbox did not reach the warehouse within 30 s")
                time.sleep(0.005)
            seconds.append(time.monotonic() - started)
    return seconds


@dataclass
class Run:
    code: str
    people: int
    burst: Sent
    burst_samples: list[tuple[float, int]]
    steady: Sent
    steady_samples: list[tuple[float, int]]
    status: dict[str, Any]
    cpu: list[float]
    edits: list[float]
    load: str


def run_side(args: argparse.Namespace, code: str, code_dir: Path | None) -> Run:
    """The whole scenario against serve from `code_dir` (None: this checkout), in fresh files."""
    schema = CrmSchema.load()
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp, \
            SandboxServer(SandboxConfig(api_keys=["bench-key"], rate_limit_per_minute=None)) as sandbox:
        url = f"duckdb:///{Path(tmp) / 'bench.duckdb'}"
        with open_warehouse(url) as warehouse, \
                TwentyClient(sandbox.base_url, "bench-key", batch_size=200, requests_per_minute=1e9) as client:
            setup_schema(client, schema)
            generate_sample_data(warehouse, args.contacts, max(1, args.contacts // 20), seed=1)
            run_sync(warehouse, client, schema)
            people = [r for page in client.records.iter_pages("people", page_size=200) for r in page.records]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TRUTH_FORGE_", "TWENTY_"))}
        env.update({"TWENTY_BASE_URL": sandbox.base_url, "TWENTY_API_KEY": "bench-key", "TWENTY_WEBHOOK_SECRET": SECRET,
                    "TRUTH_FORGE_WAREHOUSE_URL": url, "TRUTH_FORGE_SERVE_INBOX_PATH": str(Path(tmp) / "inbox.sqlite3"),
                    "TRUTH_FORGE_TWENTY_REQUESTS_PER_MINUTE": "1000000000"})
        if code_dir is not None:
            env["PYTHONPATH"] = str(code_dir)  # ahead of the editable install: serve runs that code
        proc, base = start_serve(env, tmp)
        try:
            for _ in range(500):
                if httpx.get(base + "/readyz").status_code == 200:
                    break
                time.sleep(0.02)
            edits = edit_to_warehouse(sandbox, base, people, args.edits)
            hook = base + "/webhooks/twenty"
            pids = (proc.pid, writer_pid(proc.pid))
            cpu_before = [cpu_seconds(pid) for pid in pids]
            sampler = AppliedSampler(base)
            burst = send_all(hook, people, args.burst, first_index=0, concurrency=args.burst_connections, rate=None)
            burst_samples = sampler.wait_for(len(burst.acked_at))
            steady_count = int(args.rate * args.seconds)
            sampler = AppliedSampler(base)
            steady = send_all(hook, people, steady_count, first_index=args.burst, concurrency=args.steady_connections,
                              rate=args.rate)
            steady_samples = sampler.wait_for(len(burst.acked_at) + len(steady.acked_at))
            status = httpx.get(base + "/status").json()
            cpu = [cpu_seconds(pid) - before for pid, before in zip(pids, cpu_before)]
        finally:
            proc.terminate()
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                raise SystemExit("serve did not stop within 60 s of SIGTERM:\n"
                                 + (Path(tmp) / "serve.log").read_text()[-3000:]) from None
    return Run(code, len(people), burst, burst_samples, steady, steady_samples, status, cpu, edits,
               f"{load_start:.1f} -> {os.getloadavg()[0]:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=1000)
    parser.add_argument("--edits", type=int, default=20, help="renames made in the sandbox, one at a time")
    parser.add_argument("--burst", type=int, default=3000)
    parser.add_argument("--rate", type=float, default=500)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--burst-connections", type=int, default=4)
    parser.add_argument("--steady-connections", type=int, default=8,
                        help="enough that the rate holds while each connection waits for its answer")
    parser.add_argument("--before", help="also run serve from this git revision first, for a side-by-side table")
    args = parser.parse_args()

    runs = []
    with tempfile.TemporaryDirectory() as exported:
        if args.before:
            commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", args.before], check=True,
                                    capture_output=True, text=True).stdout.strip()
            runs.append(run_side(args, f"before ({commit})", export_code(args.before, Path(exported) / "before")))
        runs.append(run_side(args, "after" if args.before else "this checkout", None))
    report(args, runs)


def per_commit(run: Run) -> str:
    """Deliveries stored per inbox transaction over the whole run (1 where serve commits each alone)."""
    commits = run.status.get("receiver", {}).get("commits")
    stored = sum(run.status["inbox"].values())
    return f"{stored / commits:.1f}" if commits else "1 (no group commit)"


def report(args: argparse.Namespace, runs: list[Run]) -> None:
    print(f"Machine: {os.cpu_count()} cores, {platform.platform()}, Python {platform.python_version()}; "
          f"{runs[0].people} synced people in a DuckDB warehouse; {args.burst_connections} client connections "
          f"in the burst, {args.steady_connections} at the steady rate.\n")
    print("| code | phase | events | acknowledged/s | applied/s | ack p50 | ack p99 | ack max | refused |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for run in runs:
        burst, steady = run.burst, run.steady
        ack_span = max(burst.acked_at) - min(burst.acked_at)
        applied_span = run.burst_samples[-1][0] - min(burst.acked_at)
        steady_span = max(steady.acked_at) - min(steady.acked_at)
        print(f"| {run.code} | burst | {len(burst.acked_at)} | {len(burst.acked_at) / ack_span:.0f} | "
              f"{len(burst.acked_at) / applied_span:.0f} | {pct(burst.latencies_ms, 50):.1f} ms | "
              f"{pct(burst.latencies_ms, 99):.1f} ms | {max(burst.latencies_ms):.1f} ms | {burst.refused} |")
        print(f"| {run.code} | steady {args.rate:.0f}/s for {args.seconds:.0f} s | {len(steady.acked_at)} | "
              f"{len(steady.acked_at) / steady_span:.0f} | – | {pct(steady.latencies_ms, 50):.1f} ms | "
              f"{pct(steady.latencies_ms, 99):.1f} ms | {max(steady.latencies_ms):.1f} ms | {steady.refused} |")
    print("\n| code | ack → applied, steady phase | edit in the sandbox → applied | CPU per event, server | "
          "CPU per event, writer | events per batch | deliveries per inbox commit | load average (1 min, start -> end) |")
    print("|---|---|---|---:|---:|---:|---:|---|")
    for run in runs:
        lags = apply_lags(run.steady, len(run.burst.acked_at), run.steady_samples)
        events = len(run.burst.acked_at) + len(run.steady.acked_at)  # CPU is counted from the burst on
        writer = run.status["writer"]
        print(f"| {run.code} | p50 {pct(lags, 50) * 1000:.0f} ms, p99 {pct(lags, 99) * 1000:.0f} ms, "
              f"max {max(lags) * 1000:.0f} ms | p50 {pct(run.edits, 50) * 1000:.0f} ms, "
              f"max {max(run.edits) * 1000:.0f} ms | {run.cpu[0] / events * 1000:.2f} ms | "
              f"{run.cpu[1] / events * 1000:.2f} ms | {writer['applied']['events'] / max(1, writer['batches']):.0f} "
              f"| {per_commit(run)} | {run.load} |")
        if writer["failed_batches"]:
            print(f"\n{run.code}: {writer['failed_batches']} failed batches")


if __name__ == "__main__":
    main()
