"""Peak memory of the sync process during a first push of N contacts, and how it grows with N.

Why it exists: the goal is a 1M-contact first push under 500 MB of peak RSS, flat in N. Each size
runs in fresh processes: the bundled sandbox in one (its memory does not count; rate limit off),
sample data generated in another (its memory does not count either), then the real
`run_sync` in a third, which samples its own RSS (/proc/self/status) every 0.2 s and at every
written batch, and reports ru_maxrss at the end. Run by hand (not part of the test suite):

    .venv/bin/python benchmarks/bench_memory.py                 # quick: 10k and 100k contacts
    .venv/bin/python benchmarks/bench_memory.py --full          # adds 1M
    .venv/bin/python benchmarks/bench_memory.py --sizes 20000 --trace   # + where Python memory is

The growth column is the slope of RSS against records written during the person push (second
half of it, after the start-up allocations), in MiB per 1,000 records. `--trace` adds a
tracemalloc snapshot at the end of the person push (slow: for finding the lines, not for figures).
The details after the table: where the threads were at each new RSS high, and every second
RSS beside DuckDB's `duckdb_memory()` by tag, glibc's mallinfo2 and the journal's read cache.
Every step has a time limit (`--timeout`, per size); a step that runs over is killed and reported.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_support import proc_status_mib, run_step  # noqa: E402

API_KEY = "bench-memory-key"
GOAL_MB = 500
SAMPLE_EVERY_S = 0.2


def _rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _malloc_mib() -> dict[str, float]:
    """glibc's own account (mallinfo2): what its heaps hold from the OS, and how much of it is in use
    (the rest is free inside the heaps: fragmentation, or memory not yet given back)."""
    import ctypes

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = MallInfo2
        info = libc.mallinfo2()
    except (OSError, AttributeError):
        return {}
    return {"malloc_heap": round(info.arena / 2**20, 1), "malloc_mmap": round(info.hblkhd / 2**20, 1),
            "malloc_used": round((info.uordblks + info.hblkhd) / 2**20, 1), "malloc_free": round(info.fordblks / 2**20, 1)}


def _where() -> str:
    """The innermost truth_forge frames of each thread but the sampler's: what runs right now."""
    me = threading.get_ident()
    out = []
    for ident, frame in sys._current_frames().items():
        if ident == me:
            continue
        names: list[str] = []
        f: Any = frame
        while f is not None and len(names) < 3:
            if "truth_forge" in f.f_code.co_filename:
                names.append(f"{Path(f.f_code.co_filename).stem}.{f.f_code.co_name}:{f.f_lineno}")
            f = f.f_back
        if names:
            out.append(" < ".join(names))
    return " | ".join(out)


# --- steps, each in its own process --------------------------------------------------------------


