"""Watching a sync: progress bars on a terminal, JSON lines for machines, a summary table at the end.

Why it exists: a first sync of a large workspace spends hours of API requests, and a person (or a
log collector) must see where it is and how long it has left. The sync reports `SyncEvent`s to one
hook (`sync/context.py`); everything here is a subscriber of that hook and the sync knows none of it.

The time left is counted in requests, because requests are what a sync spends: records still to
read or write become requests (a pull page holds 200 records; a push batch is the configured batch
size and costs a write, plus a read-back per 200 records Twenty already has), and requests become seconds at the
client's budget (`TRUTH_FORGE_TWENTY_REQUESTS_PER_MINUTE`), or at the pace seen so far when Twenty
answers slower than the budget allows.

Totals: the pull's come from Twenty (`totalCount` of the query, free with the first page). The push's
come from change detection: an incremental detection knows its candidates before the first batch
(`changes_found`), and candidates that turn out unchanged count as looked at (`records_unchanged`),
so the steady state of a deployment, update runs, has a total and a time left. An audit (the first
detection, the daily one, `--full`) reads as it goes and has no count until it ends: there the bar
starts from the rows that have no sync state yet (`estimate_push`: two COUNTs per object), exact on
a first sync, where the wait is long; when that estimate is zero or is passed, the total is shown as
unknown, never as 0.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import IO, Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn
from rich.table import Table

from truth_forge.sync.context import SyncEvent

PULL_PAGE_SIZE = 200  # records per pull page (sync/pull.py PAGE_SIZE)
OBJECT_TABLES = {"person": "contacts", "company": "businesses"}


def eta_seconds(remaining_requests: float, requests_per_minute: float, observed_per_second: float | None = None) -> float:
    """Seconds until `remaining_requests` are spent: at the budget, or slower if Twenty is slower."""
    rate = requests_per_minute / 60.0
    if observed_per_second is not None and observed_per_second > 0:
        rate = min(rate, observed_per_second)
    return remaining_requests / rate


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


@dataclass
class Task:
    """One bar: a phase of one object."""

    phase: str
    object_type: str
    done: int = 0
    failed: int = 0
    unchanged: int = 0  # push candidates that needed no write
    total: int | None = None
    finished: bool = False
    requests: int = 0  # spent on this bar's records so far
    estimated: bool = False  # the total is the push's estimate, not a count Twenty gave

    @property
    def label(self) -> str:
        return f"{self.phase} {self.object_type}"

    @property
    def seen(self) -> int:
        return self.done + self.failed + self.unchanged

    def remaining_requests(self, batch_size: int) -> int | None:
        if self.finished:
            return 0
        if self.total is None:
            return None
        left = max(0, self.total - self.seen)
        seen = self.done + self.failed  # the records that cost requests
        if seen and self.requests:
            return math.ceil(left * self.requests / seen)  # at the cost per record seen so far
        if self.phase != "push":  # the pull and the full pass read pages
            return math.ceil(left / PULL_PAGE_SIZE)
        # A write per batch, and at most a read-back per page of records Twenty already has.
        return math.ceil(left / max(1, batch_size)) + math.ceil(left / PULL_PAGE_SIZE)


@dataclass
class ProgressModel:
    """The run as its events tell it: pure bookkeeping that every display reads."""

    requests_per_minute: float
    batch_size: int = 60
    push_estimates: Mapping[str, int] = field(default_factory=dict)
    clock: Callable[[], float] = time.monotonic
    tasks: dict[tuple[str, str], Task] = field(default_factory=dict)
    requests: int = 0
    requests_at_start: int = 0
    started: float | None = None
    run_id: str | None = None

    def apply(self, event: SyncEvent) -> Task | None:
        """Fold one event in; returns the task it changed, if any."""
        spent, self.requests = event.requests - self.requests, event.requests
        if event.kind == "run_started":
            self.started = self.clock()
            self.requests_at_start = event.requests
            self.run_id = str(event.detail.get("run_id") or "") or None
            return None
        if event.phase is None or event.object_type is None:
            return None
        task = self._task(event.phase, event.object_type)
        if event.kind != "phase_started":  # what was spent before a phase began is not its own
            task.requests += spent  # the requests since the last event went to this bar's records
        if event.kind == "phase_started" and event.phase == "push" and event.total is None:
            # Zero rows without state says nothing about edited ones: unknown, not 0.
            task.total = self.push_estimates.get(event.object_type) or None
            task.estimated = task.total is not None
        if event.total is not None:
            task.total, task.estimated = event.total, False
        if event.kind in ("page_read", "batch_written"):
            task.done += event.count
        elif event.kind == "records_failed":
            task.failed += event.count
        elif event.kind == "records_unchanged":
            task.unchanged += event.count
        elif event.kind == "phase_finished":
            task.finished = True
            task.total = task.seen
        if task.total is not None and task.seen > task.total:
            # More than estimated (rows edited since their last sync): the rest is unknown now.
            task.total = None if task.estimated and not task.finished else task.seen
        return task

    def _task(self, phase: str, object_type: str) -> Task:
        key = (phase, object_type)
        if key not in self.tasks:
            self.tasks[key] = Task(phase, object_type)
        return self.tasks[key]

    @property
    def run_requests(self) -> int:
        """Requests this run has spent (the client's counter runs across runs of one process)."""
        return self.requests - self.requests_at_start

    def observed_rate(self) -> float | None:
        """Requests per second so far (None until a few requests went out)."""
        if self.started is None:
            return None
        spent = self.run_requests
        elapsed = self.clock() - self.started
        return spent / elapsed if spent >= 5 and elapsed > 0 else None

    def eta(self, task: Task) -> float | None:
        remaining = task.remaining_requests(self.batch_size)
        if remaining is None:
            return None
        return eta_seconds(remaining, self.requests_per_minute, self.observed_rate())


class RichProgress:
    """Progress bars on a terminal: one per phase and object, with records, requests and time left."""

    def __init__(self, model: ProgressModel, console: Console) -> None:
        self.model = model
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description:<22}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[note]}"),
            console=console,
            transient=False,
        )
        self._ids: dict[tuple[str, str], Any] = {}

    def __enter__(self) -> RichProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def __call__(self, event: SyncEvent) -> None:
        if self.model.apply(event) is None:
            return
        for key, task in self.model.tasks.items():
            if key not in self._ids:
                self._ids[key] = self.progress.add_task(task.label, total=task.total, note="")
            self.progress.update(self._ids[key], completed=task.seen, total=task.total, note=self._note(task))
            if task.total is None:  # rich's update() leaves a total alone when given None; None shows "?"
                for shown in self.progress.tasks:
                    if shown.id == self._ids[key]:
                        shown.total = None

    def _note(self, task: Task) -> str:
        note = f"{task.requests} requests"
        if task.failed:
            note += f", {task.failed} failed"
        if task.unchanged:
            note += f", {task.unchanged} unchanged"
        if not task.finished:
            eta = self.model.eta(task)
            note += f", ~{format_duration(eta)} left" if eta is not None else ", total not known yet"
        return note


