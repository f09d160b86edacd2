"""`/metrics` of `serve`: the sync's figures in Prometheus' text exposition format (version 0.0.4).

Why it exists: a team that already watches its services with Prometheus should see truth-forge
there too (runs by status, records moved, errors open, the Twenty request budget, the webhook
inbox's lag) without scraping logs. Written by hand: the format is a few lines of text, and
prometheus_client would be a runtime dependency for that alone (the tests parse the output with it).

The figures come from three places, none of which makes `serve` hold a warehouse writer: the
runs and errors as console_reads.py reads them (the writer's snapshot beside a DuckDB file), the
writer process's own report in the inbox (requests it sent, tokens left in its bucket, events it
applied), and the inbox's counts.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from truth_forge.operations.console_reads import DAY, Overview, moment

PREFIX = "truth_forge_"
RUN_STATUSES = ("succeeded", "partial", "failed", "aborted", "running")


@dataclass
class Metric:
    name: str
    kind: str  # gauge | counter
    help: str
    samples: list[tuple[dict[str, str], float]] = field(default_factory=list)

    def add(self, value: float, **labels: str) -> Metric:
        self.samples.append((labels, float(value)))
        return self


def run_totals(runs: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """Records pulled and pushed, and requests sent, summed over runs' counts (as `runs` shows them)."""
    pulled = pushed = requests = 0
    for run in runs:
        counts = run.get("counts") or {}
        for name, value in counts.items():
            if not isinstance(value, dict):
                continue
            if name.startswith("pull_"):
                pulled += sum(int(value.get(k, 0) or 0) for k in ("created", "updated", "deleted"))
            elif name.startswith("push_"):
                pushed += sum(int(value.get(k, 0) or 0) for k in ("upserted", "deleted"))
        requests += int(counts.get("requests", 0) or 0)
    return {"pulled": pulled, "pushed": pushed, "requests": requests}


def collect(overview: Overview, *, writer: Mapping[str, Any] | None, inbox_counts: Mapping[str, int] | None,
            oldest_pending_ms: int | None, now_ms: int, requests_per_minute: float) -> list[Metric]:
    runs = overview.runs
    by_status = Metric(f"{PREFIX}runs", "gauge", f"Runs among the last {len(runs)} recorded, by status")
    counted = {s: 0 for s in RUN_STATUSES}
    for run in runs:
        counted[str(run.get("status") or "unknown")] = counted.get(str(run.get("status") or "unknown"), 0) + 1
    for status, n in sorted(counted.items()):
        by_status.add(n, status=status)
    metrics = [by_status]

    started = [m for m in (moment(r.get("started_at")) for r in runs) if m is not None]
    if started:
        metrics.append(Metric(f"{PREFIX}last_run_start_timestamp_seconds", "gauge",
                              "When the latest run started (Unix time)").add(max(started).timestamp()))

    last_day = overview.runs_since(overview.read_at - DAY)
    day = run_totals(last_day)
    records = Metric(f"{PREFIX}records_last_day", "gauge", "Records moved by the runs started in the last 24 hours")
    records.add(day["pulled"], direction="pulled").add(day["pushed"], direction="pushed")
    metrics.append(records)
    metrics.append(Metric(f"{PREFIX}errors_open", "gauge", "Sync errors still open").add(overview.open_error_count))

    day_budget = requests_per_minute * 24 * 60
    metrics.append(Metric(f"{PREFIX}twenty_requests_last_day", "gauge",
                          "Requests to Twenty spent by the runs started in the last 24 hours").add(day["requests"]))
    metrics.append(Metric(f"{PREFIX}twenty_requests_left_last_day", "gauge",
                          "The day's request budget (requests per minute x 1440) less what the last 24 hours spent")
                   .add(max(0.0, day_budget - day["requests"])))
    twenty = (writer or {}).get("twenty") or {}
    if twenty:
        metrics.append(Metric(f"{PREFIX}twenty_requests", "counter",
                              "Requests to Twenty sent by serve's writer since it started")
                       .add(float(twenty.get("requests", 0))))
        metrics.append(Metric(f"{PREFIX}twenty_budget_tokens_left", "gauge",
                              "Requests the writer's token bucket lets leave now without waiting")
                       .add(float(twenty.get("tokens_left", 0))))
        metrics.append(Metric(f"{PREFIX}twenty_budget_capacity", "gauge", "Size of the writer's token bucket")
                       .add(float(twenty.get("capacity", 0))))

    if inbox_counts is not None:
        stored = Metric(f"{PREFIX}webhook_events", "gauge",
                        "Webhook events in the inbox by status (acknowledged events are kept a day once applied)")
        for status in ("pending", "applied", "failed"):
            stored.add(int(inbox_counts.get(status, 0)), status=status)
        metrics.append(stored)
        metrics.append(Metric(f"{PREFIX}webhook_events_acknowledged", "gauge",
                              "Webhook events acknowledged to Twenty and still in the inbox (all statuses)")
                       .add(sum(int(inbox_counts.get(s, 0)) for s in ("pending", "applied", "failed"))))
        lag = 0.0 if oldest_pending_ms is None else max(0.0, (now_ms - oldest_pending_ms) / 1000)
        metrics.append(Metric(f"{PREFIX}webhook_lag_seconds", "gauge",
                              "Age of the oldest webhook event not applied yet (0: none waits)").add(lag))
    if writer is not None:
        applied = (writer.get("applied") or {})
        metrics.append(Metric(f"{PREFIX}webhook_events_applied", "counter",
                              "Webhook events the writer applied since it started")
                       .add(float(applied.get("events", 0) or 0)))
        beat = writer.get("beat_ms")
        if beat:
            metrics.append(Metric(f"{PREFIX}writer_silent_seconds", "gauge",
                                  "Seconds since serve's writer last showed progress")
                           .add(max(0.0, (now_ms - int(beat)) / 1000)))
        metrics.append(Metric(f"{PREFIX}writer_ready", "gauge", "1 when serve's writer holds the lease and works")
                       .add(1.0 if writer.get("state") == "ready" else 0.0))
        process = writer.get("process")
        if isinstance(process, Mapping):
            metrics.append(Metric(f"{PREFIX}writer_restarts", "counter",
                                  "Times serve started its writer process again after it died")
                           .add(float(process.get("restarts", 0) or 0)))
    return metrics


def render(metrics: Iterable[Metric]) -> str:
    lines = []
    for metric in metrics:
        name = metric.name + ("_total" if metric.kind == "counter" else "")
        lines.append(f"# HELP {name} {_help(metric.help)}")
        lines.append(f"# TYPE {name} {metric.kind}")
        for labels, value in metric.samples:
            label_text = ",".join(f'{k}="{_label(v)}"' for k, v in sorted(labels.items()))
            lines.append(f"{name}{{{label_text}}} {_number(value)}" if label_text else f"{name} {_number(value)}")
    return "\n".join(lines) + "\n"


def _help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return str(int(value)) if value.is_integer() and abs(value) < 2**53 else repr(value)


CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

