"""CPU of a first sync's journal fold on DuckDB, by row-group size and fold window (issue 22).

Why it exists: a first push saves one journal entry per record and the run's closing fold MERGEs
them into crm_sync_state, a window at a time, with a checkpoint after each window. A checkpoint
rewrites the table's last, partly filled row group, so how the windows line up with the row groups
sets most of the fold's cost. This saves N entries shaped like a push's (a UUID, two hashes, two
timestamps, a merge base of a dozen fields) in saves of 200, then folds them into an empty state,
and reports the fold's CPU and how much of it went to checkpoints and to the MERGEs. Each
configuration runs in a fresh process on a fresh file. Run by hand (not part of the test suite):

    .venv/bin/python benchmarks/bench_fold.py --entries 300000 --configs 16384/10000 8192/8192
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _entry(i: int, at: dt.datetime) -> dict[str, Any]:
    return {"object_type": "person", "record_key": str(i), "crm_id": str(uuid.UUID(int=i + 1)),
            "crm_hash": f"{i:064x}", "warehouse_hash": f"{i * 7:032x}", "crm_updated_at": at,
            "last_synced_at": at, "status": "synced", "attempts": 0, "last_error": None,
            "base": {"canonical_name": f"Person {i}", "primary_email": f"p{i}@example.com", "additional_emails": [],
                     "primary_phone": f"+4915{i:09d}", "additional_phones": [], "category_code": "B",
                     "subcategory_code": "B2_FRIEND", "relationship_category": "FRIEND", "business_id": i % 5000,
                     "llm_context": f"~digest{i:012x}", "communication_stats": f"~digest{i * 3:012x}",
                     "ai_insights": f"~digest{i * 5:012x}"}}


def step(path: str, entries: int, row_group: int, window: int) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    from truth_forge.warehouse import duckdb as engine
    from truth_forge.warehouse import open_warehouse

    engine.ROW_GROUP_ROWS = row_group  # read as the file is attached
    spent = {"checkpoints": 0.0, "merges": 0.0}
    after_window, fold_window = engine.DuckDBWarehouse._after_fold_window, engine.DuckDBWarehouse._fold_window

    def timed_after(self: Any) -> None:
        t = time.process_time()
        after_window(self)
        spent["checkpoints"] += time.process_time() - t

    def timed_window(self: Any, low: int, high: int, size: int | None) -> None:
        t = time.process_time()
        fold_window(self, low, high, size)
        spent["merges"] += time.process_time() - t

    engine.DuckDBWarehouse._after_fold_window = timed_after  # type: ignore[method-assign]
    engine.DuckDBWarehouse._fold_window = timed_window  # type: ignore[method-assign]
    at = dt.datetime.now(dt.UTC)
    with open_warehouse(f"duckdb:///{path}") as wh:
        wh.fold_window_rows = window
        for start in range(0, entries, 200):
            wh.upsert_sync_state([_entry(i, at) for i in range(start, min(entries, start + 200))])
        wh.checkpoint()
        cpu = time.process_time()
        wh.fold_journal(force=True)
        cpu = time.process_time() - cpu
        assert wh.count_rows("crm_sync_state") == entries
    spent["merges"] -= spent["checkpoints"]  # each window's time holds its checkpoint
    return {"fold_cpu_s": round(cpu, 2), **{k: round(v, 2) for k, v in spent.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=300_000)
    parser.add_argument("--configs", nargs="+", default=["16384/10000", "8192/8192"],
                        help="row group size / fold window, e.g. 8192/8192")
    parser.add_argument("--step", nargs=4, help=argparse.SUPPRESS)
    ns = parser.parse_args()
    if ns.step:
        print(json.dumps(step(ns.step[0], int(ns.step[1]), int(ns.step[2]), int(ns.step[3]))))
        return
    print(f"# {platform.machine()}, Python {platform.python_version()}, "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {ns.entries:,} entries")
    print("| row group / window | fold CPU (s) | of it, checkpoints (s) | MERGEs and the rest of each window (s) |")
    print("|---|---:|---:|---:|")
    for config in ns.configs:
        group, window = config.split("/")
        with tempfile.TemporaryDirectory(prefix="bench_fold_") as tmp:
            out = subprocess.run([sys.executable, __file__, "--step", f"{tmp}/w.duckdb", str(ns.entries), group, window],
                                 check=True, capture_output=True, text=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        print(f"| {int(group):,} / {int(window):,} | {r['fold_cpu_s']} | {r['checkpoints']} | {r['merges']} |", flush=True)


if __name__ == "__main__":
    main()
