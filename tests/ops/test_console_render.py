"""The console's pages and /metrics' text from runs and errors as the warehouse returns them: bytes
billed shown where runs report them (BigQuery), every hostile value escaped, every label quoted so
that Prometheus' own parser reads it back (issue 21)."""

from __future__ import annotations

import datetime as dt
import html.parser

from prometheus_client.parser import text_string_to_metric_families

from truth_forge.operations.console_page import overview_page, record_page
from truth_forge.operations.console_reads import Overview, RecordLookup
from truth_forge.operations.metrics import Metric, collect, render

NOW = dt.datetime(2026, 12, 3, 12, 0, tzinfo=dt.UTC)
HOSTILE = "\"'><script>alert(1)</script><svg onload=alert(2)>"


def run(minutes_ago: int, requests: int, **counts: object) -> dict[str, object]:
    start = NOW - dt.timedelta(minutes=minutes_ago)
    return {"run_id": f"run-{minutes_ago:04d}-" + "0" * 20, "status": "succeeded", "started_at": start,
            "finished_at": start + dt.timedelta(seconds=3),
            "counts": {"requests": requests, "pull_person": {"created": 2, "updated": 1},
                       "push_person": {"upserted": 4}, **counts}}


def error(**fields: object) -> dict[str, object]:
    return {"object_type": "person", "record_key": "7", "crm_id": None, "operation": "push", "attempts": 2,
            "first_seen": NOW, "last_seen": NOW, "resolved_at": None, "is_open": True,
            "error_class": "TwentyValidationError", "error_message": HOSTILE, **fields}


def elements(page: str) -> list[str]:
    """Tags as an HTML parser (a browser's first step) sees them."""
    seen: list[str] = []

    class Collect(html.parser.HTMLParser):
        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            seen.append(tag)

    Collect().feed(page)
    return seen


def test_runs_show_bytes_billed_only_when_they_report_them_and_hostile_values_stay_text() -> None:
    overview = Overview(runs=[run(5, 30, bytes_billed=25 * 1024**2), run(90, 12)], open_errors=[error()],
                        open_error_count=1, conflicts=[error(operation="conflict", is_open=False, resolved_at=NOW,
                                                             record_key=HOSTILE)],
                        source=HOSTILE, read_at=NOW)
    page = overview_page(overview, requests_per_minute=100)
    assert "<th>billed</th>" in page and "25.0 MB" in page
    assert "42 requests spent of 144000 a day" in page
    assert "script" not in elements(page) and "svg" in elements(page)  # only the chart's own svg
    assert elements(page).count("svg") == 1
    assert html.escape(HOSTILE, quote=True) in page

    without = overview_page(Overview(runs=[run(5, 30)], open_errors=[], open_error_count=0, conflicts=[],
                                     source="warehouse", read_at=NOW), requests_per_minute=100)
    assert "<th>billed</th>" not in without


def test_a_record_page_escapes_its_state_and_any_history_rows() -> None:
    lookup = RecordLookup("person", HOSTILE, {"record_key": "7", "crm_id": "x", "base": {"canonical_name": HOSTILE}},
                          [error()], [{"field": "canonical_name", "old": HOSTILE, "new": "Ada", "actor": HOSTILE}])
    page = record_page(lookup, source=HOSTILE)
    assert 'id="history"' in page and "<th>actor</th>" in page
    assert "script" not in elements(page) and "svg" not in elements(page)
    assert page.count(html.escape(HOSTILE, quote=True)) >= 5


def test_metrics_text_reads_back_with_prometheus_parser_whatever_the_labels_hold() -> None:
    overview = Overview(runs=[run(5, 30), run(60 * 30, 500)], open_errors=[], open_error_count=3, conflicts=[],
                        source="warehouse", read_at=NOW)
    metrics = collect(overview, writer={"state": "ready", "applied": {"events": 9}, "beat_ms": 1_000,
                                        "twenty": {"requests": 77, "tokens_left": 12.5, "capacity": 90}},
                      inbox_counts={"pending": 2, "applied": 9, "failed": 1}, oldest_pending_ms=1_000,
                      now_ms=4_500, requests_per_minute=100)
    metrics.append(Metric("truth_forge_label_test", "gauge", "help with \\ and\nnewline").add(1, odd=HOSTILE + "\\\n"))
    parsed = {(s.name, tuple(sorted(s.labels.items()))): s.value
              for family in text_string_to_metric_families(render(metrics)) for s in family.samples}
    assert parsed[("truth_forge_twenty_requests_last_day", ())] == 30  # the run 30 hours ago is not in the day
    assert parsed[("truth_forge_records_last_day", (("direction", "pulled"),))] == 3
    assert parsed[("truth_forge_errors_open", ())] == 3
    assert parsed[("truth_forge_twenty_budget_tokens_left", ())] == 12.5
    assert parsed[("truth_forge_webhook_lag_seconds", ())] == 3.5
    assert parsed[("truth_forge_webhook_events_acknowledged", ())] == 12
    assert parsed[("truth_forge_label_test", (("odd", HOSTILE + "\\\n"),))] == 1
