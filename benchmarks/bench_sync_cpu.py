"""Records per CPU-second of the sync process in a first push, before and after, side by side.

Why it exists (issue 22): against a Twenty that does not rate-limit, truth-forge's own CPU is the
ceiling of a push. For each size, sample data is generated once into a DuckDB file; then each code
tree (`--before`, a git ref exported with `git archive`, and this checkout) runs a real first
`run_sync` on its own copy of that file, against its own fresh bundled sandbox (rate limit off, in
another process: its CPU is reported apart). The figure is the records written (people +
companies) over the CPU seconds of the sync process (`time.process_time` around `run_sync`: every
thread of the process, DuckDB's and the request pool's included). Runs alternate before/after so a
change of machine load hits both. Run by hand (not part of the test suite):

    .venv/bin/python benchmarks/bench_sync_cpu.py --before e9762fa --sizes 50000
    .venv/bin/python benchmarks/bench_sync_cpu.py --sizes 30000 --only after --profile /tmp/push.prof

`--profile` runs the sync under cProfile (slower: for finding the lines, not for figures) and
prints the top functions by own time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
API_KEY = "bench-memory-key"  # bench_memory's sandbox is started with it


def _bench_memory() -> Any:
    """bench_memory's sandbox helpers, for the driver only: importing that module puts this checkout
    first on sys.path, which a step running another tree's code must not get."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import bench_memory

    assert bench_memory.API_KEY == API_KEY
    return bench_memory


