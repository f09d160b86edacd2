"""How long `serve` lets webhook events gather: a quarter second by default, a minute on BigQuery
(where each apply's MERGE into contacts bills the whole table), or what the setting says."""

from __future__ import annotations

import pytest

from truth_forge.core.config import Settings


@pytest.mark.parametrize(("url", "setting", "window"), [
    ("duckdb:///w.duckdb", None, 0.25),
    ("bigquery://my-project/crm", None, 60.0),
    ("bigquery://my-project/crm", "5", 5.0),
    ("duckdb:///w.duckdb", "0", 0.0),
])
def test_the_batch_window_follows_the_engine_unless_set(monkeypatch: pytest.MonkeyPatch, url: str,
                                                        setting: str | None, window: float) -> None:
    monkeypatch.setenv("TRUTH_FORGE_WAREHOUSE_URL", url)
    if setting is None:
        monkeypatch.delenv("TRUTH_FORGE_SERVE_BATCH_WINDOW_SECONDS", raising=False)
    else:
        monkeypatch.setenv("TRUTH_FORGE_SERVE_BATCH_WINDOW_SECONDS", setting)
    assert Settings(_env_file=None).serve_batch_window() == window  # type: ignore[call-arg]
