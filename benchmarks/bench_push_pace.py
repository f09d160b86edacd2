"""Requests per minute a first push sustains against a rate-limited, slow Twenty, before and after.

Why it exists (issue 22): with a server that allows 600 requests a minute and answers in 600 ms, a
push should keep the server's budget busy (at least 95 % of 600/min); when it does not, the sync
process itself (reading the warehouse, mapping rows, bookkeeping) sets the pace. For each code tree
(`--before`, a git ref exported with `git archive`, and this checkout), a real first `run_sync`
runs on its own copy of one generated DuckDB file, against its own fresh bundled sandbox in
another process (`--limit` requests/min with a bucket of `--burst`, `--latency-ms` on every API
request). The client is given the same limit and bucket and its default concurrency. The figure
is requests per minute over the window that starts at the
first request after which the client's bucket held less than one token (replayed from the times
the client took its tokens, so at most one saved token counts) and ends with the last request. Run by hand:

    .venv/bin/python benchmarks/bench_push_pace.py --before main --contacts 50000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _support() -> Any:
    """bench_support, for the driver only (the step's sys.path must hold the tree it measures)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import bench_support

    return bench_support


def _crm_schema() -> Any:
    """The CRM schema module of the tree on sys.path (it moved to truth_forge.core; a 'before' may predate that)."""
    try:
        from truth_forge.core import crm_schema
    except ImportError:
        from truth_forge import crm_schema  # type: ignore[no-redef]
    return crm_schema


def step_prepare(path: str, contacts: int) -> dict[str, Any]:
    from truth_forge.warehouse import open_warehouse
    from truth_forge.warehouse.sample_data import generate_sample_data

    with open_warehouse(f"duckdb:///{path}") as wh:
        report = generate_sample_data(wh, contacts, max(1, contacts // 20), seed=11)
    return {"businesses": report.businesses}


def step_sync(path: str, base_url: str, api_key: str, limit: int, burst: int, url_options: str) -> dict[str, Any]:
    """One first sync with the code on sys.path (PYTHONPATH picks the tree)."""
    import truth_forge
    from truth_forge.sync.runner import run_sync
    from truth_forge.twenty import TwentyClient
    from truth_forge.warehouse import open_warehouse

    load_before = os.getloadavg()
    with open_warehouse(f"duckdb:///{path}{url_options}") as wh, \
            TwentyClient(base_url, api_key, batch_size=200, requests_per_minute=limit, burst=burst) as client:
        # When the client takes each token (a request's departure as its bucket sees it): the window
        # starts where that bucket is first empty (bench_support.bucket_empty_from).
        taken: list[float] = []
        take = client.transport.budget.acquire

        def acquire() -> None:
            take()
            taken.append(time.monotonic())

        client.transport.budget.acquire = acquire
        cpu0, main0, wall0 = time.process_time(), time.thread_time(), time.perf_counter()
        result = run_sync(wh, client, _crm_schema().CrmSchema.load())
        cpu, wall, main_thread = time.process_time() - cpu0, time.perf_counter() - wall0, time.thread_time() - main0
    load_after = os.getloadavg()
    return {"code": str(Path(truth_forge.__file__).resolve().parents[1]), "status": result.status,
            "cpu_s": round(cpu, 2), "main_thread_cpu_s": round(main_thread, 2), "wall_s": round(wall, 1),
            "load": f"{load_before[0]:.2f} -> {load_after[0]:.2f}", "taken": taken,
            "most_on_the_wire": client.transport.gate.peak}


def run_one(ns: argparse.Namespace, code: Path, data: Path, tmp: Path, label: str) -> dict[str, Any]:
    support = _support()
    copy = tmp / f"{label}.duckdb"
    shutil.copyfile(data, copy)
    with support.SandboxProcess(rate_limit=ns.limit, burst=ns.burst) as sandbox:
        with _tree(ROOT):
            setup = support.run_step(__file__, ns.timeout, "setup", sandbox.base_url, sandbox.api_key,
                                     cwd=tempfile.gettempdir())
        if "failed" in setup:
            return setup
        sandbox.set_latency(ns.latency_ms)
        mark = sandbox.mark()
        with _tree(code):
            result = support.run_step(__file__, ns.timeout, "sync", str(copy), sandbox.base_url, sandbox.api_key,
                                      str(ns.limit), str(ns.burst), ns.url_options, cwd=tempfile.gettempdir())
        entries = sandbox.since(mark)
    copy.unlink(missing_ok=True)
    if ns.timeline:
        ns.timeline.mkdir(parents=True, exist_ok=True)
        (ns.timeline / f"{label}.json").write_text(json.dumps(entries))
    if "failed" in result:
        return result
    if Path(result["code"]) != code.resolve():
        raise SystemExit(f"the {label} run imported truth_forge from {result['code']}, not {code}")
    taken = result.pop("taken")
    # From the first token after which the client's bucket (given --burst) held less than one, so the
    # next request had to wait for a token earned later; timed by the client's tokens. At most one
    # saved token, and no lag of a busy sandbox, can lift the figure.
    start = support.bucket_empty_from(taken, ns.burst, ns.limit, below=1.0)
    if start is None or len(taken) - start < 10:
        start, result["never_paced"] = 0, True
    records_per_minute, requests, seconds = support.paced_rate(taken, entries, start)
    result.update(requests=len(entries), rate_limited=support.count_status(entries, 429), window_from=start,
                  window_requests=requests, window_seconds=round(seconds, 1),
                  requests_per_minute=round(requests * 60 / seconds, 1), records_per_minute=round(records_per_minute))
    return result


class _tree:
    """PYTHONPATH set to one code tree for the steps started inside."""

    def __init__(self, code: Path) -> None:
        self.code = code

    def __enter__(self) -> None:
        os.environ["PYTHONPATH"] = str(self.code)

    def __exit__(self, *exc: object) -> None:
        os.environ.pop("PYTHONPATH", None)


def step_setup(base_url: str, api_key: str) -> dict[str, Any]:
    from truth_forge.twenty import TwentyClient

    schema = _crm_schema()
    with TwentyClient(base_url, api_key, requests_per_minute=1e9) as client:
        schema.setup_schema(client, schema.CrmSchema.load())
    return {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contacts", type=int, default=50_000)
    parser.add_argument("--url-options", default="", help="appended to the DuckDB URL, e.g. '?memory_limit=1GB'")
    parser.add_argument("--before", default="main", help="git ref of the 'before' code (default main)")
    parser.add_argument("--only", choices=("before", "after"), help="run one side only")
    parser.add_argument("--limit", type=int, default=600, help="requests per minute, server and client")
    parser.add_argument("--burst", type=int, default=20, help="the bucket, server and client")
    parser.add_argument("--latency-ms", type=float, default=600)
    parser.add_argument("--timeline", type=Path, help="write each side's request log here (<side>.json)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per step before it is stopped")
    parser.add_argument("--step", help=argparse.SUPPRESS)
    parser.add_argument("args", nargs="*", help=argparse.SUPPRESS)
    ns = parser.parse_args()
    if ns.step:
        a = ns.args
        steps = {"prepare": lambda: step_prepare(a[0], int(a[1])), "setup": lambda: step_setup(a[0], a[1]),
                 "sync": lambda: step_sync(a[0], a[1], a[2], int(a[3]), int(a[4]), a[5] if len(a) > 5 else "")}
        print(json.dumps(steps[ns.step]()))
        return
    support = _support()
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", ns.before], check=True,
                            capture_output=True, text=True).stdout.strip()
    print(f"# {support.machine_line()}; {ns.contacts:,} contacts, sandbox and client {ns.limit}/min, bucket "
          f"{ns.burst}, +{ns.latency_ms:.0f} ms a request, batch 200; before = {ns.before} ({commit}), "
          f"after = this checkout", flush=True)
    print("| code | requests | 429s | window (requests from) | steady requests/min (% of limit) | steady records/min "
          "| sync wall (s) | sync CPU (s) | main thread CPU (s) | most on the wire | load avg (1 min, start -> end) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench_push_pace_") as tmp_name:
        tmp = Path(tmp_name)
        codes = {"after": ROOT}
        sides = [s for s in ("before", "after") if ns.only in (None, s)]
        if "before" in sides:
            codes["before"] = support.export_code(ns.before, tmp / "before")
        data = tmp / "data.duckdb"
        with _tree(ROOT):
            prep = support.run_step(__file__, ns.timeout, "prepare", str(data), str(ns.contacts),
                                    cwd=tempfile.gettempdir())
        if "failed" in prep:
            raise SystemExit(f"preparing failed: {prep['failed']}")
        for side in sides:
            r = run_one(ns, codes[side], data, tmp, side)
            if "failed" in r:
                print(f"| {side}: {r['failed']} | | | | | | | | | | |", flush=True)
                continue
            paced = "never paced: the whole run" if r.get("never_paced") else str(r["window_from"])
            print(f"| {side} | {r['requests']} | {r['rate_limited']} | {paced} | **{r['requests_per_minute']}** "
                  f"({r['requests_per_minute'] / ns.limit * 100:.1f} %) | {r['records_per_minute']:,} | {r['wall_s']} "
                  f"| {r['cpu_s']} | {r['main_thread_cpu_s']} | {r['most_on_the_wire']} | {r['load']} |", flush=True)
            print(f"<!-- {side}: {json.dumps(r)} -->", flush=True)


if __name__ == "__main__":
    main()
