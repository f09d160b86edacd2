"""The verify-and-store path of `truth-forge serve` alone: acknowledged/s, latency and CPU per event.

The full webhook benchmark (bench_webhooks.py) also runs the writer, which applies every event to
the warehouse on the same two cores; here another owner holds the warehouse's writer lease, so
serve's writer only waits and the server process's CPU is the request path's: read, verify the
signature, parse, store in the inbox (fsync'd), answer. Signed `person.updated` deliveries of
realistic size (about 1.2 kB) are posted paced at `--rate` over `--connections` keep-alive
connections; bodies are signed before the clock starts. The server's CPU is also split between its
event loop thread (HTTP, verifying, parsing) and its other threads (the inbox's storing thread,
nearly all of it), with their context switches per event. With `--before REV` the same runs first
against serve from that git revision. Every loop is bounded by a count and a deadline.

    .venv/bin/python benchmarks/bench_receiver.py --rate 1000 --seconds 10 --before main
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_support import export_code  # noqa: E402
from bench_webhooks import ROOT, SECRET, cpu_seconds, pct, send_all, start_serve  # noqa: E402

from truth_forge.sandbox import SandboxConfig, SandboxServer  # noqa: E402
from truth_forge.warehouse import open_warehouse  # noqa: E402


def person(i: int) -> dict[str, Any]:
    """A person record shaped like Twenty's (standard fields and truth-forge's custom ones)."""
    stamp = "2026-01-01T00:00:00.000Z"
    return {"id": str(uuid.uuid4()), "name": {"firstName": f"Person{i}", "lastName": "Bench"}, "createdAt": stamp,
            "updatedAt": stamp, "deletedAt": None, "position": i, "jobTitle": "Engineer", "city": "Lisbon",
            "avatarUrl": "", "companyId": str(uuid.uuid4()),
            "emails": {"primaryEmail": f"person{i}@example.com", "additionalEmails": [f"p{i}@example.org"]},
            "phones": {"primaryPhoneNumber": "612345678", "primaryPhoneCountryCode": "FR",
                       "primaryPhoneCallingCode": "+33", "additionalPhones": []},
            "linkedinLink": {"primaryLinkUrl": "https://www.linkedin.com/in/x", "primaryLinkLabel": "",
                             "secondaryLinks": []},
            "xLink": {"primaryLinkUrl": "", "primaryLinkLabel": "", "secondaryLinks": []},
            "createdBy": {"source": "API", "workspaceMemberId": None, "name": "truth-forge", "context": {}},
            "warehouseKey": str(i), "sourceSystem": "warehouse", "lastSyncedAt": stamp}


def thread_times(pid: int) -> dict[int, tuple[float, int]]:
    """CPU seconds (user + system) and context switches of each thread of a process (Linux /proc)."""
    found = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            status = (task / "status").read_text()
        except FileNotFoundError:  # the thread ended meanwhile
            continue
        switches = sum(int(line.split()[1]) for line in status.splitlines()
                       if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")))
        found[int(task.name)] = ((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), switches)
    return found


def split_by_thread(pid: int, before: dict[int, tuple[float, int]], after: dict[int, tuple[float, int]],
                    events: int) -> str:
    """'loop X ms, N switches; others Y ms, M switches' per event: the main thread runs the event loop."""
    def used(tids: list[int]) -> tuple[float, float]:
        cpu = sum(after[t][0] - before.get(t, (0.0, 0))[0] for t in tids)
        switches = sum(after[t][1] - before.get(t, (0.0, 0))[1] for t in tids)
        return cpu / events * 1000, switches / events
    loop_ms, loop_switches = used([pid])
    others_ms, others_switches = used([t for t in after if t != pid])
    return f"{loop_ms:.2f} ms, {loop_switches:.1f} | {others_ms:.2f} ms, {others_switches:.1f}"


def run_side(args: argparse.Namespace, code: str, code_dir: Path | None, sandbox: SandboxServer) -> str:
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        url = f"duckdb:///{Path(tmp) / 'bench.duckdb'}"
        with open_warehouse(url) as warehouse:  # held by another owner: serve's writer only waits
            warehouse.claim_lease("writer", "bench_receiver", dt.timedelta(hours=1))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TRUTH_FORGE_", "TWENTY_"))}
        env.update({"TWENTY_BASE_URL": sandbox.base_url, "TWENTY_API_KEY": "bench-key",
                    "TWENTY_WEBHOOK_SECRET": SECRET, "TRUTH_FORGE_WAREHOUSE_URL": url,
                    "TRUTH_FORGE_SERVE_INBOX_PATH": str(Path(tmp) / "inbox.sqlite3")})
        if code_dir is not None:
            env["PYTHONPATH"] = str(code_dir)  # ahead of the editable install: serve runs that code
        proc, base = start_serve(env, tmp)
        try:
            deadline = time.monotonic() + 60
            while httpx.get(base + "/readyz").json().get("state") != "waiting-for-lease":
                if time.monotonic() > deadline:
                    raise SystemExit("serve's writer did not reach waiting-for-lease")
                time.sleep(0.05)
            count = int(args.rate * args.seconds)
            people = [person(i) for i in range(count)]
            threads_start, cpu_start = thread_times(proc.pid), cpu_seconds(proc.pid)
            sent = send_all(base + "/webhooks/twenty", people, count, first_index=0,
                            concurrency=args.connections, rate=args.rate)
            cpu, threads_end = cpu_seconds(proc.pid) - cpu_start, thread_times(proc.pid)
            status = httpx.get(base + "/status").json()
        finally:
            proc.terminate()
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
    acked = len(sent.acked_at)
    span = max(sent.acked_at) - min(sent.acked_at)
    commits = status.get("receiver", {}).get("commits")
    per_commit = f"{status['inbox']['pending'] / commits:.1f}" if commits else "1 (no group commit)"
    return (f"| {code} | {acked} | {acked / span:.0f} | {pct(sent.latencies_ms, 50):.1f} ms | "
            f"{pct(sent.latencies_ms, 99):.1f} ms | {max(sent.latencies_ms):.1f} ms | {sent.refused} | "
            f"{cpu / max(1, acked) * 1000:.2f} ms | {split_by_thread(proc.pid, threads_start, threads_end, max(1, acked))} "
            f"| {per_commit} | {load_start:.1f} -> {os.getloadavg()[0]:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=1000)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--before", help="also run serve from this git revision first, for a side-by-side table")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as exported, \
            SandboxServer(SandboxConfig(api_keys=["bench-key"], rate_limit_per_minute=None)) as sandbox:
        if args.before:
            commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", args.before], check=True,
                                    capture_output=True, text=True).stdout.strip()
            rows.append(run_side(args, f"before ({commit})", export_code(args.before, Path(exported) / "before"),
                                 sandbox))
        rows.append(run_side(args, "after" if args.before else "this checkout", None, sandbox))
    print(f"Paced at {args.rate:.0f} events/s for {args.seconds:.0f} s over {args.connections} connections; "
          f"{os.cpu_count()} cores; serve's writer idle (lease held elsewhere).\n")
    print("| code | acknowledged | acknowledged/s | ack p50 | ack p99 | ack max | refused | server CPU per event "
          "| event loop thread: CPU, switches per event | other threads: CPU, switches per event "
          "| deliveries per inbox commit | load average (1 min, start -> end) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for row in rows:
        print(row)


if __name__ == "__main__":
    main()
