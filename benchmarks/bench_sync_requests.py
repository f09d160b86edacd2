"""What a sync costs in Twenty API requests, the real limit of this system (about 100 a minute).

Runs the sync against the bundled sandbox (rate limit off, so the run measures requests and local
time rather than waiting) on a fresh DuckDB file: a first full push, a rerun with nothing changed,
and a rerun after 1% of contacts changed. Prints a Markdown table for BENCHMARKS.md.

    .venv/bin/python benchmarks/bench_sync_requests.py --contacts 1000 10000 --batch-sizes 60 200
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from truth_forge.core.crm_schema import CrmSchema, setup_schema  # noqa: E402
from truth_forge.sandbox import SandboxConfig, SandboxServer  # noqa: E402
from truth_forge.sync.pull import DEFAULT_OVERLAP  # noqa: E402
from truth_forge.sync.runner import run_sync  # noqa: E402
from truth_forge.twenty import TwentyClient  # noqa: E402
from truth_forge.warehouse import open_warehouse  # noqa: E402
from truth_forge.warehouse.sample_data import generate_sample_data  # noqa: E402

TWENTY_REQUESTS_PER_MINUTE = 100


def measure(contacts: int, batch_size: int) -> list[tuple[str, int, float]]:
    schema = CrmSchema.load()
    results = []
    with tempfile.TemporaryDirectory() as tmp, \
            SandboxServer(SandboxConfig(api_keys=["bench-key"], rate_limit_per_minute=None)) as sandbox, \
            open_warehouse(f"duckdb:///{Path(tmp) / 'bench.duckdb'}") as warehouse, \
            TwentyClient(sandbox.base_url, "bench-key", batch_size=batch_size, requests_per_minute=1e9) as client:
        setup_schema(client, schema)
        generate_sample_data(warehouse, contacts, max(1, contacts // 20), seed=1)
        runs = (("first sync", None, DEFAULT_OVERLAP), ("rerun, nothing changed", None, DEFAULT_OVERLAP),
                ("rerun, 1% changed", 0.01, DEFAULT_OVERLAP),
                ("rerun, nothing changed, overlap window passed", None, dt.timedelta(0)))
        for label, change, overlap in runs:
            if change:
                step = int(1 / change)
                warehouse.upsert_contacts([{"contact_id": i, "category_code": "X"} for i in range(1, contacts + 1, step)])
            started = time.perf_counter()
            result = run_sync(warehouse, client, schema, pull_overlap=overlap)
            elapsed = time.perf_counter() - started
            if result.status != "succeeded":
                raise SystemExit(f"{label}: sync {result.status}: {result.sync_errors[:3]}")
            results.append((label, result.counts["requests"], elapsed))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[60, 200])
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    print(f"Machine: {platform.machine()}, {platform.python_implementation()} {platform.python_version()}, "
          f"{len(__import__('os').sched_getaffinity(0))} cores")
    print("| contacts | businesses | batch size | run | requests | local time (s) | time at 100 req/min |")
    print("|---:|---:|---:|---|---:|---:|---:|")
    for contacts in args.contacts:
        for batch_size in args.batch_sizes:
            for label, requests, elapsed in measure(contacts, batch_size):
                at_limit = max(0.0, (requests - 90) * 60 / TWENTY_REQUESTS_PER_MINUTE)  # 90 = client burst
                print(f"| {contacts:,} | {max(1, contacts // 20):,} | {batch_size} | {label} | {requests} | "
                      f"{elapsed:.2f} | {at_limit / 60:.1f} min |")


if __name__ == "__main__":
    main()
