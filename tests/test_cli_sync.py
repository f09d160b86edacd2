"""`truth-forge sync` from the command line: exit codes say how the run went."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from truth_forge.cli import app
from truth_forge.warehouse import open_warehouse
from truth_forge.warehouse.sample_data import generate_sample_data


@pytest.fixture
def env(sandbox: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    url = f"duckdb:///{tmp_path / 'cli.duckdb'}"
    monkeypatch.delenv("TWENTY_CRM_API_KEY", raising=False)
    monkeypatch.setenv("TWENTY_API_KEY", sandbox.api_key)
    monkeypatch.setenv("TWENTY_BASE_URL", sandbox.base_url)
    monkeypatch.setenv("TRUTH_FORGE_WAREHOUSE_URL", url)
    monkeypatch.setenv("TRUTH_FORGE_TWENTY_REQUESTS_PER_MINUTE", "100000")
    with open_warehouse(url) as wh:
        wh.ensure_tables()
        generate_sample_data(wh, 12, 3, seed=1)
    return url


def test_sync_exit_codes_follow_the_run(env: str) -> None:
    runner = CliRunner()
    assert runner.invoke(app, ["setup"]).exit_code == 0
    first = runner.invoke(app, ["sync", "--json"])
    assert first.exit_code == 0, first.output
    assert json.loads(first.stdout)["counts"]["push_person"]["upserted"] == 12
    with open_warehouse(env) as wh:
        wh.upsert_contacts([{"contact_id": 3, "primary_phone": "12", "additional_phones": []}])
    partial = runner.invoke(app, ["sync"])
    assert partial.exit_code == 1 and "partial" in partial.stdout and "error push person 3" in partial.stdout


def test_sync_without_setup_stops_with_a_setup_hint(env: str) -> None:
    result = CliRunner().invoke(app, ["sync"])
    assert result.exit_code == 2
    assert "truth-forge setup" in result.stdout


def test_bad_options_are_refused(env: str) -> None:
    result = CliRunner().invoke(app, ["sync", "--direction", "sideways"])
    assert result.exit_code == 2 and "--direction" in result.output
