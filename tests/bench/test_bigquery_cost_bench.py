"""The BigQuery cost bench's arithmetic: the count fit, the webhook batches, its BENCHMARKS.md sections."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from bench_bigquery_cost import (  # noqa: E402
    LEASE_RENEWAL,
    fit,
    ranges_at,
    renewals_during,
    replace_section,
    webhook_batches,
)


def test_the_fit_separates_per_record_per_range_and_per_run_counts() -> None:
    # count = 2 + x/200 + 1 per range, at three samples
    points = [(x, u, 2 + x / 200 + u) for x, u in ((400, 3), (1200, 5), (1200, 10))]
    assert fit(points) == pytest.approx((2, 1 / 200, 1))
    # nothing changes: the per-record term is dropped, the rest still fits
    assert fit([(0, 3, 5), (0, 5, 7), (0, 10, 12)]) == pytest.approx((2, 0, 1))
    # an engine without key ranges: the range term is dropped
    assert fit([(100, 0, 3), (300, 0, 5), (300, 0, 5)]) == pytest.approx((2, 0.01, 0))


def test_key_ranges_follow_the_engines_rule() -> None:
    assert ranges_at(10_000_000, 1_000_000) == 11 + 1  # persons, then 500,000 businesses in one range
    assert ranges_at(1_000_000, None) == 0


def test_webhook_batches_grow_while_a_batch_is_applied() -> None:
    instant = webhook_batches(5000, 3600, 0, 0.25, 500)
    slow = webhook_batches(5000, 3600, 10, 0.25, 500)
    assert sum(instant) == sum(slow) == 5000
    assert len(slow) < len(instant) and max(slow) <= 500


def test_each_label_has_its_own_section_and_nothing_else_changes() -> None:
    doc = "# Benchmarks\n\nintro\n"
    before = replace_section(doc, "before", "table one")
    both = replace_section(before, "after", "table two")
    again = replace_section(both, "before", "table three")
    assert again.startswith("# Benchmarks\n\nintro\n")
    assert "table three" in again and "table one" not in again and "table two" in again
    assert again.index("table three") < again.index("table two")


def test_lease_renewals_are_counted_by_the_clock_at_twenty_clouds_pace() -> None:
    from truth_forge.warehouse.queries import lease_claim, lease_renew

    assert LEASE_RENEWAL.match(lease_renew(60_000)) and not LEASE_RENEWAL.match(lease_claim(60_000))
    # 10.5M records at 333 a second is 31,500 s: a renewal every 20 s.
    assert renewals_during(10_500_000) == 1575
    assert renewals_during(0) == 0
