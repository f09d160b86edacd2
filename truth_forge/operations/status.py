"""`truth-forge status`: what ran, what is still failing, where the watermarks are, what comes next.

Why it exists: without it, "did last night's sync work, and what is stuck?" needs SQL against the
bookkeeping tables. Everything here is read from the warehouse with cheap queries (no change
detection: `sync --dry-run` gives the exact plan) plus one metadata read from Twenty for the setup
check, which is skipped, with the reason, when Twenty cannot be asked.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from truth_forge.sync import own_writes
from truth_forge.sync.objects import SYNC_ORDER
from truth_forge.sync.pull import DEFAULT_OVERLAP

RECENT_RUNS = 5
NOT_CHECKED_OFFLINE = "not checked: --offline"


@dataclass
class StatusReport:
    warehouse_url: str
    runs: list[dict[str, Any]]
    open_kinds: list[dict[str, Any]]
    watermarks: dict[str, str]
    retry_lists: dict[str, int]
    synced: dict[str, dict[str, int]]
    never_pushed: dict[str, int]
    setup: str
    next_run: list[str] = field(default_factory=list)
    own_writes: list[str] = field(default_factory=list)  # whether pulls skip our own writes, per workspace
    # Pulled values waiting in crm_sync_pending to land in contacts/businesses (BigQuery): how many, since when.
    waiting_to_land: dict[str, Any] = field(default_factory=dict)

    @property
    def open_errors(self) -> int:
        return sum(k["open_errors"] for k in self.open_kinds)

    @property
    def healthy(self) -> bool:
        last = self.runs[0]["status"] if self.runs else None
        setup_ok = self.setup.startswith("complete") or self.setup == NOT_CHECKED_OFFLINE
        return self.open_errors == 0 and last in (None, "succeeded") and setup_ok

    def as_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps({**asdict(self), "open_errors": self.open_errors}, default=str))


def gather_status(warehouse: Any, *, warehouse_url: str, setup: str) -> StatusReport:
    """Read the bookkeeping and say what the next run will do."""
    from truth_forge.operations.progress import estimate_push

    kv = warehouse.bookkeeping_values()
    watermarks = {k.removeprefix("watermark:"): v for k, v in kv.items()
                  if k.startswith("watermark:pull") and not k.startswith("watermark:pull-retry")}
    retry_lists = {k.removeprefix("watermark:pull-retry:"): len(json.loads(v or "[]")) for k, v in kv.items()
                   if k.startswith("watermark:pull-retry:")}
    synced = warehouse.sync_state_counts()
    report = StatusReport(
        warehouse_url=warehouse_url,
        runs=warehouse.recent_runs(RECENT_RUNS),
        open_kinds=warehouse.open_error_kinds(),
        watermarks=watermarks,
        retry_lists=retry_lists,
        synced=synced,
        never_pushed=estimate_push(warehouse, synced),
        setup=setup,
        own_writes=[own_writes.describe(v) for k, v in kv.items() if k.startswith(f"watermark:{own_writes.MARK_PREFIX}")],
    )
    waiting, oldest = warehouse.pending_summary()
    if waiting:
        report.waiting_to_land = {"records": waiting, "since": oldest}
    report.next_run = next_run(report)
    return report


def next_run(report: StatusReport) -> list[str]:
    """What the next `truth-forge sync` will do, in the order it does it."""
    if not report.setup.startswith(("complete", "not checked")):
        return ["stop at once: the workspace is not set up (run `truth-forge setup`)"]
    steps = []
    for obj in SYNC_ORDER:
        mark = report.watermarks.get(f"pull:{obj.object_type}")
        since = (f"changed since {_minus_overlap(mark)} (watermark {mark} less {DEFAULT_OVERLAP.seconds // 60} min)"
                 if mark else "all of them (first pull)")
        skip = "; edits last made by this sync's API key left out" if any(o.startswith("on") for o in report.own_writes) else ""
        steps.append(f"pull {obj.plural}: {since}{skip}")
        if report.retry_lists.get(obj.object_type):
            steps.append(f"  and fetch again {report.retry_lists[obj.object_type]} {obj.plural} whose pull failed")
    if report.waiting_to_land:
        steps.append(f"land {report.waiting_to_land['records']} pulled records waiting beside the warehouse tables "
                     f"since {report.waiting_to_land['since']} (crm_sync_pending)")
    for obj in SYNC_ORDER:
        states = report.synced.get(obj.object_type, {})
        again = states.get("failed", 0) + states.get("pending", 0)
        new = report.never_pushed.get(obj.object_type, 0)
        steps.append(f"push {obj.plural}: {new} never sent" + (f", {again} failed or pending sent again" if again else "")
                     + ", and rows edited since (`sync --dry-run`)")
    return steps


def _minus_overlap(mark: str) -> str:
    try:
        moment = dt.datetime.fromisoformat(mark.replace("Z", "+00:00")) - DEFAULT_OVERLAP
    except ValueError:
        return mark
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def check_setup(settings: Any) -> str:
    """'complete', 'INCOMPLETE: ...' or 'not checked: <why>' (one metadata read)."""
    from truth_forge.core.crm_schema import CrmSchema, verify_schema
    from truth_forge.operations.failures import explain
    from truth_forge.twenty.client import TwentyClient

    try:
        schema = CrmSchema.load(settings.crm_schema_file)
        with TwentyClient.from_settings(settings, max_retries=1) as client:
            report = verify_schema(client, schema)
    except Exception as exc:
        explained = explain(exc)
        if explained is None:
            raise
        return f"not checked: {explained.message.splitlines()[0]}"
    if report["all_complete"]:
        count = sum(len(report[o]["present"]) for o in ("person", "company"))
        return f"complete ({count} custom fields)"
    missing = [f"{o}.{n}" for o in ("person", "company") for n in report[o]["missing"]]
    mismatched = [f"{o}.{m['field']}" for o in ("person", "company") for m in report[o]["mismatched"]]
    return "INCOMPLETE: " + ", ".join(missing + mismatched)[:300] + " (run `truth-forge setup`)"
