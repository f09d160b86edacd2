"""How long `serve` lets webhook events gather: a quarter second by default, five minutes on
BigQuery (where each batch's merge reads whole storage blocks), or what the setting says; and the
writer holds a window longer than its one-second pause."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import pytest

from tests.sandbox.util import create_person
from tests.serve.conftest import ServeHarness, wait_until
from tests.serve.test_end_to_end import contact_of
from truth_forge.core.config import Settings
from truth_forge.warehouse import open_warehouse


@pytest.mark.parametrize(("url", "setting", "window", "events", "interval"), [
    ("duckdb:///w.duckdb", None, 0.25, 500, 10.0),
    ("bigquery://my-project/crm", None, 300.0, 2_000, 30.0),
    ("bigquery://my-project/crm", "5", 5.0, 2_000, 30.0),
    ("duckdb:///w.duckdb", "0", 0.0, 500, 10.0),
])
def test_the_batch_window_follows_the_engine_unless_set(monkeypatch: pytest.MonkeyPatch, url: str,
                                                        setting: str | None, window: float, events: int,
                                                        interval: float) -> None:
    monkeypatch.setenv("TRUTH_FORGE_WAREHOUSE_URL", url)
    monkeypatch.delenv("TRUTH_FORGE_SERVE_SYNC_INTERVAL_MINUTES", raising=False)
    if setting is None:
        monkeypatch.delenv("TRUTH_FORGE_SERVE_BATCH_WINDOW_SECONDS", raising=False)
    else:
        monkeypatch.setenv("TRUTH_FORGE_SERVE_BATCH_WINDOW_SECONDS", setting)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.serve_batch_window() == window
    assert settings.serve_batch_events() == events
    assert settings.serve_sync_interval() == interval


def test_a_set_sync_interval_wins_on_bigquery_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRUTH_FORGE_WAREHOUSE_URL", "bigquery://my-project/crm")
    monkeypatch.setenv("TRUTH_FORGE_SERVE_SYNC_INTERVAL_MINUTES", "2")
    assert Settings(_env_file=None).serve_sync_interval() == 2.0  # type: ignore[call-arg]


def test_events_gather_for_the_whole_window_then_apply_together(
        make_harness: Callable[..., ServeHarness], sandbox_client: httpx.Client) -> None:
    """A window of several seconds holds: the writer's pause is a second at most, and it used to
    apply whatever had come once that second was over."""
    window = 6.0
    harness = make_harness(batch_window=window)
    harness.wait_ready()
    harness.register(sandbox_client)
    create_person(sandbox_client, first="Ida", email="ida@example.com")
    wait_until(lambda: harness.inbox.counts()["pending"] >= 1, "the event to be stored")
    stored = time.monotonic()
    create_person(sandbox_client, first="Jo", email="jo@example.com")

    time.sleep(window / 2)  # well past the one-second pause and a DuckDB apply
    counts = harness.inbox.counts()
    # Measured from when this test saw the event stored, so it arrived earlier: the window is not over.
    assert time.monotonic() - stored < window
    assert counts["applied"] == 0 and counts["pending"] == 2, counts

    harness.wait_applied(2, timeout=window + 15)
    assert harness.status()["writer"]["batches"] == 1  # both in one batch


def test_a_stop_applies_what_is_still_gathering(
        make_harness: Callable[..., ServeHarness], sandbox_client: httpx.Client) -> None:
    """An hour-long window does not strand events at shutdown: the drain applies them at once."""
    harness = make_harness(batch_window=3600.0)
    harness.wait_ready()
    harness.register(sandbox_client)
    kim = create_person(sandbox_client, first="Kim", email="kim@example.com")
    wait_until(lambda: harness.inbox.counts()["pending"] >= 1, "the event to be stored")
    assert harness.inbox.counts()["applied"] == 0

    harness.stop()
    with open_warehouse(harness.warehouse_url) as wh:
        contact = contact_of(wh, kim["id"])
    assert contact is not None and contact["primary_email"] == "kim@example.com"