class JsonLines:
    """One JSON object per event, for log collectors and pipes (`--log-format json`)."""

    def __init__(self, model: ProgressModel, stream: IO[str]) -> None:
        self.model = model
        self.stream = stream

    def __enter__(self) -> JsonLines:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stream.flush()

    def __call__(self, event: SyncEvent) -> None:
        task = self.model.apply(event)
        line: dict[str, Any] = {"time": _now(), "event": event.kind, "requests": self.model.run_requests}
        if event.phase:
            line.update(phase=event.phase, object_type=event.object_type, count=event.count)
        if task is not None:
            eta = self.model.eta(task)
            line.update(done=task.done, failed=task.failed, unchanged=task.unchanged, total=task.total,
                        eta_seconds=None if eta is None else round(eta, 1))
        if event.detail:
            line["detail"] = dict(event.detail)
        write_json_line(self.stream, line)


def write_json_line(stream: IO[str], line: Mapping[str, Any]) -> None:
    stream.write(json.dumps(line, sort_keys=True, default=str) + "\n")
    stream.flush()


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def estimate_push(warehouse: Any, states: Mapping[str, Mapping[str, int]] | None = None) -> dict[str, int]:
    """Rows each push will at least send: those without sync state yet (two COUNTs per object;
    `states`: `sync_state_counts()` when the caller has it already).

    Exact on a first sync; edits to rows synced before are found only by change detection."""
    states = warehouse.sync_state_counts() if states is None else states
    return {obj: max(0, warehouse.count_rows(table) - sum(states.get(obj, {}).values()))
            for obj, table in OBJECT_TABLES.items()}


# --- the summary at the end ------------------------------------------------------------------------

_COLUMNS = ("created", "upserted", "updated", "deleted", "unchanged", "conflicts", "caught_up", "failed")


def summary_table(counts: Mapping[str, Any]) -> Table:
    """The run's counts per phase and object as a table (only the columns some phase used)."""
    phases = {name: value for name, value in counts.items() if isinstance(value, Mapping)}
    used = [c for c in _COLUMNS if any(c in v for v in phases.values())]
    table = Table(show_edge=False, pad_edge=False)
    table.add_column("phase")
    for column in used:
        table.add_column(column.replace("_", " "), justify="right")
    for name, values in phases.items():
        table.add_row(name.replace("_", " "), *(_cell(values.get(c)) for c in used))
    return table


def _cell(value: Any) -> str:
    return "" if value is None else str(value)


def render_summary(console: Console, result: Any, *, max_errors: int = 20) -> None:
    """What a person reads after a run: status, counts per phase, the first errors, what to do."""
    counts = result.counts
    console.print(f"run {result.run_id}: [bold]{result.status}[/bold] - {counts.get('errors', 0)} errors open "
                  f"from this run, {counts.get('errors_closed', 0)} earlier ones closed, "
                  f"{counts.get('requests', 0)} API requests", highlight=False)
    console.print(summary_table(counts))
    failures = [e for e in result.sync_errors if e.get("resolved_at") is None]
    for error in failures[:max_errors]:
        where = " ".join(str(x) for x in (error["operation"], error.get("object_type"), error.get("record_key")) if x)
        console.print(f"  error {where}: {error['error_message']}", highlight=False, markup=False)
    if len(failures) > max_errors:
        console.print(f"  ... {len(failures) - max_errors} more", highlight=False)
    if failures:
        console.print(f"See them with: truth-forge errors --run {result.run_id}", highlight=False)


def stderr_console() -> Console:
    return Console(file=sys.stderr)
