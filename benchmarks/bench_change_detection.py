"""Benchmark: change detection on DuckDB at 100k and 1M contacts, 0% and 1% changed.

Why it exists: the design's claim is that change detection runs inside the engine and only changed
rows reach Python, so the sync process stays small however large the warehouse. This measures it:
wall time, Python's peak allocation (tracemalloc) and the process's peak RSS (getrusage, includes
DuckDB's native memory) of a fresh process that streams the changed rows, plus the time to
generate the sample data. Run by hand (not part of the test suite):

    .venv/bin/python benchmarks/bench_change_detection.py [--sizes 100000 1000000] [--keep DIR]

Each measurement runs in its own subprocess, so peak RSS belongs to that step alone.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from truth_forge.warehouse import open_warehouse  # noqa: E402
from truth_forge.warehouse import queries as q  # noqa: E402
from truth_forge.warehouse.sample_data import generate_sample_data  # noqa: E402

BATCH = 1000


def _rss_peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def step_prepare(path: str, contacts: int) -> dict[str, float]:
    """Generate sample data, then record every contact as synced (set-based, as after a first sync)."""
    with open_warehouse(f"duckdb:///{path}") as wh:
        started = time.perf_counter()
        report = generate_sample_data(wh, contacts, max(1, contacts // 20), seed=42)
        generated = time.perf_counter() - started
        started = time.perf_counter()
        wh._run(
            "INSERT INTO {crm_sync_state} (object_type, record_key, crm_id, warehouse_hash, status, attempts) "
            f"WITH {q.contact_view_ctes('all')} "
            "SELECT 'person', CAST(h.contact_id AS STRING), CONCAT('crm-', CAST(h.contact_id AS STRING)), "
            "h.row_hash, 'synced', 0 FROM h",
            (),
        )
        wh.checkpoint()
        state = time.perf_counter() - started
    return {"generate_s": round(generated, 2), "identifiers": report.identifiers, "links": report.links,
            "record_state_s": round(state, 2)}


def step_edit(path: str, percent: float) -> dict[str, float]:
    """Change `percent` of the contacts: a name, a primary email or a business link, in rotation."""
    every = round(100 / percent)
    with open_warehouse(f"duckdb:///{path}") as wh:
        wh._run(f"UPDATE {{contacts}} SET canonical_name = CONCAT(canonical_name, ' (edited)') "
                f"WHERE MOD(contact_id, {every}) = 0 AND MOD(contact_id, {3 * every}) = 0", ())
        wh._run(f"UPDATE {{contact_identifiers}} SET value = CONCAT('edited.', value) WHERE kind = 'email' "
                f"AND is_primary AND MOD(contact_id, {every}) = 0 AND MOD(contact_id, {3 * every}) = {every}", ())
        # Contacts without a business get one, those with one lose it: either way the link changes.
        wh._run(f"DELETE FROM {{contact_businesses}} WHERE MOD(contact_id, {every}) = 0 "
                f"AND MOD(contact_id, {3 * every}) = {2 * every}", ())
        wh._run(f"INSERT INTO {{contact_businesses}} (contact_id, business_id, role, is_primary, updated_at) "
                f"SELECT c.contact_id, 1, 'Advisor', TRUE, CURRENT_TIMESTAMP() FROM {{contacts}} AS c "
                f"WHERE MOD(c.contact_id, {every}) = 0 AND MOD(c.contact_id, {3 * every}) = {2 * every} "
                f"AND c.contact_id NOT IN (SELECT l.contact_id FROM {{contact_businesses}} AS l WHERE l.is_primary)", ())
        n = wh._run(f"SELECT COUNT(*) AS n FROM {{contacts}} WHERE MOD(contact_id, {every}) = 0", (), fetch=True)[0][0]["n"]
    return {"edited": n}


def step_detect(path: str) -> dict[str, float]:
    """Stream every changed contact through Python, as the sync does; measure time and memory.

    Two passes in one fresh process: the first is timed (tracemalloc would slow sqlglot's
    transpilation several-fold), the second measures Python's peak allocation.
    """
    started = time.perf_counter()
    with open_warehouse(f"duckdb:///{path}") as wh:
        opened = time.perf_counter() - started
        rows = batches = 0
        for batch in wh.changed_rows("person", batch_size=BATCH):
            rows += len(batch)
            batches += 1
        elapsed = time.perf_counter() - started
        tracemalloc.start()
        for batch in wh.changed_rows("person", batch_size=BATCH):
            del batch
        _, py_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return {"changed": rows, "batches": batches, "seconds": round(elapsed, 2), "open_s": round(opened, 2),
            "python_peak_mib": round(py_peak / 2**20, 1), "rss_peak_mib": round(_rss_peak_mib(), 1)}


def _sub(step: str, *args: str) -> dict[str, float]:
    out = subprocess.run([sys.executable, __file__, "--step", step, *args], check=True, capture_output=True,
                         text=True, timeout=900)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--keep", type=Path, help="directory for the DuckDB files (default: a temp dir)")
    parser.add_argument("--step", help=argparse.SUPPRESS)
    parser.add_argument("args", nargs="*", help=argparse.SUPPRESS)
    ns = parser.parse_args()
    if ns.step:
        fn = {"prepare": lambda: step_prepare(ns.args[0], int(ns.args[1])),
              "edit": lambda: step_edit(ns.args[0], float(ns.args[1])),
              "detect": lambda: step_detect(ns.args[0])}[ns.step]
        print(json.dumps(fn()))
        return

    import duckdb

    print(f"# python {platform.python_version()}, duckdb {duckdb.__version__}, {platform.machine()}, "
          f"cpus={len(__import__('os').sched_getaffinity(0))}")
    print("| contacts | generate sample data | record state | changed | detect incl. open (s) | batches | Python peak MiB | RSS peak MiB |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory(dir=ns.keep) as tmp:
        for n in ns.sizes:
            path = str(Path(tmp) / f"bench_{n}.duckdb")
            prep = _sub("prepare", path, str(n))
            for pct in (0.0, 1.0):
                if pct:
                    _sub("edit", path, str(pct))
                det = _sub("detect", path)
                print(f"| {n:,} | {prep['generate_s']} s | {prep['record_state_s']} s | {det['changed']:,} ({pct:g}%) "
                      f"| {det['seconds']} | {det['batches']} | {det['python_peak_mib']} | {det['rss_peak_mib']} |",
                      flush=True)


if __name__ == "__main__":
    main()
