"""What the record history costs: bytes written per 1,000 changes, and a day of it on BigQuery.

    .venv/bin/python benchmarks/bench_history_cost.py                  # 2,000 contacts, 500 + 500 edits
    .venv/bin/python benchmarks/bench_history_cost.py --contacts 4000 --edits 1000

Why it exists (issue 21): every change the sync applies is appended to `crm_sync_history`; the cost
of that must be known before anyone turns it on at ten million contacts. The real sync (`run_sync`)
runs on a DuckDB file against the bundled sandbox (127.0.0.1, in this process): a first sync, then
`--edits` contacts edited in the warehouse (two fields each) and `--edits` people renamed in Twenty
by a workspace member, each synced. The history rows those runs appended are sized by BigQuery's
storage rules (`cost_model.measure_table`: the same bytes on either engine), and the INSERTs into
the history counted per run.

The day at 10M contacts is then priced with `truth_forge/warehouse/cost_model.py`: the INSERT, the
retention DELETE and a lookup by record as BigQuery would run them (the statements' templates
rendered for BigQuery), on a history table holding `--retention` days of the day's changes. The
model knows clustering but not partitions, so the DELETE is also priced by hand as what BigQuery
bills for a DELETE filtered on the partitioning column: the columns of the expired partition.
Bounded: every edit loop is counted and checked against --timeout; nothing is downloaded.
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from truth_forge.core.crm_schema import CrmSchema, setup_schema  # noqa: E402
from truth_forge.sandbox import SandboxConfig, SandboxServer  # noqa: E402
from truth_forge.sync.runner import run_sync  # noqa: E402
from truth_forge.twenty import TwentyClient  # noqa: E402
from truth_forge.warehouse import open_warehouse  # noqa: E402
from truth_forge.warehouse.accounting import Statement, billed_from_processed  # noqa: E402
from truth_forge.warehouse.bigquery import render  # noqa: E402
from truth_forge.warehouse.binds import RowSet, Scalar  # noqa: E402
from truth_forge.warehouse.cost_model import (  # noqa: E402
    BLOCK_BYTES,
    CostModel,
    TableSize,
    TableSizes,
    dollars,
    measure_table,
)
from truth_forge.warehouse.record_history import (  # noqa: E402
    _EXPIRE_HISTORY,
    _HISTORY_BY_KEY,
    HISTORY_COLUMNS,
)
from truth_forge.warehouse.sample_data import generate_sample_data  # noqa: E402
from truth_forge.warehouse.schema import CRM_SYNC_HISTORY, STRING, TABLES, TIMESTAMP  # noqa: E402

API_KEY = "bench-history-key"
MEMBER_TOKEN = "bench-history-member"
SCHEMA = CrmSchema.load()
GB = 1e9


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Deadline:
    def __init__(self, seconds: float) -> None:
        self.at = time.monotonic() + seconds

    def check(self, what: str) -> None:
        if time.monotonic() > self.at:
            raise SystemExit(f"stopped: --timeout reached during {what}")


def measure(contacts: int, edits: int, deadline: Deadline) -> dict[str, Any]:
    """Run the syncs; return the history's rows and bytes per run and side, and INSERTs per run."""
    config = SandboxConfig(api_keys=[API_KEY], member_tokens={MEMBER_TOKEN: "Ada Lovelace"}, rate_limit_per_minute=None)
    with tempfile.TemporaryDirectory() as tmp, SandboxServer(config) as sandbox, \
            open_warehouse(f"duckdb:///{Path(tmp) / 'w.duckdb'}") as warehouse, \
            TwentyClient(sandbox.base_url, API_KEY, requests_per_minute=1e9) as client:
        setup_schema(client, SCHEMA)
        generate_sample_data(warehouse, contacts, max(1, contacts // 20), seed=7)
        inserts: list[str] = []
        warehouse.statements.listeners.append(
            lambda s: inserts.append(s.sql) if "insert into" in s.sql.lower() and "crm_sync_history" in s.sql else None)
        runs: dict[str, dict[str, Any]] = {}

        def sync(kind: str) -> None:
            deadline.check(kind)
            before = len(inserts)
            started = time.perf_counter()
            result = run_sync(warehouse, client, SCHEMA)
            if result.status != "succeeded":
                raise RuntimeError(f"{kind}: sync {result.status}: {result.sync_errors[:3]}")
            rows, column_bytes = measure_table(warehouse, "crm_sync_history",
                                               f"WHERE t.run_id = '{result.run_id}'")
            runs[kind] = {"rows": rows, "column_bytes": column_bytes, "inserts": len(inserts) - before,
                          "seconds": time.perf_counter() - started}
            say(f"{kind}: {rows} history rows, {len(inserts) - before} INSERTs")

        sync("first sync")
        step = max(1, contacts // edits)
        keys = list(range(1, contacts + 1, step))[:edits]
        rows = {r["contact_id"]: r for r in warehouse.get_rows("person", keys)}
        warehouse.upsert_contacts([
            {"contact_id": k, "category_code": "H" if rows[k]["category_code"] != "H" else "G",
             "relationship_category": "FRIEND" if rows[k]["relationship_category"] != "FRIEND" else "FAMILY"}
            for k in keys])
        sync("warehouse edits")
        people = [p for p in client.records.iter_records("people")][: edits]
        with httpx.Client(base_url=sandbox.base_url, timeout=10,
                          headers={"Authorization": f"Bearer {MEMBER_TOKEN}"}) as http:
            for i, person in enumerate(people):
                if i % 100 == 0:
                    deadline.check("the Twenty edits")
                http.patch(f"/rest/people/{person['id']}",
                           json={"name": {"firstName": "Edited", "lastName": f"Person {i}"}}).raise_for_status()
        sync("Twenty edits")
        sample_row = warehouse.history_of("person", record_key=keys[0], limit=1)
    return {"runs": runs, "sample_row": sample_row}


def row_bytes(column_bytes: dict[str, float]) -> float:
    return sum(column_bytes.values())


def price_day(per_change: dict[str, float], changes_per_day: float, retention_days: int) -> dict[str, Any]:
    """A day's INSERTs, the retention DELETE and a lookup, at `changes_per_day` history rows a day."""
    day_rows = changes_per_day
    kept_rows = round(day_rows * retention_days)
    sizes = TableSizes(tables={"crm_sync_history": TableSize(kept_rows, per_change)},
                       clustering={"crm_sync_history": CRM_SYNC_HISTORY.cluster_by},
                       shares={("crm_sync_history", "object_type"): {"person": 0.95, "company": 0.05}})
    model = CostModel(sizes, {name: name for name in TABLES})
    refs = {name: name for name in TABLES}
    names = ", ".join(n for n, _ in HISTORY_COLUMNS)
    insert_binds = (RowSet("rows", HISTORY_COLUMNS, []),)
    insert_sql = render(f"INSERT INTO {{crm_sync_history}} ({names}) SELECT "
                        + ", ".join(f"r.{n} AS {n}" for n, _ in HISTORY_COLUMNS) + " FROM {rows_rows} AS r",
                        refs, insert_binds)
    insert = model.price(Statement(insert_sql, insert_binds))
    delete_binds = (Scalar("cutoff", TIMESTAMP, dt.datetime(2026, 1, 1, tzinfo=dt.UTC)),)
    unpartitioned_delete = model.price(Statement(render(_EXPIRE_HISTORY, refs, delete_binds), delete_binds))
    partition_bytes = day_rows * row_bytes(per_change)
    partitioned_delete = billed_from_processed(round(partition_bytes))
    lookup_binds = (Scalar("object_type", STRING, "person"), Scalar("record_key", STRING, "42"))
    lookup = model.price(Statement(render(_HISTORY_BY_KEY.replace("{limit}", "200"), refs, lookup_binds),
                                   lookup_binds))
    # The model knows no partitions: a lookup reads at least one storage block of every day kept, and a
    # day smaller than a block whole (docs/querying-clustered-tables: clustering prunes within a partition).
    lookup_floor = billed_from_processed(round(retention_days * min(partition_bytes, BLOCK_BYTES)))
    return {"day_rows": day_rows, "day_bytes": partition_bytes, "kept_bytes": kept_rows * row_bytes(per_change),
            "insert_billed": insert.bytes_billed, "delete_billed": partitioned_delete,
            "delete_unpartitioned_billed": unpartitioned_delete.bytes_billed,
            "lookup_model_billed": lookup.bytes_billed, "lookup_partition_floor_billed": lookup_floor}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contacts", type=int, default=2000, help="sample contacts (default 2000)")
    parser.add_argument("--edits", type=int, default=500, help="contacts edited on each side (default 500)")
    parser.add_argument("--target", type=int, default=10_000_000, help="contacts priced (default 10M)")
    parser.add_argument("--changed-share", type=float, default=0.01,
                        help="share of contacts changed in the warehouse a day (default 0.01)")
    parser.add_argument("--twenty-share", type=float, default=0.001,
                        help="share of contacts edited in Twenty a day (default 0.001)")
    parser.add_argument("--retention", type=int, default=365, help="days kept (default 365)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds before the run is stopped")
    args = parser.parse_args()
    started = time.perf_counter()
    measured = measure(args.contacts, args.edits, Deadline(args.timeout))
    runs = measured["runs"]
    pushed, pulled = runs["warehouse edits"], runs["Twenty edits"]
    per_pushed = row_bytes(pushed["column_bytes"])
    per_pulled = row_bytes(pulled["column_bytes"])
    fields_per_pushed = pushed["rows"] / args.edits
    fields_per_pulled = pulled["rows"] / args.edits
    # The day's rows: warehouse changes (with the fields per record measured) plus Twenty edits.
    day_rows = args.target * (args.changed_share * fields_per_pushed + args.twenty_share * fields_per_pulled)
    mix = {c: (pushed["column_bytes"][c] * pushed["rows"] + pulled["column_bytes"][c] * pulled["rows"])
           / (pushed["rows"] + pulled["rows"]) for c in pushed["column_bytes"]}
    day = price_day(mix, day_rows, args.retention)
    command = "python " + shlex.join(["benchmarks/bench_history_cost.py", *sys.argv[1:]])
    print(f"# {platform.machine()}, Python {platform.python_version()}, {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} "
          f"UTC, {time.perf_counter() - started:.0f} s; `{command}`")
    print("| run | history rows | INSERTs into the history | bytes a row | bytes per 1,000 changes |")
    print("|---|---:|---:|---:|---:|")
    for kind, run in runs.items():
        per_row = row_bytes(run["column_bytes"])
        print(f"| {kind} ({args.contacts:,} contacts) | {run['rows']:,} | {run['inserts']} | {per_row:.0f} | "
              f"{per_row:,.0f} KB |" if run["rows"] else f"| {kind} | 0 | {run['inserts']} | | |")
    print()
    print(f"A day at {args.target:,} contacts: {args.changed_share:.1%} edited in the warehouse "
          f"({fields_per_pushed:.1f} fields each, as measured), {args.twenty_share:.1%} edited in Twenty "
          f"({fields_per_pulled:.1f} each): {day['day_rows']:,.0f} rows, {day['day_bytes'] / GB:.3f} GB a day, "
          f"{day['kept_bytes'] / GB:.1f} GB kept over {args.retention} days.")
    print()
    print("| statement (BigQuery on-demand) | billed | $ |")
    print("|---|---:|---:|")
    print(f"| the day's INSERTs (one per batch) | {day['insert_billed'] / GB:.3f} GB | {dollars(day['insert_billed']):.4f} |")
    print(f"| retention DELETE, once a day (partitioned by DATE(applied_at): the expired day) | "
          f"{day['delete_billed'] / GB:.3f} GB | {dollars(day['delete_billed']):.4f} |")
    print(f"| the same DELETE were the table not partitioned (cost model: whole table) | "
          f"{day['delete_unpartitioned_billed'] / GB:.1f} GB | {dollars(day['delete_unpartitioned_billed']):.4f} |")
    print(f"| one `history contact 42` (cost model: clustered by object_type, record_key) | "
          f"{day['lookup_model_billed'] / GB:.3f} GB | {dollars(day['lookup_model_billed']):.4f} |")
    print(f"| the same lookup if every day partition is below one storage block (read whole) | "
          f"{day['lookup_partition_floor_billed'] / GB:.2f} GB | {dollars(day['lookup_partition_floor_billed']):.4f} |")
    print()
    print(f"Per 1,000 changes: {per_pushed:,.0f} KB pushed, {per_pulled:,.0f} KB pulled "
          f"(row bytes by BigQuery's storage rules; 1,000 rows of N bytes are N KB).")


if __name__ == "__main__":
    main()
