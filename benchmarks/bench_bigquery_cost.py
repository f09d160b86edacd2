"""What a `truth-forge sync` would bill on BigQuery on-demand at 1M and 10M contacts, per run kind.

    .venv/bin/python benchmarks/bench_bigquery_cost.py                                  # print the table
    .venv/bin/python benchmarks/bench_bigquery_cost.py --label after --write BENCHMARKS.md

Why it exists: bqemulator, the BigQuery the tests run on, answers 0 bytes for every job, and at the
size where anyone picks BigQuery the bill is the figure that matters (issue 17). So the real sync
(`run_sync`, the library the CLI calls) runs against the BigQuery engine on bqemulator and the
bundled Twenty sandbox (both on 127.0.0.1), every statement the engine sends is recorded through
`warehouse.statements.listeners`, and each is priced by `truth_forge/warehouse/cost_model.py`
(BigQuery's documented on-demand rules) on tables sized for N contacts with 3 KB of JSON each.

Run kinds, in this order on one warehouse: first sync; no-op; "1 % changed" (contacts renamed in
the warehouse); a pull of Twenty edits (people renamed in the sandbox by a workspace member, as a
person in Twenty's app), whose staged values' landing is recorded apart; `sync --full`; then the
webhook batches of an hour of `serve` (priced with its scheduled syncs and landings).

From a few thousand contacts to millions: the emulator holds a few thousand contacts, so the
statement counts are extrapolated. Statements are grouped by shape (the SQL with table names made
logical and inlined numbers blanked: the same statement with other binds is one shape). A shape's
count per run is fitted as

    count = a + b * (records changed) + c * (key ranges)

where "records changed" is what the run kind works through (first sync and --full: every contact
and business; no-op: 0; 1 %: the contacts edited; pull: the Twenty edits), and "key ranges" is the
number of change-detection key ranges the engine reads (`rows // change_range_rows + 1` per object
type, the engine's own setting: BigQuery reads 1M keys a range, so 10M contacts is 11 ranges of
persons plus 1 of companies). Three samples pin the three coefficients: n1 contacts and n2 contacts
with the same range size, and n2 again with a smaller range size; the edits per sample differ so
`b` and `c` are told apart (the record counts are a few batches each, so a per-batch statement's
step is seen several times). An engine without key ranges simply fits c = 0. At the target N, the
count is a + b * (what that run kind changes at N) + c * (ranges at N), and each shape is priced
at N by the average of its recorded statements (their binds, e.g. key lists, as sent). Clustering
is what the tables report through BigQuery's API (bqemulator records clustering set through the
API, not the DDL clause), or the schema's with `--clustering schema`.

Bounded: every step checks a deadline (--timeout, default 900 s); the defaults take a few minutes
on 2 cores. Loopback only; nothing is downloaded.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import re
import shlex
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx  # noqa: E402
from bench_support import ROOT, Deadline, git_commit, load_average, machine_line, replace_marked, today  # noqa: E402

from tests.fixtures.bqemulator import BQEMU_BIN, running_bqemulator  # noqa: E402
from truth_forge.core.config import (  # noqa: E402
    BIGQUERY_SERVE_BATCH_EVENTS,
    BIGQUERY_SERVE_BATCH_WINDOW,
    BIGQUERY_SERVE_FOLD_MINUTES,
    BIGQUERY_SERVE_SYNC_INTERVAL_MINUTES,
)
from truth_forge.core.crm_schema import CrmSchema, setup_schema  # noqa: E402
from truth_forge.sandbox import SandboxConfig, SandboxServer  # noqa: E402
from truth_forge.sync.runner import run_sync  # noqa: E402
from truth_forge.sync.views import DIGEST  # noqa: E402
from truth_forge.twenty import TwentyClient  # noqa: E402
from truth_forge.warehouse.accounting import Statement  # noqa: E402
from truth_forge.warehouse.bigquery import BigQueryWarehouse  # noqa: E402
from truth_forge.warehouse.cost_model import (  # noqa: E402
    Cost,
    CostModel,
    SampleProfile,
    TableSizes,
    dollars,
    measure_table,
    physical_names,
    shape_of,
    sizes_for_contacts,
)
from truth_forge.warehouse.sample_data import generate_sample_data  # noqa: E402
from truth_forge.warehouse.schema import TABLES  # noqa: E402

PROJECT = "bench-project"
API_KEY = "bench-key"
MEMBER_TOKEN = "bench-member"
TARGETS = (1_000_000, 10_000_000)
JSON_BYTES_PER_CONTACT = 3072
BUSINESSES_PER_CONTACT = 1 / 20  # the sample data's ratio, as every bench uses it
CHANGED_SHARE = 0.01  # the "1 % changed" run kind
PULL_EDITS = 1000  # the pull run kind: Twenty edits at the target
KINDS = ("first sync", "no-op", "1 % changed", f"pull of {PULL_EDITS:,} Twenty edits", "sync --full")
SERVE = "an hour of serve, 5,000 webhook events"
SERVE_BATCHES = "serve: webhook batches"  # the measured part of the serve hour (fitted per batch)
# The sync-state journal's fold (state_journal.py), recorded apart: on BigQuery it is due once the
# journal holds this share of the state's rows, so a run pays its part of one fold, not a fold.
FOLD = "journal fold"
FOLD_SHARE = BigQueryWarehouse.journal_fold_share
NEVER_DUE = 1e12  # a share no sample reaches: the samples' runs fold only when forced
# Pulled values staged beside contacts (warehouse/pending_rows.py), landed by one MERGE per table:
# recorded apart, as serve lands them once an interval rather than once a sync.
LANDING = "landing of staged pulled values"
SERVE_EVENTS_PER_HOUR = 5000
# How long BigQuery takes per statement of a webhook batch (a short query job: about a second):
# events keep arriving while a batch is applied, so the next batch is larger than the writer's
# gathering window alone would make it.
BIGQUERY_SECONDS_PER_STATEMENT = 1.0
SCHEMA = CrmSchema.load()
GB = 1e9


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- what each run kind changes, at a sample and at the target -----------------------------------

def changed_at(kind: str, contacts: int) -> int:
    """The records a run kind works through at `contacts` contacts (the fit's `x` at the target)."""
    everything = contacts + round(contacts * BUSINESSES_PER_CONTACT)
    return {"first sync": everything, "no-op": 0, "1 % changed": round(contacts * CHANGED_SHARE),
            KINDS[3]: PULL_EDITS, "sync --full": everything}.get(kind, 0)


# A run's writer lease is renewed by the clock (every third of its time to live), not per record: a
# sample run on a busy machine renews more often, and a per-record fit would carry that to N. The
# renewals are priced over the time the run takes at Twenty Cloud's ceiling instead (100 requests a
# minute of 200 records: what paces a run against the real service).
LEASE_RENEWAL = re.compile(r"^\s*UPDATE\s+\{crm_sync_leases\}\s+AS\s+t\s+SET\s+expires_at", re.IGNORECASE)
TWENTY_CLOUD_RECORDS_PER_SECOND = 100 * 200 / 60


def renewals_during(records: int) -> int:
    """Lease renewals of a run that works through `records` records at Twenty Cloud's pace."""
    from truth_forge.core.lease import DEFAULT_TTL, FENCE_MARGIN

    return round(records / TWENTY_CLOUD_RECORDS_PER_SECOND / (DEFAULT_TTL.total_seconds() * FENCE_MARGIN))


def ranges_at(contacts: int, range_rows: int | None) -> int:
    """Change-detection key ranges the engine reads at this size (0 if it reads none)."""
    if not range_rows:
        return 0
    return sum(rows // range_rows + 1 for rows in (contacts, round(contacts * BUSINESSES_PER_CONTACT)))


@dataclass(frozen=True)
class Sample:
    contacts: int
    range_rows: int
    warehouse_edits: int  # contacts renamed for "1 % changed"
    twenty_edits: int  # people renamed in Twenty for the pull
    serve_batches: int  # webhook micro-batches applied


@dataclass
class KindRun:
    """What one run kind sent at one sample."""

    x: int  # records changed
    u: int  # key ranges
    statements: list[Statement] = field(default_factory=list)
    journal_rows: int = 0
    state_rows: tuple[int, int] = (0, 0)  # sync state rows before and after the run
    records: int = 0  # contacts and businesses in the sample


# -- bqemulator and the sandbox ------------------------------------------------------------------

@contextmanager
def bqemulator(log_path: Path, timeout: float = 60.0) -> Iterator[str]:
    if not BQEMU_BIN.exists():
        raise SystemExit(f"bqemulator is not installed ({BQEMU_BIN} missing): run `make bqemu`")
    with running_bqemulator(log_path, timeout=timeout, project=PROJECT) as url:
        yield url


def bigquery_client(endpoint: str) -> Any:
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery

    return bigquery.Client(project=PROJECT, credentials=AnonymousCredentials(),
                           client_options=ClientOptions(api_endpoint=endpoint))


def table_clustering(warehouse: BigQueryWarehouse) -> dict[str, tuple[str, ...]]:
    """Clustering columns per logical table, as BigQuery's API reports the tables."""
    out: dict[str, tuple[str, ...]] = {}
    for name in TABLES:
        table = warehouse.client.get_table(f"{warehouse.project}.{warehouse.dataset}.{warehouse.tables[name]}")
        if table.clustering_fields:
            out[name] = tuple(table.clustering_fields)
    return out


def twenty(base_url: str) -> TwentyClient:
    return TwentyClient(base_url, API_KEY, requests_per_minute=1e9)


def edit_in_twenty(sandbox: SandboxServer, crm_ids: list[str], deadline: Deadline, *, first_name: str = "Edited",
                   then: Callable[[httpx.Client, str], None] | None = None) -> None:
    """Rename people as a workspace member (a person in Twenty's app): edits the pull must bring;
    `then` is called after each edit with the member's client and the record's id."""
    with httpx.Client(base_url=sandbox.base_url, timeout=10,
                      headers={"Authorization": f"Bearer {MEMBER_TOKEN}"}) as http:
        for i, crm_id in enumerate(crm_ids):
            if i % 100 == 0:
                deadline.check(f"the Twenty edits ({first_name})")
            http.patch(f"/rest/people/{crm_id}",
                       json={"name": {"firstName": first_name, "lastName": f"Person {i}"}}).raise_for_status()
            if then is not None:
                then(http, crm_id)


# -- one sample: every run kind in order ---------------------------------------------------------

def run_sample(sample: Sample, client: Any, sandbox: SandboxServer, deadline: Deadline,
               clustering_mode: str) -> tuple[dict[str, KindRun], dict[str, Any]]:
    dataset = f"bench_{uuid.uuid4().hex[:10]}"
    out: dict[str, KindRun] = {}
    facts: dict[str, Any] = {}
    sandbox.reset()
    with twenty(sandbox.base_url) as setup_client:
        setup_schema(setup_client, SCHEMA)
    warehouse = BigQueryWarehouse(PROJECT, dataset, client=client, timeout=120)
    try:
        warehouse.change_range_rows = sample.range_rows
        businesses = round(sample.contacts * BUSINESSES_PER_CONTACT)
        generate_sample_data(warehouse, sample.contacts, businesses, seed=7)
        recording: list[Statement] | None = None

        def record(statement: Statement) -> None:
            if recording is not None:
                recording.append(statement)

        warehouse.statements.listeners.append(record)
        u = ranges_at(sample.contacts, getattr(warehouse, "change_range_rows", None))

        def sync(kind: str, x: int, **options: Any) -> None:
            nonlocal recording
            deadline.check(kind)
            run = KindRun(x=x, u=u, records=sample.contacts + businesses)
            if kind != "first sync":
                # A sample's runs would reach the fold's share of its small state every time; at the
                # target they do not: each starts with an empty journal and leaves it unfolded.
                warehouse.journal_fold_share = NEVER_DUE
                warehouse.fold_journal(force=True)
            state_before = warehouse.count_rows("crm_sync_state")
            recording = run.statements
            started = time.perf_counter()
            with twenty(sandbox.base_url) as c:
                result = run_sync(warehouse, c, SCHEMA, **options)
            recording = None
            if result.status != "succeeded":
                raise RuntimeError(f"{kind} at {sample.contacts}: sync {result.status}: {result.sync_errors[:3]}")
            run.journal_rows = warehouse.count_rows("crm_sync_journal")
            run.state_rows = (state_before, warehouse.count_rows("crm_sync_state"))
            out[kind] = run
            say(f"  {sample.contacts:,} contacts, ranges of {sample.range_rows:,}: {kind}: {len(run.statements)} "
                f"statements, {time.perf_counter() - started:.1f} s")

        sync("first sync", sample.contacts + businesses)
        facts["profile"] = measure_profile(warehouse, sample.contacts)
        facts["names"] = physical_names(warehouse)
        facts["clustering"] = (table_clustering(warehouse) if clustering_mode == "tables"
                               else {t.name: t.cluster_by for t in TABLES.values() if t.cluster_by})
        sync("no-op", 0)
        edits = list(range(1, sample.contacts + 1, max(1, sample.contacts // sample.warehouse_edits)))
        edits = edits[:sample.warehouse_edits]
        warehouse.upsert_contacts([{"contact_id": i, "canonical_name": f"Bench Changed{i}"} for i in edits])
        sync("1 % changed", len(edits))
        fold = KindRun(x=warehouse.count_rows("crm_sync_journal"), u=u, records=sample.contacts + businesses)
        fold.journal_rows = fold.x
        fold.state_rows = (warehouse.count_rows("crm_sync_state"),) * 2
        recording = fold.statements
        warehouse.fold_journal(force=True)
        recording = None
        out[FOLD] = fold
        rows, _ = warehouse._run(
            "SELECT s.crm_id AS crm_id FROM {crm_sync_state} AS s WHERE s.object_type = 'person' "
            "AND s.crm_id IS NOT NULL ORDER BY s.record_key LIMIT @n",
            (_scalar_int("n", sample.twenty_edits),), fetch=True)
        crm_ids = [r["crm_id"] for r in rows]
        edit_in_twenty(sandbox, crm_ids, deadline)
        warehouse.pending_fold_minutes = NEVER_DUE  # the pull stages; its landing is recorded apart
        sync(KINDS[3], len(crm_ids))
        landing = KindRun(x=warehouse.pending_summary()[0], u=u, records=sample.contacts + businesses)
        landing.journal_rows = warehouse.count_rows("crm_sync_journal")
        landing.state_rows = (warehouse.count_rows("crm_sync_state"),) * 2
        recording = landing.statements
        warehouse.fold_pending(force=True)
        recording = None
        out[LANDING] = landing
        warehouse.pending_fold_minutes = 0.0
        sync("sync --full", sample.contacts + businesses, full=True)
        serve_batches(sample, warehouse, sandbox, out, deadline, u, sample.contacts + businesses)
    finally:
        warehouse.close()
        client.delete_dataset(f"{PROJECT}.{dataset}", delete_contents=True, not_found_ok=True)
    return out, facts


def webhook_batches(events: int, seconds: float, statements_per_batch: float, window: float, limit: int,
                    seed: int = 17) -> list[int]:
    """Event counts of the micro-batches `serve`'s writer forms from `events` arriving at random
    (Poisson) over `seconds`: a batch starts with the oldest pending event, gathers for the writer's
    window (unless full), and is applied for `statements_per_batch` BigQuery statements; what
    arrives meanwhile waits for the next batch."""
    import random

    rng = random.Random(seed)
    arrivals = sorted(rng.uniform(0, seconds) for _ in range(events))
    sizes: list[int] = []
    i, free_at = 0, 0.0
    while i < len(arrivals):
        start = max(arrivals[i], free_at) + window
        j = i
        while j < len(arrivals) and arrivals[j] <= start and j - i < limit:
            j += 1
        sizes.append(j - i)
        free_at = start + statements_per_batch * BIGQUERY_SECONDS_PER_STATEMENT
        i = j
    return sizes


def serve_batches(sample: Sample, warehouse: BigQueryWarehouse, sandbox: SandboxServer, out: dict[str, KindRun],
                  deadline: Deadline, u: int, records: int) -> None:
    """`serve`'s writer applying webhook micro-batches, in process: the lease claimed, a run row
    opened, then batches of real Twenty edits applied by `apply_events` (the writer's own call), the
    lease renewed once (recorded apart: renewals come by the clock), the run closed. The batch sizes
    are those of the target's hour (`webhook_batches` at 3 statements a batch), as many of them as
    the sample has people for: the statements per batch do not depend on the size, but the storage
    blocks a statement reads do (one per key, up to all of them)."""
    from truth_forge.core.lease import WriterLease
    from truth_forge.core.reporting import ErrorReporter
    from truth_forge.realtime.applier import apply_events
    from truth_forge.realtime.webhooks import WebhookEvent
    from truth_forge.realtime.writer import ServeOptions
    from truth_forge.sync.context import SyncContext

    options = ServeOptions(batch_window=BIGQUERY_SERVE_BATCH_WINDOW, batch_size=BIGQUERY_SERVE_BATCH_EVENTS)  # what serve chooses on BigQuery
    sizes = webhook_batches(SERVE_EVENTS_PER_HOUR, 3600, 3, options.batch_window, options.batch_size)
    batches = sizes[:sample.serve_batches]
    rows, _ = warehouse._run(
        "SELECT s.crm_id AS crm_id FROM {crm_sync_state} AS s WHERE s.object_type = 'person' "
        "AND s.crm_id IS NOT NULL ORDER BY s.record_key DESC LIMIT @n", (_scalar_int("n", sum(batches)),), fetch=True)
    crm_ids = [r["crm_id"] for r in rows]
    # Each batch edits records of its own, as many as the target's batches hold (the keys a batch
    # looks up decide how many storage blocks it reads): as many whole batches as the sample has people.
    batches = list(itertools.takewhile(lambda end: end <= len(crm_ids), itertools.accumulate(batches)))
    batches = [end - start for start, end in zip([0, *batches], batches, strict=False)]
    if len(batches) < 2:
        raise SystemExit(f"the sample of {sample.contacts:,} contacts holds fewer than two webhook batches of "
                         f"{sizes[0]:,} events: raise --small/--large")
    events = []

    def as_event(http: httpx.Client, crm_id: str) -> None:
        record = http.get(f"/rest/people/{crm_id}").json()["data"]["person"]
        events.append(WebhookEvent("person", "updated", crm_id, record, record.get("updatedAt")))

    edit_in_twenty(sandbox, crm_ids, deadline, first_name="Hooked", then=as_event)
    run = KindRun(x=len(batches), u=u, records=records)
    renewal = KindRun(x=0, u=u, records=records)
    recorded = run.statements
    warehouse.statements.listeners.append(lambda s: recorded.append(s))
    try:
        started = time.perf_counter()
        with twenty(sandbox.base_url) as c:
            lease = WriterLease(warehouse, purpose="bench serve")
            lease.try_acquire()
            run_id = warehouse.start_run()
            reporter = ErrorReporter(run_id, ())
            ctx = SyncContext(warehouse, c, SCHEMA, reporter)
            at = 0
            for size in batches:
                deadline.check("the webhook batches")
                apply_events(ctx, events[at:at + size])
                reporter.flush(warehouse)
                at += size
            recorded = renewal.statements
            lease.renew()
            recorded = run.statements
            warehouse.finish_run(run_id, "succeeded", {})
            lease.release()
    finally:
        warehouse.statements.listeners.pop()
    run.journal_rows = warehouse.count_rows("crm_sync_journal")
    out[SERVE_BATCHES] = run
    out["serve: lease renewal"] = renewal
    say(f"  {sample.contacts:,} contacts: {len(batches)} webhook batches ({len(events)} events): "
        f"{len(run.statements)} statements, {time.perf_counter() - started:.1f} s")


def _scalar_int(name: str, value: int) -> Any:
    from truth_forge.warehouse.base import Scalar

    return Scalar(name, "INT64", value)


def measure_profile(warehouse: BigQueryWarehouse, contacts: int) -> SampleProfile:
    """Average column sizes of every table after a first sync, and rows per contact."""
    column_bytes: dict[str, dict[str, float]] = {}
    rows_per_contact: dict[str, float] = {}
    for name in TABLES:
        rows, sizes = measure_table(warehouse, name)
        column_bytes[name] = sizes
        rows_per_contact[name] = rows / max(1, contacts)
    if not any(column_bytes["crm_sync_journal"].values()):
        # No journal rows to measure (this code keeps none): its rows are the state's, plus its own.
        state = column_bytes["crm_sync_state"]
        column_bytes["crm_sync_journal"] = {**state, "seq": 8.0, "run_id": 38.0, "fields": 2.0 + 60}
    base = {}
    for object_type in ("person", "company"):
        _n, sizes = measure_table(warehouse, "crm_sync_state", f"WHERE t.object_type = '{object_type}'")
        base[object_type] = sizes.get("base", 0.0)
    # Does the merge base hold the computed JSON, or digests of it (sync/views.py)? Read one.
    rows, _ = warehouse._run("SELECT TO_JSON_STRING(t.base) AS base FROM {crm_sync_state} AS t "
                             "WHERE t.object_type = 'person' AND t.base IS NOT NULL LIMIT 1", (), fetch=True)
    holds_json = not (rows and DIGEST in str(rows[0]["base"]))
    return SampleProfile(column_bytes, rows_per_contact, base, base_holds_json=holds_json)


# -- the fit and the prices ----------------------------------------------------------------------

def fit(points: list[tuple[float, float, float]]) -> tuple[float, float, float]:
    """(a, b, c) with count = a + b*x + c*u through the points (x, u, count), dropping a term the
    points cannot tell apart (x or u the same everywhere), by least squares."""
    xs = {p[0] for p in points}
    us = {p[1] for p in points}
    terms = [lambda p: 1.0]
    names = ["a"]
    if len(xs) > 1:
        terms.append(lambda p: p[0])
        names.append("b")
    if len(us) > 1:
        terms.append(lambda p: p[1])
        names.append("c")
    while True:
        coef = _least_squares([[t(p) for t in terms] for p in points], [p[2] for p in points])
        if coef is not None:
            break
        terms.pop()
        names.pop()
    out = dict(zip(names, coef))
    return out.get("a", 0.0), out.get("b", 0.0), out.get("c", 0.0)


def _least_squares(rows: list[list[float]], ys: list[float]) -> list[float] | None:
    """Solve the normal equations by Gaussian elimination; None when they are singular."""
    n = len(rows[0])
    m = [[sum(r[i] * r[j] for r in rows) for j in range(n)] + [sum(r[i] * y for r, y in zip(rows, ys))]
         for i in range(n)]
    for col in range(n):
        pivot = max(range(col, n), key=lambda r: abs(m[r][col]))
        if abs(m[pivot][col]) < 1e-9:
            return None
        m[col], m[pivot] = m[pivot], m[col]
        for r in range(n):
            if r != col:
                f = m[r][col] / m[col][col]
                m[r] = [a - f * b for a, b in zip(m[r], m[col])]
    return [m[i][n] / m[i][i] for i in range(n)]


@dataclass
class ShapePrice:
    shape: str
    kind: str  # SELECT / MERGE / ...
    tables: str  # what it reads / targets
    count: float  # at the target
    billed_each: float
    sample_counts: list[int]
    # Bytes each statement bills per table (averaged over the examples), the DML target whole included.
    by_table: dict[str, float] = field(default_factory=dict)

    @property
    def billed(self) -> float:
        return self.count * self.billed_each


def _bytes_by_table(costs: list[Cost]) -> dict[str, float]:
    """What the statements read of each table on average (the DML target's whole size counted to it)."""
    out: dict[str, float] = defaultdict(float)
    for cost in costs:
        for read in cost.reads:
            out[read.table] += read.bytes / len(costs)
        if cost.target:
            out[cost.target] += cost.target_bytes / len(costs)
    return dict(out)


def price_kind(kind: str, runs: list[KindRun], names: list[dict[str, str]], profile: SampleProfile,
               clustering: dict[str, tuple[str, ...]], contacts: int, range_rows: int | None,
               block_bytes: int, x_n: int | None = None, changed: int | None = None,
               folds: list[KindRun] | None = None) -> list[ShapePrice]:
    """Each statement shape of a run kind: its count fitted at `x_n` records changed (default: what
    the kind changes at `contacts`) and its average bill there; `changed` rows of the contacts
    are what a `updated_at >= @since` filter selects (default `x_n`). With `folds` (the recorded
    journal folds), the run leaves its journal entries unfolded, as on BigQuery at the target: its
    statements see the journal's average backlog, and it pays its share of a fold."""
    x_n = changed_at(kind, contacts) if x_n is None else x_n
    u_n = ranges_at(contacts, range_rows)
    changed = x_n if changed is None else changed
    journal = fit([(r.x, r.u, r.journal_rows) for r in runs])
    entries = max(0, round(journal[0] + journal[1] * x_n + journal[2] * u_n))
    state_rows = contacts + round(contacts * BUSINESSES_PER_CONTACT)
    # Between two folds the journal grows from empty to the share: half of it on average.
    journal_rows = entries + (round(FOLD_SHARE * state_rows / 2) if folds else 0)
    # The state's rows as the run's statements see them, on average: what it held before and after
    # the run, per record (a first sync fills it from empty: half on average).
    largest_run = max(runs, key=lambda r: (r.records, r.x))
    state_fill = sum(largest_run.state_rows) / 2 / max(1, largest_run.records)
    sizes: TableSizes = sizes_for_contacts(contacts, profile, json_bytes_per_contact=JSON_BYTES_PER_CONTACT,
                                           journal_rows=journal_rows, state_fill=state_fill, clustering=clustering,
                                           changed_fraction=changed / contacts, block_bytes=block_bytes)
    by_shape: list[dict[str, list[Statement]]] = []
    for run, physical in zip(runs, names):
        groups: dict[str, list[Statement]] = defaultdict(list)
        for s in run.statements:
            groups[shape_of(s.sql, physical)].append(s)
        by_shape.append(groups)
    out = []
    largest = max(range(len(runs)), key=lambda i: (runs[i].records, runs[i].x, len(runs[i].statements)))
    for shape in sorted({s for g in by_shape for s in g}):
        counts = [len(g.get(shape, [])) for g in by_shape]
        if kind in KINDS and LEASE_RENEWAL.match(shape):
            continue  # by the clock, whether or not a sample ran long enough to renew (`lease_renewals`)
        a, b, c = fit([(r.x, r.u, n) for r, n in zip(runs, counts)])
        count = max(0.0, round(a + b * x_n + c * u_n))
        examples = by_shape[largest].get(shape) or next(g[shape] for g in by_shape if shape in g)
        physical = names[largest] if by_shape[largest].get(shape) else names[0]
        model = CostModel(sizes, physical)
        costs = [model.price(s) for s in examples]
        each = sum(cost.bytes_billed for cost in costs) / len(costs)
        first = costs[0]
        touched = sorted({r.table for r in first.reads if r.columns} | ({first.target} if first.target else set()))
        out.append(ShapePrice(shape, first.kind, ", ".join(touched) or "no table", count, each, counts,
                              _bytes_by_table(costs)))
    if folds and entries:
        # One fold per FOLD_SHARE x state rows of entries; this run's part of it.
        full = round(FOLD_SHARE * state_rows)
        for price in price_kind(FOLD, folds, names, profile, clustering, contacts, range_rows, block_bytes,
                                x_n=full):
            price.count *= entries / full
            price.tables += f" (its {entries / full:.0%} of a fold)"
            out.append(price)
    return out


def lease_renewals(kind: str, runs: list[dict[str, KindRun]], names: list[dict[str, str]], profile: SampleProfile,
                   clustering: dict[str, tuple[str, ...]], contacts: int, range_rows: int | None,
                   block_bytes: int) -> list[ShapePrice]:
    """A run's lease renewals, counted over the time it takes at Twenty Cloud's ceiling, priced as
    the renewal the serve sample recorded (every sample records one, however fast its runs were)."""
    prices = price_kind("serve: lease renewal", [r["serve: lease renewal"] for r in runs], names, profile,
                        clustering, contacts, range_rows, block_bytes, x_n=0)
    for price in prices:
        price.count = renewals_during(changed_at(kind, contacts))
    return [p for p in prices if p.count]


def serve_hour(runs: list[dict[str, KindRun]], names: list[dict[str, str]], profile: SampleProfile,
               clustering: dict[str, tuple[str, ...]], contacts: int, range_rows: int | None,
               block_bytes: int) -> list[ShapePrice]:
    """An hour of `serve` with SERVE_EVENTS_PER_HOUR events: the webhook batches the writer forms
    (fitted per batch), a lease renewal every third of its TTL, and the scheduled syncs (each priced
    as a pull of the edits of its interval: they find the webhooks' records already applied)."""
    from truth_forge.core.lease import DEFAULT_TTL
    from truth_forge.realtime.writer import ServeOptions

    batch_runs = [r[SERVE_BATCHES] for r in runs if SERVE_BATCHES in r]
    if not batch_runs:
        return []
    total = fit([(r.x, r.u, len(r.statements)) for r in batch_runs])
    options = ServeOptions(batch_window=BIGQUERY_SERVE_BATCH_WINDOW, batch_size=BIGQUERY_SERVE_BATCH_EVENTS)  # what serve chooses on BigQuery
    batches = len(webhook_batches(SERVE_EVENTS_PER_HOUR, 3600, max(1.0, total[1]), options.batch_window,
                                  options.batch_size))
    folds = [r[FOLD] for r in runs if FOLD in r]
    out = price_kind(SERVE_BATCHES, batch_runs, names, profile, clustering, contacts, range_rows, block_bytes,
                     x_n=batches, changed=SERVE_EVENTS_PER_HOUR, folds=folds)
    renewals = 3600 / (DEFAULT_TTL.total_seconds() / 3)
    renewal = price_kind("serve: lease renewal", [r["serve: lease renewal"] for r in runs], names, profile,
                         clustering, contacts, range_rows, block_bytes, x_n=0)
    syncs = 60 / BIGQUERY_SERVE_SYNC_INTERVAL_MINUTES
    per_sync = round(SERVE_EVENTS_PER_HOUR / syncs)
    pulls = price_kind(KINDS[3], [r[KINDS[3]] for r in runs], names, profile, clustering, contacts, range_rows,
                       block_bytes, x_n=per_sync, folds=folds)
    # What webhooks and syncs staged lands once an interval (serve's default on BigQuery).
    landings = 60 / BIGQUERY_SERVE_FOLD_MINUTES
    landed = price_kind(LANDING, [r[LANDING] for r in runs], names, profile, clustering, contacts, range_rows,
                        block_bytes, x_n=round(SERVE_EVENTS_PER_HOUR / landings), folds=folds)
    for p in renewal:
        p.count *= renewals
    for p in pulls:
        p.count *= syncs
    for p in landed:
        p.count *= landings
    return out + renewal + pulls + landed


# -- the section ---------------------------------------------------------------------------------

def fmt_gb(b: float, unit: bool = True) -> str:
    gb = b / GB
    if gb == 0:
        return "0"
    if gb < 0.1:
        return f"{gb * 1000:,.0f} MB" if unit else f"{gb:,.3f}"
    text = f"{gb:,.1f}" if gb < 100 else f"{gb:,.0f}"
    return f"{text} GB" if unit else text


def fmt_usd(b: float) -> str:
    d = dollars(b)
    return f"${d:,.2f}" if d < 100 else f"${d:,.0f}"


def by_kind(prices: list[ShapePrice]) -> str:
    counts: Counter[str] = Counter()
    for p in prices:
        counts[p.kind] += p.count  # type: ignore[assignment]
    return " · ".join(f"{k} {_count(n)}" for k, n in sorted(counts.items(), key=lambda kv: -kv[1]) if n >= 0.05)


def _count(n: float) -> str:
    return f"{n:,.0f}" if n >= 9.95 or n == int(n) else f"{n:.1f}"


def render(label: str, results: dict[int, dict[str, list[ShapePrice]]], command: str, seconds: float,
           samples: list[Sample], clustering: dict[str, tuple[str, ...]], block_bytes: int,
           full_read: float) -> str:
    small, big = TARGETS
    layout = "; ".join(f"{t} ({', '.join(c)})" for t, c in sorted(clustering.items())) or "none"
    lines = [
        f"### BigQuery on-demand cost per run, modelled ({label})",
        "",
        f"`{command}` — {today()}, {seconds:.0f} s; {machine_line()}; load {load_average()}; "
        f"commit {git_commit()}.",
        "",
        f"Statements recorded from the BigQuery engine on bqemulator (samples of "
        f"{', '.join(f'{s.contacts:,}' for s in samples)} contacts), counts extrapolated per statement shape "
        f"(a + b·records changed + c·key ranges), each priced by `truth_forge/warehouse/cost_model.py` at "
        f"N contacts with {JSON_BYTES_PER_CONTACT:,} bytes of JSON per contact, 1 business per 20 contacts; "
        f"$6.25/TiB; GB = 10^9 bytes. Clustering: {layout}; blocks of {block_bytes // 2**20} MiB.",
        "",
        f"| run | statements at {big // 1_000_000}M, by kind | GB at {small // 1_000_000}M | $ at "
        f"{small // 1_000_000}M | GB at {big // 1_000_000}M | $ at {big // 1_000_000}M | where it goes at "
        f"{big // 1_000_000}M |",
        "|---|---|---|---|---|---|---|",
    ]
    for kind in (*KINDS, SERVE):
        at_small, at_big = results[small].get(kind), results[big].get(kind)
        if at_small is None or at_big is None:
            lines.append(f"| {kind} | not measured | | | | | |")
            continue
        total_small = sum(p.billed for p in at_small)
        total_big = sum(p.billed for p in at_big)
        top = sorted(at_big, key=lambda p: -p.billed)[:2]
        where = "; ".join(f"{p.kind} {p.tables} ×{_count(p.count)} ({fmt_gb(p.billed_each)} each)"
                          for p in top if p.billed > 0)
        lines.append(f"| {kind} | {by_kind(at_big)} | {fmt_gb(total_small, False)} | {fmt_usd(total_small)} | "
                     f"{fmt_gb(total_big, False)} | {fmt_usd(total_big)} | {where} |")
    first = sum(p.billed for p in results[big].get("first sync", []))
    lines += [
        "",
        f"Every column of every table at {big // 1_000_000}M (the sync state full) is {fmt_gb(full_read)}: the first "
        f"sync bills {first / full_read:,.0f} full reads of the tables.",
        "",
        "How each row was run: the samples edit 20-40 % of their contacts (\"1 % changed\") and 1/15-1/6 of their "
        "people in Twenty (the pull), so per-batch statements are seen several times; the fit carries them to 1 % "
        f"and {PULL_EDITS:,} at N. A first sync's statements see the sync state half-filled on average (it grows "
        f"from empty). A run's lease renewals (every 20 s, by the clock) are counted over the time the run takes "
        f"at Twenty Cloud's ceiling ({TWENTY_CLOUD_RECORDS_PER_SECOND:.0f} records a second), not fitted per record. "
        f"The serve hour: webhook micro-batches applied in process by the writer's own `apply_events` "
        f"(batches of the hour's sizes, as many as a sample has people for), fitted per batch and counted for "
        f"{SERVE_EVENTS_PER_HOUR:,} events arriving at random, gathered for {BIGQUERY_SERVE_BATCH_WINDOW:g} s "
        f"(serve's window on BigQuery), {BIGQUERY_SECONDS_PER_STATEMENT:g} s per BigQuery statement; plus a lease "
        f"renewal every 20 s and the scheduled syncs (every {BIGQUERY_SERVE_SYNC_INTERVAL_MINUTES:g} minutes), "
        "each priced as a pull of its interval's edits (extrapolated, not a real hour).",
        "",
        "Pulled values are staged beside contacts on BigQuery (`crm_sync_pending`, INSERT only) and land with one "
        "MERGE per table (`warehouse/pending_rows.py`): the pull row pays one landing of its edits, as a `sync` "
        f"lands what it pulled before it ends; the serve hour lands every {BIGQUERY_SERVE_FOLD_MINUTES:g} minutes "
        "(`TRUTH_FORGE_SERVE_FOLD_MINUTES`), and its webhook batches and scheduled syncs only stage.",
        "",
        f"The sync-state journal on BigQuery is folded into the state once it holds {FOLD_SHARE:.0%} of the state's "
        "rows (`journal_fold_share`): the no-op, 1 % changed, pull and serve rows leave their entries unfolded, their "
        f"statements read the journal's average backlog ({FOLD_SHARE / 2:.0%} of the state's rows) beside the state, "
        "and each pays its share of one fold (the fold's statements recorded after the samples' 1 % runs, priced "
        "with a full journal, times this run's entries over the entries a fold takes in). First syncs and "
        "`sync --full` fold as they go.",
        "",
        "Goals at 10M (issue 17): no-op ≤ 1 GB (stretch ≤ 100 MB); 1 % changed ≤ 10 GB; first sync ≤ 3 "
        "full reads of the tables; no statement billing a whole table per batch.",
    ]
    return "\n".join(lines)


def replace_section(document: str, label: str, section: str) -> str:
    """The document with this label's section replaced (appended when it has none); nothing else changes."""
    return replace_marked(document, f"bigquery-cost-{label}", "benchmarks/bench_bigquery_cost.py", section)


# -- main ----------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--label", default="after", help="the section's name in BENCHMARKS.md (before / after)")
    parser.add_argument("--write", type=Path, help="write or replace this label's section of this file")
    parser.add_argument("--small", type=int, default=1500, help="contacts in the small sample")
    parser.add_argument("--large", type=int, default=3000, help="contacts in the two large samples")
    parser.add_argument("--clustering", choices=("tables", "schema"), default="tables",
                        help="clustering as the tables report it (default), or as schema.py declares it")
    parser.add_argument("--block-mib", type=int, default=None, help="storage block size (default: the model's)")
    parser.add_argument("--timeout", type=float, default=900.0, help="bound on the whole run, seconds")
    parser.add_argument("--json", type=Path, default=ROOT / ".bench" / "bigquery-cost.json")
    args = parser.parse_args(argv)
    from truth_forge.warehouse.cost_model import BLOCK_BYTES

    block_bytes = (args.block_mib or BLOCK_BYTES // 2**20) * 2**20
    deadline = Deadline(args.timeout)
    started = time.perf_counter()
    s, n = args.small, args.large
    # Range sizes that do not divide the samples (so every sample has a short last range).
    samples = [Sample(s, round(n / 3) + 7, s // 5, s // 15, 20), Sample(n, round(n / 3) + 7, n * 2 // 5, n // 6, 60),
               Sample(n, round(n / 8) + 3, n * 2 // 5, n // 6, 60)]
    engine_range_rows = getattr(BigQueryWarehouse, "change_range_rows", None)
    bench_dir = ROOT / ".bench"
    bench_dir.mkdir(exist_ok=True)
    runs: list[dict[str, KindRun]] = []
    names: list[dict[str, str]] = []
    facts: dict[str, Any] = {}
    with bqemulator(bench_dir / "bqemulator-cost.log") as endpoint, \
            SandboxServer(SandboxConfig(api_keys=[API_KEY], member_tokens={MEMBER_TOKEN: "Ada Lovelace"},
                                        rate_limit_per_minute=None)) as sandbox:
        client = bigquery_client(endpoint)
        for sample in samples:
            say(f"sample: {sample.contacts:,} contacts, key ranges of {sample.range_rows:,}")
            kind_runs, sample_facts = run_sample(sample, client, sandbox, deadline, args.clustering)
            runs.append(kind_runs)
            names.append(sample_facts.pop("names"))
            facts = sample_facts  # the largest sample's profile and clustering are used
        client.close()
    profile: SampleProfile = facts["profile"]
    clustering: dict[str, tuple[str, ...]] = facts["clustering"]
    results: dict[int, dict[str, list[ShapePrice]]] = {}
    for contacts in TARGETS:
        results[contacts] = {}
        for kind in KINDS:
            kind_runs = [r[kind] for r in runs if kind in r]
            # First syncs and `sync --full` fold as they go (a state filling from empty; the walk
            # reads the state table alone); the other runs leave the journal to a later fold.
            folds = None if kind in ("first sync", "sync --full") else [r[FOLD] for r in runs if FOLD in r]
            results[contacts][kind] = price_kind(kind, kind_runs, names, profile, clustering, contacts,
                                                 engine_range_rows, block_bytes, folds=folds)
            results[contacts][kind] += lease_renewals(kind, runs, names, profile, clustering, contacts,
                                                      engine_range_rows, block_bytes)
            if kind == KINDS[3]:  # a `sync` lands what its pull staged before it ends
                results[contacts][kind] += price_kind(LANDING, [r[LANDING] for r in runs], names, profile,
                                                      clustering, contacts, engine_range_rows, block_bytes,
                                                      x_n=PULL_EDITS, folds=folds)
    for contacts in TARGETS:
        results[contacts][SERVE] = serve_hour(runs, names, profile, clustering, contacts, engine_range_rows,
                                              block_bytes)
    seconds = time.perf_counter() - started
    command = "python benchmarks/bench_bigquery_cost.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    everything = sizes_for_contacts(TARGETS[-1], profile, json_bytes_per_contact=JSON_BYTES_PER_CONTACT)
    full_read = sum(t.total_bytes for t in everything.tables.values())
    section = render(args.label, results, command.strip(), seconds, samples, clustering, block_bytes, full_read)
    args.json.parent.mkdir(exist_ok=True)
    args.json.write_text(json.dumps({
        "label": args.label, "at": dt.datetime.now(dt.UTC).isoformat(),
        "profile": {"column_bytes": profile.column_bytes, "rows_per_contact": profile.rows_per_contact,
                    "base_bytes": profile.base_bytes},
        "clustering": clustering,
        "results": {str(n): {k: [p.__dict__ for p in v] for k, v in r.items()} for n, r in results.items()},
    }, indent=2, default=str))
    print(section)
    print()
    for kind in (*KINDS, SERVE):
        print(f"{kind} at {TARGETS[-1]:,}: by shape")
        for p in sorted(results[TARGETS[-1]][kind], key=lambda p: -p.billed)[:6]:
            print(f"  {p.count:>9,.0f} × {fmt_gb(p.billed_each):>9}  {p.kind:<12} {p.tables:<45} "
                  f"samples {p.sample_counts}  {p.shape[:90]}")
            parts = sorted(p.by_table.items(), key=lambda kv: -kv[1])
            print("              " + " · ".join(f"{table} {fmt_gb(b)}" for table, b in parts if b >= 1e6))
    if args.write:
        text = args.write.read_text() if args.write.exists() else "# Benchmarks\n"
        args.write.write_text(replace_section(text, args.label, section))
        say(f"wrote the {args.label} section of {args.write}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
