"""The console's HTML: two server-rendered pages (the overview and a record), inline CSS, an inline
SVG chart, no script and no build step.

Why it exists: someone asked "did the sync run, what did it cost, what is stuck, what happened to
this contact?" should get the answer from a browser, without SQL or a terminal. Every value that
reaches the page goes through `_e` (html.escape, quotes too): record names come from people and
from Twenty, and some are hostile (`<script>` names are in the soak's corpus).
"""

from __future__ import annotations

import datetime as dt
import html
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import urlencode

from truth_forge.operations.console_reads import DAY, OBJECT_TYPES, Overview, RecordLookup, moment
from truth_forge.operations.metrics import run_totals
from truth_forge.warehouse.accounting import format_bytes

RUNS_LISTED = 20
CHART_W, CHART_H, CHART_PAD = 760, 170, 44

_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
header{background:#1d2330;color:#fff;padding:10px 24px;display:flex;gap:24px;align-items:baseline}
header a{color:#cfe0ff;text-decoration:none}header h1{font-size:17px;margin:0}
main{padding:12px 24px;max-width:1200px}section{background:#fff;border:1px solid #dde1e7;border-radius:6px;
padding:10px 16px;margin:12px 0}h2{font-size:15px;margin:4px 0 8px}
table{border-collapse:collapse;width:100%;font-size:13px}th,td{text-align:left;padding:3px 8px;
border-bottom:1px solid #eceef2;vertical-align:top}th{color:#5b6474;font-weight:600}td.n{text-align:right;
font-variant-numeric:tabular-nums}.note{color:#5b6474;font-size:12px}.bad{color:#b3261e}.ok{color:#1e7b34}
pre{margin:0;white-space:pre-wrap;word-break:break-word}form{display:flex;gap:8px;align-items:center}
input,select,button{font:inherit;padding:3px 6px}
"""


def _e(value: Any) -> str:
    """Escaped for HTML text and attribute values alike."""
    if value is None:
        return ""
    return html.escape(value if isinstance(value, str) else _text(value), quote=True)


def _text(value: Any) -> str:
    if isinstance(value, dt.datetime):
        return _when(value)
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True, default=str, ensure_ascii=False)
    return str(value)


def _when(value: Any) -> str:
    moment_ = moment(value)
    return moment_.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S") if moment_ else ""


def _page(title: str, body: str, *, source: str) -> str:
    return (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{_e(title)}</title>"
            f"<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><style>{_CSS}</style></head>"
            f"<body><header><h1>truth-forge console</h1><a href=\"/\">runs</a>{_lookup_form()}</header>"
            f"<main><p class=\"note\" id=\"source\">Read from: {_e(source)}</p>{body}</main></body></html>")


def _lookup_form(object_type: str = "person", asked: str = "") -> str:
    options = "".join(f"<option value=\"{_e(t)}\"{' selected' if t == object_type else ''}>{_e(t)}</option>"
                      for t in OBJECT_TYPES)
    return (f"<form action=\"/record\" method=\"get\"><select name=\"type\">{options}</select>"
            f"<input name=\"key\" value=\"{_e(asked)}\" placeholder=\"warehouse key or Twenty id\" size=\"38\">"
            f"<button type=\"submit\">look up</button></form>")


def _table(columns: Sequence[str], rows: Iterable[Sequence[Any]], *, numeric: Iterable[str] = (),
           table_id: str = "") -> str:
    numbers = set(numeric)
    number_cell = '<td class="n">'
    head = "".join(f"<th>{_e(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"{number_cell if c in numbers else '<td>'}{cell}</td>"
                                    for c, cell in zip(columns, row)) + "</tr>" for row in rows)
    opening = f'<table id="{_e(table_id)}">' if table_id else "<table>"
    return f"{opening}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


# --- the overview ----------------------------------------------------------------------------------


def overview_page(overview: Overview, *, requests_per_minute: float) -> str:
    body = (_runs_section(overview.runs[:RUNS_LISTED])
            + _budget_section(overview, requests_per_minute)
            + _errors_section(overview)
            + _conflicts_section(overview.conflicts))
    return _page("truth-forge console", body, source=overview.source)


def _runs_section(runs: list[dict[str, Any]]) -> str:
    billed = any("bytes_billed" in (r.get("counts") or {}) for r in runs)
    columns = ["started (UTC)", "took", "status", "pulled", "pushed", "failed", "errors", "requests",
               *(["billed"] if billed else []), "run"]
    rows = []
    for run in runs:
        counts = run.get("counts") or {}
        totals = run_totals([run])
        failed = sum(int(v.get("failed", 0) or 0) for v in counts.values() if isinstance(v, dict))
        status = str(run.get("status") or "")
        rows.append([
            _e(_when(run.get("started_at"))), _e(_took(run)),
            f"<span class=\"{'ok' if status == 'succeeded' else 'bad'}\">{_e(status)}</span>",
            _e(totals["pulled"]), _e(totals["pushed"]), _e(failed), _e(counts.get("errors", "")),
            _e(counts.get("requests", "")),
            *([_e(format_bytes(counts.get("bytes_billed")) if "bytes_billed" in counts else "")] if billed else []),
            f"<code>{_e(str(run.get('run_id') or '')[:12])}</code>",
        ])
    table = _table(columns, rows, numeric=("pulled", "pushed", "failed", "errors", "requests", "billed"),
                   table_id="runs") if rows else "<p>No runs yet.</p>"
    return f"<section><h2>Last runs</h2>{table}</section>"


def _took(run: Mapping[str, Any]) -> str:
    start, end = moment(run.get("started_at")), moment(run.get("finished_at"))
    if not start or not end:
        return ""
    seconds = (end - start).total_seconds()
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _budget_section(overview: Overview, requests_per_minute: float) -> str:
    """Requests spent per hour over the last day (from the runs' counts, at their start times),
    against the hourly budget."""
    end = overview.read_at
    start = end - DAY
    hours = [0] * 24
    for run in overview.runs_since(start):
        at = moment(run.get("started_at"))
        if at is None:
            continue
        slot = min(23, int((at - start).total_seconds() // 3600))
        hours[slot] += int((run.get("counts") or {}).get("requests", 0) or 0)
    spent = sum(hours)
    hourly_budget = requests_per_minute * 60
    # Scaled to what was spent: a budget far above it would flatten every bar to nothing.
    top = max(max(hours) * 1.15, 1)
    budget_on_scale = hourly_budget <= top * 1.5
    top = max(top, hourly_budget) if budget_on_scale else top
    inner_w, inner_h = CHART_W - 2 * CHART_PAD, CHART_H - 2 * CHART_PAD
    bar_w = inner_w / 24
    bars = []
    for i, n in enumerate(hours):
        h = inner_h * n / top
        bars.append(f"<rect x=\"{CHART_PAD + i * bar_w + 1:.1f}\" y=\"{CHART_PAD + inner_h - h:.1f}\" "
                    f"width=\"{bar_w - 2:.1f}\" height=\"{h:.1f}\" fill=\"#3b6fd8\"><title>{_e(n)} requests, "
                    f"hour starting {_e(_when(start + dt.timedelta(hours=i)))}</title></rect>")
    budget_y = CHART_PAD + inner_h - inner_h * hourly_budget / top if budget_on_scale else CHART_PAD - 10
    svg = (f"<svg id=\"budget-chart\" width=\"{CHART_W}\" height=\"{CHART_H}\" viewBox=\"0 0 {CHART_W} {CHART_H}\" "
           f"role=\"img\" aria-label=\"requests per hour over the last day\">"
           f"<line x1=\"{CHART_PAD}\" x2=\"{CHART_W - CHART_PAD}\" y1=\"{CHART_PAD + inner_h}\" "
           f"y2=\"{CHART_PAD + inner_h}\" stroke=\"#9aa3b1\"/>{''.join(bars)}"
           + (f"<line x1=\"{CHART_PAD}\" x2=\"{CHART_W - CHART_PAD}\" y1=\"{budget_y:.1f}\" y2=\"{budget_y:.1f}\" "
              f"stroke=\"#b3261e\" stroke-dasharray=\"4 3\"/>" if budget_on_scale else "")
           + f"<text x=\"{CHART_W - CHART_PAD}\" y=\"{max(budget_y - 4, 12):.1f}\" text-anchor=\"end\" font-size=\"11\" "
           f"fill=\"#b3261e\">budget {_e(int(hourly_budget))}/hour{'' if budget_on_scale else ' (above this scale)'}</text>"
           f"<text x=\"{CHART_PAD - 4}\" y=\"{CHART_PAD + 4}\" text-anchor=\"end\" font-size=\"11\" "
           f"fill=\"#5b6474\">{_e(int(top))}</text>"
           f"<text x=\"{CHART_PAD - 4}\" y=\"{CHART_PAD + inner_h}\" text-anchor=\"end\" font-size=\"11\" "
           f"fill=\"#5b6474\">0</text>"
           f"<text x=\"{CHART_PAD}\" y=\"{CHART_H - 8}\" font-size=\"11\" fill=\"#5b6474\">{_e(_when(start))}</text>"
           f"<text x=\"{CHART_W - CHART_PAD}\" y=\"{CHART_H - 8}\" font-size=\"11\" text-anchor=\"end\" "
           f"fill=\"#5b6474\">{_e(_when(end))} UTC</text></svg>")
    day_budget = requests_per_minute * 24 * 60
    share = 100 * spent / day_budget if day_budget else 0.0
    return (f"<section><h2>Request budget, last 24 hours</h2>{svg}<p id=\"budget-used\">{_e(spent)} requests "
            f"spent of {_e(int(day_budget))} a day ({_e(f'{share:.2f}')} %; {_e(int(requests_per_minute))} a minute). "
            f"<span class=\"note\">From the runs' counts, at their start times; Twenty's own limit is shared "
            f"by every key of the workspace.</span></p></section>")


def _error_rows(errors: Iterable[Mapping[str, Any]]) -> list[list[str]]:
    rows = []
    for error in errors:
        record = _record_link(error)
        closed = "settled" if error.get("operation") == "conflict" else "closed"
        state = "open" if error.get("is_open") else f"{closed} {_when(error.get('resolved_at'))}"
        message = f"{error.get('error_class') or ''}: {error.get('error_message') or ''}"
        rows.append([_e(state), _e(" ".join(x for x in (error.get("operation"), error.get("object_type")) if x)),
                     record, _e(error.get("attempts")), _e(_when(error.get("first_seen"))),
                     _e(_when(error.get("last_seen"))), f"<pre>{_e(message)}</pre>"])
    return rows


def _record_link(error: Mapping[str, Any]) -> str:
    object_type, key, crm_id = error.get("object_type"), error.get("record_key"), error.get("crm_id")
    if not object_type or not (key or crm_id):
        return "(run)"
    query = urlencode({"type": object_type, "key": key or crm_id})
    return f"<a href=\"/record?{_e(query)}\">{_e(key or f'Twenty {crm_id}')}</a>"


_ERROR_COLUMNS = ["state", "what", "record", "attempts", "first seen", "last seen", "error"]


def _errors_section(overview: Overview) -> str:
    rows = _error_rows(overview.open_errors)
    table = _table(_ERROR_COLUMNS, rows, numeric=("attempts",), table_id="open-errors") if rows else "<p>None.</p>"
    return f"<section><h2>Open errors: {_e(overview.open_error_count)}</h2>{table}</section>"


def _conflicts_section(conflicts: list[dict[str, Any]]) -> str:
    rows = _error_rows(conflicts)
    table = _table(_ERROR_COLUMNS, rows, numeric=("attempts",), table_id="conflicts") if rows else "<p>None.</p>"
    return (f"<section><h2>Conflicts</h2><p class=\"note\">Settled by policy when found; listed for review.</p>"
            f"{table}</section>")


# --- a record --------------------------------------------------------------------------------------


def record_page(lookup: RecordLookup, *, source: str) -> str:
    title = f"{lookup.object_type} {lookup.asked}"
    parts = [f"<section><h2>{_e(title)}</h2>{_lookup_form(lookup.object_type, lookup.asked)}</section>",
             _history_section(lookup.history)]
    rows = _error_rows(lookup.errors)
    table = _table(_ERROR_COLUMNS, rows, numeric=("attempts",), table_id="record-errors") if rows else "<p>None.</p>"
    parts.append(f"<section><h2>Errors and conflicts</h2>{table}</section>")
    if lookup.unavailable:
        parts.append(f"<section><p class=\"bad\" id=\"unavailable\">{_e(lookup.unavailable)}</p></section>")
    elif lookup.state is None:
        parts.append("<section><p id=\"state\">The sync knows no such record (never pushed nor pulled).</p></section>")
    else:
        state = dict(lookup.state)
        base = state.pop("base", None)
        rows = [[_e(k), f"<pre>{_e(v)}</pre>"] for k, v in sorted(state.items())]
        parts.append(f"<section><h2>Sync state</h2>{_table(['field', 'value'], rows, table_id='state')}</section>")
        if isinstance(base, dict):
            base_rows = [[_e(k), f"<pre>{_e(v)}</pre>"] for k, v in sorted(base.items())]
            parts.append("<section><h2>Values both sides last agreed on</h2>"
                         f"{_table(['field', 'value'], base_rows, table_id='base')}</section>")
    return _page(f"truth-forge: {title}", "".join(parts), source=source)


def _history_section(history: list[dict[str, Any]] | None) -> str:
    if history is None:
        return ("<section><h2>History</h2><p class=\"note\" id=\"history\">This version keeps no change history; "
                "the sync state, errors and conflicts below are what is known.</p></section>")
    if not history:
        return "<section><h2>History</h2><p id=\"history\">No changes recorded.</p></section>"
    columns: list[str] = []
    for row in history:
        columns += [c for c in row if c not in columns]
    rows = [[f"<pre>{_e(row.get(c))}</pre>" for c in columns] for row in history]
    return f"<section><h2>History</h2>{_table(columns, rows, table_id='history')}</section>"


def message_page(title: str, message: str, *, status_note: str = "") -> str:
    return _page(title, f"<section><h2>{_e(title)}</h2><p>{_e(message)}</p></section>", source=status_note or "-")