def step_prepare(path: str, contacts: int, base_url: str) -> dict[str, Any]:
    """Sample data into a fresh DuckDB file, and our custom fields into the sandbox."""
    from truth_forge.core.crm_schema import CrmSchema, setup_schema
    from truth_forge.twenty import TwentyClient
    from truth_forge.warehouse import open_warehouse
    from truth_forge.warehouse.sample_data import generate_sample_data

    started = time.perf_counter()
    with open_warehouse(f"duckdb:///{path}") as wh:
        report = generate_sample_data(wh, contacts, max(1, contacts // 20), seed=11)
    with TwentyClient(base_url, API_KEY, requests_per_minute=1e9) as client:
        setup_schema(client, CrmSchema.load())
    return {"businesses": report.businesses, "identifiers": report.identifiers,
            "seconds": round(time.perf_counter() - started, 1)}


def step_sync(path: str, base_url: str, batch_size: int, url_options: str, trace: bool) -> dict[str, Any]:
    """One real first sync (pull, then push), measuring this process's memory while it runs."""
    import tracemalloc

    from truth_forge.core.crm_schema import CrmSchema
    from truth_forge.core.memory import bound_heap
    from truth_forge.sync.context import SyncEvent
    from truth_forge.sync.runner import run_sync
    from truth_forge.twenty import TwentyClient
    from truth_forge.warehouse import open_warehouse

    bound_heap()  # first, as `truth-forge` does (cli/main.py): the sampler below is a thread of its own
    samples: list[float] = []
    stop = threading.Event()
    current = ["open"]  # the phase running now
    phase_max: dict[str, float] = {}  # the largest RSS sampled during each phase

    rises: list[str] = []  # where every thread of the sync was when RSS reached a new high (+4 MiB)
    timeline: list[dict[str, Any]] = []  # every second: RSS beside what holds it (DuckDB, malloc, Python)
    watched: list[Any] = []  # a DuckDB cursor of the sampler's own (a cursor serves one thread)
    watching = threading.Lock()  # held while the sampler reads through it, and to close it

    def account() -> dict[str, Any]:
        point: dict[str, Any] = {"t": round(time.perf_counter() - started, 1), "phase": current[0],
                                 "rss": round(_rss_mib(), 1), "written": written["person"]}
        with watching:
            if opened:
                point.update(duck_account(opened[0]))
        point.update(_malloc_mib())
        point["py_blocks_k"] = sys.getallocatedblocks() // 1000
        return point

    def duck_account(wh: Any) -> dict[str, Any]:
        """DuckDB's own account by tag (buffer pool), and the journal's read cache in rows."""
        if not watched:
            watched.append(wh._con.cursor())
        tags = watched[0].execute("SELECT tag, memory_usage_bytes FROM duckdb_memory() WHERE memory_usage_bytes > 0").fetchall()
        return {"duckdb": round(sum(b for _, b in tags) / 2**20, 1),
                "duckdb_tags": {t: round(b / 2**20, 1) for t, b in tags},
                "cache_rows": len(wh._journal.cache), "unsettled": len(wh._journal.unsettled)}

    def sample() -> None:
        high = 0.0
        ticks = 0
        while not stop.wait(SAMPLE_EVERY_S):
            ticks += 1
            if ticks % 5 == 0:
                timeline.append(account())
            rss = _rss_mib()
            samples.append(rss)
            phase_max[current[0]] = round(max(rss, phase_max.get(current[0], 0.0)), 1)
            if rss > high + 4:
                high = rss
                rises.append(f"{rss:7.1f} MiB {current[0]}: {_where()}")

    written = {"person": 0, "company": 0}
    curve: list[tuple[int, float]] = []  # (persons written so far, RSS) at every person batch
    phases: dict[str, float] = {}
    snapshot: list[str] = []
    duck: dict[str, float] = {}  # DuckDB's own account of its memory at the end of the person push
    opened: list[Any] = []

    def on_event(event: SyncEvent) -> None:
        if event.kind == "batch_written" and event.object_type in written:
            written[event.object_type] += event.count
            if event.object_type == "person":
                curve.append((written["person"], _rss_mib()))
        elif event.kind == "phase_started":
            current[0] = f"{event.phase}_{event.object_type}"
        elif event.kind == "phase_finished":
            phases[f"{event.phase}_{event.object_type}"] = round(_rss_mib(), 1)
            if event.phase == "push" and event.object_type == "person" and opened:
                rows, _ = opened[0]._run("SELECT tag, memory_usage_bytes AS b, temporary_storage_bytes AS t "
                                         "FROM duckdb_memory() ORDER BY b DESC", (), fetch=True)
                duck.update({r["tag"]: round(r["b"] / 2**20, 1) for r in rows if r["b"]})
                duck["spilled"] = round(sum(r["t"] for r in rows) / 2**20, 1)
            if trace and event.phase == "push" and event.object_type == "person":
                top = tracemalloc.take_snapshot().statistics("lineno")[:12]
                snapshot.extend(f"{s.size / 2**20:8.1f} MiB {s.count:>9,} blocks  {s.traceback}" for s in top)

    before = _rss_mib()
    if trace:
        tracemalloc.start(1)
    started = time.perf_counter()
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    with open_warehouse(f"duckdb:///{path}{url_options}") as wh, \
            TwentyClient(base_url, API_KEY, batch_size=batch_size, requests_per_minute=1e9) as client:
        opened.append(wh)
        settings = wh._run("SELECT current_setting('memory_limit') AS m, current_setting('threads') AS t", (),
                           fetch=True)[0][0]
        result = run_sync(wh, client, CrmSchema.load(), on_event=on_event)
        current[0] = "close"
        with watching:  # the closing checkpoint wants no other cursor busy
            opened.clear()
            for cursor in watched:
                cursor.close()
    elapsed = time.perf_counter() - started
    stop.set()
    sampler.join()
    half = curve[len(curve) // 2:]
    slope = ((half[-1][1] - half[0][1]) / max(1, half[-1][0] - half[0][0]) * 1000) if len(half) > 1 else 0.0
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"status": result.status, "requests": result.counts.get("requests"), "seconds": round(elapsed, 1),
            "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
            "people": written["person"], "companies": written["company"], "errors": result.counts.get("errors"),
            "rss_start_mib": round(before, 1), "rss_peak_mib": round(_peak_mib(), 1),
            "rss_sampled_max_mib": round(max(samples, default=0.0), 1), "growth_mib_per_1k": round(slope, 3),
            "phase_end_rss_mib": phases, "phase_max_rss_mib": phase_max,
            "duckdb_memory_mib": duck, "duckdb": f"{settings['m']}, threads {settings['t']}",
            "tracemalloc_top": snapshot, "rss_rises": rises, "timeline": timeline}


# --- the driver ----------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_sandbox(log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "truth_forge.sandbox", "--port", str(port), "--rate-limit", "0", "--api-key", API_KEY],
        cwd=ROOT, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url + "/rest/people", timeout=1)
            return proc, url
        except urllib.error.HTTPError:
            return proc, url  # 401 without a key: it is up
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"the sandbox did not start within 30 s; see {log}")


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a live process, from /proc (to tell the sandbox's time apart)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return round((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), 1)


def _sandbox_peak_mib(proc: subprocess.Popen[bytes]) -> float | None:
    return proc_status_mib(proc.pid, "VmHWM")


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _sub(timeout: float, step: str, *args: str) -> dict[str, Any]:
    """A step of this script in a fresh process (PYTHONPATH, set by the caller, picks the code tree)."""
    return run_step(__file__, timeout, step, *args)


def measure(contacts: int, batch_size: int, url_options: str, timeout: float, trace: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench_memory_") as tmp:
        path = str(Path(tmp) / "warehouse.duckdb")
        sandbox, url = _start_sandbox(Path(tmp) / "sandbox.log")
        try:
            prep = _sub(timeout, "prepare", path, str(contacts), url)
            if "failed" in prep:
                return {"contacts": contacts, **prep}
            cpu_before = _cpu_seconds(sandbox.pid) or 0.0
            sync = _sub(timeout, "sync", path, url, str(batch_size), url_options, "1" if trace else "0")
            cpu_after = _cpu_seconds(sandbox.pid)
            return {"contacts": contacts, "prepare": prep, **sync, "sandbox_peak_mib": _round(_sandbox_peak_mib(sandbox)),
                    "sandbox_cpu_s": None if cpu_after is None else round(cpu_after - cpu_before, 1)}
        finally:
            os.killpg(sandbox.pid, signal.SIGTERM)
            try:
                sandbox.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(sandbox.pid, signal.SIGKILL)
                sandbox.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", help="contacts per run (default 10000 100000; --full adds 1M)")
    parser.add_argument("--full", action="store_true", help="also 1,000,000 contacts")
    parser.add_argument("--batch-size", type=int, default=200, help="records per Twenty write (default 200)")
    parser.add_argument("--url-options", default="", help="appended to the DuckDB URL, e.g. '?memory_limit=1GB'")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per step before it is stopped")
    parser.add_argument("--trace", action="store_true", help="tracemalloc's top lines at the end of the push")
    parser.add_argument("--step", help=argparse.SUPPRESS)
    parser.add_argument("args", nargs="*", help=argparse.SUPPRESS)
    ns = parser.parse_args()
    if ns.url_options and not ns.url_options.startswith("?"):
        # Glued to the file path as it is: without the "?" it would name another (empty) file.
        ns.url_options = "?" + ns.url_options.lstrip("&")
    if ns.step:
        a = ns.args
        try:
            result = (step_prepare(a[0], int(a[1]), a[2]) if ns.step == "prepare"
                      else step_sync(a[0], a[1], int(a[2]), a[3], a[4] == "1"))
        except Exception as exc:
            # One line (the driver shows the last line naming an Error): what failed, and where.
            import traceback

            frames = [f"{Path(f.filename).stem}.{f.name}:{f.lineno}" for f in traceback.extract_tb(exc.__traceback__)
                      if "truth_forge" in f.filename]
            sql = " ".join(str(getattr(exc, "statement", "")).split())[:160]
            print(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} | at {' < '.join(frames[::-1][:6])}"
                  f"{' | sql: ' + sql if sql else ''}", file=sys.stderr)
            raise SystemExit(1) from None
        print(json.dumps(result))
        return

    import duckdb

    sizes = ns.sizes or [10_000, 100_000] + ([1_000_000] if ns.full else [])
    print(f"# {platform.machine()}, {len(os.sched_getaffinity(0))} cores, "
          f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB RAM, "
          f"Python {platform.python_version()}, duckdb {duckdb.__version__}, batch {ns.batch_size}, "
          f"{time.strftime('%Y-%m-%d')}, url options {ns.url_options or '(defaults)'}", flush=True)
    print("| contacts | sync status | people + companies written | requests | sync time (s) | CPU s: sync / sandbox "
          "| RSS at start (MiB) | RSS after push (MiB) | peak RSS (MiB) | growth (MiB / 1k) | DuckDB limit "
          "| sandbox peak (MiB) |")
    print("|---:|---|---:|---:|---:|---|---:|---:|---:|---:|---|---:|", flush=True)
    details = []
    for n in sizes:
        r = measure(n, ns.batch_size, ns.url_options, ns.timeout, ns.trace)
        details.append(r)
        if "failed" in r:
            print(f"| {n:,} | {r['failed']} | | | | | | | | | | |", flush=True)
            continue
        ok = "" if r["rss_peak_mib"] * 2**20 / 1e6 <= GOAL_MB else " (over the goal)"
        print(f"| {n:,} | {r['status']} | {r['people']:,} + {r['companies']:,} | {r['requests']:,} | {r['seconds']} "
              f"| {r['cpu_s']} / {r['sandbox_cpu_s']} | {r['rss_start_mib']} | {r['phase_end_rss_mib'].get('push_person', '')} | {r['rss_peak_mib']}{ok} "
              f"| {r['growth_mib_per_1k']} | {r['duckdb']} | {r['sandbox_peak_mib']} |", flush=True)
    for r in details:
        print(f"\n<!-- {r['contacts']:,}: {json.dumps({k: v for k, v in r.items() if k not in ('tracemalloc_top', 'rss_rises', 'timeline')})} -->")
        for line in r.get("tracemalloc_top") or []:
            print(f"    {line}")
        for line in r.get("rss_rises") or []:
            print(f"    {line}")
        for point in r.get("timeline") or []:
            print(f"    {json.dumps(point)}")


if __name__ == "__main__":
    main()