def _sub(timeout: float, step: str, *args: str) -> dict[str, Any]:
    """A step of this script in a fresh process (PYTHONPATH, set by the caller, picks the code tree)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))  # the driver's import only, as in _bench_memory
    from bench_support import run_step

    return run_step(__file__, timeout, step, *args, cwd=tempfile.gettempdir())


def step_prepare(path: str, contacts: int) -> dict[str, Any]:
    from truth_forge.warehouse import open_warehouse
    from truth_forge.warehouse.sample_data import generate_sample_data

    with open_warehouse(f"duckdb:///{path}") as wh:
        report = generate_sample_data(wh, contacts, max(1, contacts // 20), seed=11)
    return {"businesses": report.businesses}


def _task_cpu(tid: int) -> float | None:
    """User + system CPU seconds of one thread of this process, from /proc (None: it has ended)."""
    try:
        fields = Path(f"/proc/self/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _native_thread_cpu() -> dict[int, float]:
    """CPU seconds of each thread of this process that Python did not start (DuckDB's workers), by
    thread id, from /proc (empty where there is none)."""
    import threading

    python_threads = {t.native_id for t in threading.enumerate()}
    out: dict[int, float] = {}
    try:
        tids = [int(name) for name in os.listdir("/proc/self/task")]
    except OSError:
        return out
    for tid in tids:
        cpu = None if tid in python_threads else _task_cpu(tid)
        if cpu is not None:  # a Python thread, or one that ended meanwhile
            out[tid] = cpu
    return out


class _PythonThreadCpu:
    """CPU seconds of the Python threads other than the caller's, summed by name without its number
    (the request pool's, the read-ahead's, ...), from /proc. A thread's figure is its last reading,
    taken every 0.1 s while the run lasts, so a thread that ends before the run does still counts
    (its last 0.1 s excepted)."""

    def __init__(self) -> None:
        import threading

        self._caller = threading.current_thread()
        self._sampler: threading.Thread | None = None
        self._start = {tid: cpu for tid, (_, cpu) in self._read().items()}
        self._seen: dict[int, tuple[str, float]] = {}
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample, name="bench-sampler", daemon=True)
        self._sampler.start()

    def _read(self) -> dict[int, tuple[str, float]]:
        """(name without its number, CPU seconds) of each live Python thread but the caller's and the sampler."""
        import threading

        out: dict[int, tuple[str, float]] = {}
        for thread in threading.enumerate():
            if thread in (self._caller, self._sampler) or thread.native_id is None:
                continue
            cpu = _task_cpu(thread.native_id)
            if cpu is not None:  # None: ended meanwhile
                out[thread.native_id] = (thread.name.rstrip("0123456789_-") or thread.name, cpu)
        return out

    def _sample(self) -> None:
        while not self._stop.wait(0.1):
            self._seen.update(self._read())

    def stop(self) -> dict[str, float]:
        self._stop.set()
        if self._sampler is not None:
            self._sampler.join()
        self._seen.update(self._read())
        out: dict[str, float] = {}
        for tid, (name, cpu) in self._seen.items():
            out[name] = round(out.get(name, 0.0) + cpu - self._start.get(tid, 0.0), 2)
        return out


def _bound_heap_as_the_cli_does() -> None:
    """`truth-forge` bounds the C heap before any thread starts (cli/main.py); this step starts
    threads of its own before `run_sync` does it, so it does it first, as the command would. Code
    from before `bound_heap` existed (a --before tree) runs as it is."""
    from truth_forge.core import memory

    bound = getattr(memory, "bound_heap", None)
    if bound is not None:
        bound()


def step_sync(path: str, base_url: str, batch_size: int, profile: str, url_options: str) -> dict[str, Any]:
    """One first sync with the code on sys.path (PYTHONPATH picks the tree), measuring its CPU."""
    _bound_heap_as_the_cli_does()
    import truth_forge
    from truth_forge.core.crm_schema import CrmSchema, setup_schema
    from truth_forge.sync.context import SyncEvent
    from truth_forge.sync.runner import run_sync
    from truth_forge.twenty import TwentyClient
    from truth_forge.warehouse import open_warehouse

    written = {"person": 0, "company": 0}

    def on_event(event: SyncEvent) -> None:
        if event.kind == "batch_written" and event.object_type in written:
            written[event.object_type] += event.count

    with TwentyClient(base_url, API_KEY, requests_per_minute=1e9) as client:
        setup_schema(client, CrmSchema.load())
    load_before = os.getloadavg()
    with open_warehouse(f"duckdb:///{path}{url_options}") as wh, \
            TwentyClient(base_url, API_KEY, batch_size=batch_size, requests_per_minute=1e9) as client:
        profiler = None
        if profile:
            import cProfile

            # The wall clock (a CPU clock per call costs a system call: it would triple the run);
            # the main thread's waits show as such (lock acquire, future result).
            profiler = cProfile.Profile()
        engine0 = _native_thread_cpu()
        python_threads = _PythonThreadCpu()
        cpu0, main0, wall0 = time.process_time(), time.thread_time(), time.perf_counter()
        if profiler is not None:
            profiler.enable()
        result = run_sync(wh, client, CrmSchema.load(), on_event=on_event)
        if profiler is not None:
            profiler.disable()
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        main_thread = time.thread_time() - main0
        # DuckDB's own threads (its workers live as long as the database): what the engine spent.
        engine = sum(t - engine0.get(tid, 0.0) for tid, t in _native_thread_cpu().items())
        threads = python_threads.stop()
    load_after = os.getloadavg()
    if profiler is not None:
        profiler.dump_stats(profile)
    records = written["person"] + written["company"]
    return {"code": str(Path(truth_forge.__file__).resolve().parents[1]), "status": result.status,
            "people": written["person"], "companies": written["company"], "errors": result.counts.get("errors"),
            "cpu_s": round(cpu, 2), "main_thread_cpu_s": round(main_thread, 2),
            "engine_threads_cpu_s": round(engine, 2), "python_threads_cpu_s": threads, "wall_s": round(wall, 1), "records_per_cpu_s": round(records / cpu) if cpu else None,
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "load": f"{load_before[0]:.2f} -> {load_after[0]:.2f}",
            # What failed, when something did (a figure from a partial run is not comparable).
            "first_errors": sorted({f"{e.get('error_class')}: {str(e.get('error_message'))[:300]}"
                                    for e in result.sync_errors})[:3]}


def run_one(code: Path, data: Path, tmp: Path, label: str, batch_size: int, timeout: float,
            profile: str, url_options: str) -> dict[str, Any]:
    copy = tmp / f"{label}.duckdb"
    shutil.copyfile(data, copy)
    helpers = _bench_memory()
    sandbox, url = helpers._start_sandbox(tmp / f"sandbox-{label}.log")
    try:
        env_path = str(code)
        os.environ["PYTHONPATH"] = env_path  # _sub's child inherits it: that tree's truth_forge is imported
        sandbox_cpu0 = helpers._cpu_seconds(sandbox.pid) or 0.0
        result = _sub(timeout, "sync", str(copy), url, str(batch_size), profile, url_options)
        sandbox_cpu = helpers._cpu_seconds(sandbox.pid)
        if "code" in result and Path(result["code"]) != code.resolve():
            raise SystemExit(f"the {label} run imported truth_forge from {result['code']}, not {code}")
        result["sandbox_cpu_s"] = None if sandbox_cpu is None else round(sandbox_cpu - sandbox_cpu0, 1)
        return result
    finally:
        os.environ.pop("PYTHONPATH", None)
        sandbox.terminate()
        sandbox.wait(30)
        copy.unlink(missing_ok=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[50_000], help="contacts per run (default 50000)")
    parser.add_argument("--before", default="main", help="git ref of the 'before' code (default main)")
    parser.add_argument("--only", choices=("before", "after"), help="run one side only")
    parser.add_argument("--batch-size", type=int, default=200, help="records per Twenty write (default 200)")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per step before it is stopped")
    parser.add_argument("--url-options", default="", help="appended to the DuckDB URL, e.g. '?memory_limit=1GB'")
    parser.add_argument("--profile", default="", help="cProfile the sync into this file (one side only)")
    parser.add_argument("--step", help=argparse.SUPPRESS)
    parser.add_argument("args", nargs="*", help=argparse.SUPPRESS)
    ns = parser.parse_args()
    if ns.step:
        a = ns.args
        result = step_prepare(a[0], int(a[1])) if ns.step == "prepare" else step_sync(a[0], a[1], int(a[2]), a[3], a[4])
        print(json.dumps(result))
        return
    if ns.url_options and not ns.url_options.startswith("?"):
        ns.url_options = "?" + ns.url_options.lstrip("&")  # glued to the file path: without "?" it names another file
    if ns.profile and not ns.only:
        parser.error("--profile needs --only (one side)")

    import duckdb

    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", ns.before], check=True,
                            capture_output=True, text=True).stdout.strip()
    print(f"# {platform.machine()}, {len(os.sched_getaffinity(0))} cores, "
          f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB RAM, "
          f"Python {platform.python_version()}, duckdb {duckdb.__version__}, batch {ns.batch_size}, "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, url options {ns.url_options or '(defaults)'}; before = {ns.before} ({commit}), after = this checkout",
          flush=True)
    print("| contacts | code | records written | sync CPU (s) | main thread CPU (s) | DuckDB workers CPU (s) "
          "| records / CPU-s | wall (s) | sandbox CPU (s) | peak RSS (MiB) | load avg (1 min, start -> end) |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|", flush=True)
    sides = [s for s in ("before", "after") if ns.only in (None, s)]
    details = []
    with tempfile.TemporaryDirectory(prefix="bench_sync_cpu_") as tmp_name:
        tmp = Path(tmp_name)
        codes = {"after": ROOT}
        if "before" in sides:
            sys.path.insert(0, str(ROOT / "benchmarks"))  # the driver's import only, as in _sub
            from bench_support import export_code

            codes["before"] = export_code(ns.before, tmp / "before")
        for n in ns.sizes:
            data = tmp / f"data-{n}.duckdb"
            os.environ["PYTHONPATH"] = str(ROOT)
            prep = _sub(ns.timeout, "prepare", str(data), str(n))
            os.environ.pop("PYTHONPATH", None)
            if "failed" in prep:
                print(f"| {n:,} | preparing failed: {prep['failed']} | | | | | | | | | |", flush=True)
                continue
            for side in sides:
                r = run_one(codes[side], data, tmp, side, ns.batch_size, ns.timeout, ns.profile, ns.url_options)
                r.update(contacts=n, side=side)
                details.append(r)
                if "failed" in r:
                    print(f"| {n:,} | {side}: {r['failed']} | | | | | | | | | |", flush=True)
                    continue
                print(f"| {n:,} | {side} | {r['people'] + r['companies']:,} | {r['cpu_s']} | {r['main_thread_cpu_s']} | "
                      f"{r.get('engine_threads_cpu_s', '')} | "
                      f"**{r['records_per_cpu_s']:,}** | {r['wall_s']} | {r['sandbox_cpu_s']} | {r['peak_rss_mib']} "
                      f"| {r['load']} |", flush=True)
            data.unlink(missing_ok=True)
    for r in details:
        print(f"\n<!-- {r['contacts']:,} {r['side']}: {json.dumps(r)} -->")
    if ns.profile:
        import pstats

        pstats.Stats(ns.profile).sort_stats("tottime").print_stats(50)


if __name__ == "__main__":
    main()
