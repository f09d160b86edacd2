"""What the rolling sweep (truth_forge/sync/sweep.py) costs, and how long an edit it exists for waits.

Against the bundled sandbox (rate limit off) and a fresh DuckDB file: a first sync of N contacts,
then one simulated window of runs `--interval-minutes` apart (the sweep follows a clock this script
moves; nothing sleeps). Before every run, one contact truth-forge wrote last is edited the way an
older workflow step edits it (`/_sandbox/unstamped`, which leaves `updatedBy` on our key), at a
random moment since the previous run, so the incremental pull never sees it; the script notes
when each edit reaches the warehouse. Then one `sync --full` for comparison.

Prints a Markdown table for BENCHMARKS.md: the sweep's requests per run (largest, mean, and over
the whole window), the longest and mean wait of those edits, and the figures for `--project`
contacts computed from the measured cost per page and the settings (see `project`).

    .venv/bin/python benchmarks/bench_sweep.py --contacts 10000 --project 1000000
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import math
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from truth_forge.core.crm_schema import CrmSchema, setup_schema  # noqa: E402
from truth_forge.sandbox import SandboxConfig, SandboxServer  # noqa: E402
from truth_forge.sync.pull import PAGE_SIZE  # noqa: E402
from truth_forge.sync.runner import run_sync  # noqa: E402
from truth_forge.sync.sweep import OFF, SweepPolicy  # noqa: E402
from truth_forge.twenty import TwentyClient  # noqa: E402
from truth_forge.warehouse import open_warehouse  # noqa: E402
from truth_forge.warehouse.sample_data import generate_sample_data  # noqa: E402

TWENTY_REQUESTS_PER_MINUTE = 100


class Clock:
    def __init__(self, start: dt.datetime) -> None:
        self.now = start

    def __call__(self) -> dt.datetime:
        return self.now


def measure(contacts: int, window: dt.timedelta, interval: dt.timedelta, cap: int, seed: int) -> dict[str, Any]:
    schema = CrmSchema.load()
    rng = random.Random(seed)
    clock = Clock(dt.datetime(2026, 12, 1, tzinfo=dt.UTC))
    policy = SweepPolicy(window=window, max_requests=cap, clock=clock)
    per_run: list[int] = []
    waits: list[dt.timedelta] = []
    sweep_seconds: list[float] = []
    statements: dict[bool, list[int]] = {True: [], False: []}  # warehouse statements of runs that swept / did not
    records_read = 0
    with tempfile.TemporaryDirectory() as tmp, \
            SandboxServer(SandboxConfig(api_keys=["bench-key"], rate_limit_per_minute=None)) as sandbox, \
            open_warehouse(f"duckdb:///{Path(tmp) / 'bench.duckdb'}") as warehouse, \
            TwentyClient(sandbox.base_url, "bench-key", batch_size=200, requests_per_minute=1e9) as client, \
            httpx.Client(base_url=sandbox.base_url, headers={"Authorization": "Bearer bench-key"}) as control:
        setup_schema(client, schema)
        generate_sample_data(warehouse, contacts, max(1, contacts // 20), seed=1)
        first = run_sync(warehouse, client, schema, sweep=policy)  # the walk begins at the clock's start
        if first.status != "succeeded":
            raise SystemExit(f"first sync {first.status}: {first.sync_errors[:3]}")
        ids = {int(r["contactId"]): r["id"] for r in client.records.iter_records("people", fields=["id", "contactId"])}
        untouched = rng.sample(sorted(ids), k=min(len(ids), int(window / interval) * 2 + 4))
        pending: dict[int, tuple[str, dt.datetime]] = {}  # contact -> (value, when it was edited)
        runs = int(window / interval) + 1
        for n in range(1, runs + 1):
            previous = clock.now
            key = untouched.pop()
            value = f"SWEEP_{n}"
            # Unstamped (an older workflow step), at a random moment since the last run.
            control.patch(f"/_sandbox/unstamped/people/{ids[key]}", json={"subcategoryCode": value}).raise_for_status()
            pending[key] = (value, previous + interval * rng.random())
            clock.now = previous + interval
            started = time.perf_counter()
            result = run_sync(warehouse, client, schema, sweep=policy)
            elapsed = time.perf_counter() - started
            if result.status != "succeeded":
                raise SystemExit(f"run {n}: sync {result.status}: {result.sync_errors[:3]}")
            swept = [result.counts.get(f"sweep_{o}", {}) for o in ("company", "person")]
            spent = sum(s.get("requests", 0) for s in swept)
            per_run.append(spent)
            records_read += sum(s.get("read", 0) for s in swept)
            if spent:
                sweep_seconds.append(elapsed)
            statements[bool(spent)].append(result.counts["warehouse_statements"])
            rows = {r["contact_id"]: r for r in warehouse.get_rows("person", list(pending))}
            for arrived in [k for k, (v, _) in pending.items() if rows[k]["subcategory_code"] == v]:
                waits.append(clock.now - pending.pop(arrived)[1])
        # Edits the first window left: keep running until they arrive (bounded: one more window).
        for _ in range(runs):
            if not pending:
                break
            clock.now += interval
            run_sync(warehouse, client, schema, sweep=policy)
            rows = {r["contact_id"]: r for r in warehouse.get_rows("person", list(pending))}
            for arrived in [k for k, (v, _) in pending.items() if rows[k]["subcategory_code"] == v]:
                waits.append(clock.now - pending.pop(arrived)[1])
        started = time.perf_counter()
        full = run_sync(warehouse, client, schema, full=True, sweep=OFF)
        full_seconds = time.perf_counter() - started
    return {"contacts": contacts, "runs": runs, "per_run": per_run, "waits": waits, "missing": len(pending),
            "records_read": records_read, "full_requests": full.counts["requests"], "full_seconds": full_seconds,
            "seconds_per_sweep_run": statistics.mean(sweep_seconds) if sweep_seconds else 0.0,
            "statements": {k: statistics.mean(v) if v else 0.0 for k, v in statements.items()}}


def project(contacts: int, window: dt.timedelta, interval: dt.timedelta, cap: int) -> dict[str, Any]:
    """The same figures computed, not measured: one request reads PAGE_SIZE records (the measured
    run shows it), the walk reads every person and company once a window (N and N/20), spread evenly
    over the runs; when that is more than the cap a run may spend, the walk takes longer than the
    window: pages / cap runs. The longest wait is one walk, plus one run interval (the edit landed
    just after the run that passed its record), plus one page's share of the walk (the sweep reads
    whole pages until the window is over)."""
    people_pages = math.ceil(contacts / PAGE_SIZE)
    pages = people_pages + math.ceil(max(1, contacts // 20) / PAGE_SIZE)
    runs = window / interval
    per_run = pages / runs
    walk = window if per_run <= cap else interval * math.ceil(pages / cap)
    return {"pages": pages, "per_run": per_run, "longest_wait": walk + interval + walk / people_pages,
            "full_requests": pages}  # a full pass reads every page once (measured: 53 at 10,000)


def hours(span: dt.timedelta) -> str:
    return f"{span.total_seconds() / 3600:.1f} h"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=10_000)
    parser.add_argument("--project", type=int, nargs="*", default=[1_000_000])
    parser.add_argument("--window-hours", type=float, default=24.0)
    parser.add_argument("--interval-minutes", type=float, default=10.0)
    parser.add_argument("--max-requests", type=int, default=50)
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    window, interval = dt.timedelta(hours=args.window_hours), dt.timedelta(minutes=args.interval_minutes)
    print(f"Machine: {platform.machine()}, {platform.python_implementation()} {platform.python_version()}, "
          f"{len(os.sched_getaffinity(0))} cores; window {hours(window)}, runs every {args.interval_minutes:g} min, "
          f"cap {args.max_requests} requests a run")
    m = measure(args.contacts, window, interval, args.max_requests, args.seed)
    waits = m["waits"]
    print(f"\nMeasured at {m['contacts']:,} contacts ({m['runs']} runs, {len(waits)} unstamped edits, "
          f"{m['missing']} never arrived):\n")
    print("| contacts | sweep requests per run (max / mean) | sweep requests over the window | records re-read | "
          "longest wait of a skipped edit | mean wait | `sync --full`: requests | `sync --full` at 100 req/min |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    print(f"| {m['contacts']:,} | {max(m['per_run'])} / {statistics.mean(m['per_run']):.2f} | {sum(m['per_run'])} | "
          f"{m['records_read']:,} | {hours(max(waits))} | {hours(sum(waits, dt.timedelta()) / len(waits))} | "
          f"{m['full_requests']} | {m['full_requests'] * 60 / TWENTY_REQUESTS_PER_MINUTE / 60:.1f} min |")
    print(f"\nLocal time of a run that swept (sandbox + DuckDB, this machine): {m['seconds_per_sweep_run']:.2f} s; "
          f"`sync --full`: {m['full_seconds']:.1f} s")
    print(f"Warehouse statements per run (mean; each run also merges its one unstamped edit once it is found): "
          f"{m['statements'][True]:.1f} when it swept, {m['statements'][False]:.1f} when it did not")
    for contacts in args.project:
        p = project(contacts, window, interval, args.max_requests)
        print(f"\nComputed at {contacts:,} contacts: {p['pages']:,} pages a walk; "
              f"{p['per_run']:.1f} sweep requests a run (cap {args.max_requests}); longest wait "
              f"{hours(p['longest_wait'])}; `sync --full` ≈ {p['full_requests']:,} requests "
              f"({p['full_requests'] / TWENTY_REQUESTS_PER_MINUTE:.0f} min at 100 req/min)")


if __name__ == "__main__":
    main()
