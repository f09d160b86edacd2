"""Fixtures of the operating tests: truth-forge run as a user runs it, in a subprocess, against the
sandbox over loopback and a DuckDB file, with an environment that holds only what the test sets."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.sync.conftest import client, store, store_options  # noqa: F401 (the sync tests' fixtures, shared)
from truth_forge.core.crm_schema import CrmSchema, setup_schema
from truth_forge.twenty import TwentyClient
from truth_forge.warehouse import open_warehouse
from truth_forge.warehouse.sample_data import generate_sample_data

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Cli:
    """`truth-forge ...` in a fresh process: what a shell, cron or systemd would see."""

    env: dict[str, str]
    cwd: Path

    def __call__(self, *args: str, timeout: float = 120, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "truth_forge.cli.main", *args], env={**self.env, **env},
                              cwd=self.cwd, capture_output=True, text=True, timeout=timeout)


def clean_env(**values: str) -> dict[str, str]:
    """The machine's environment without any truth-forge, Twenty or Google setting, plus `values`."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("TWENTY", "TRUTH_FORGE", "GOOGLE", "GCP"))}
    env.update(PYTHONPATH=str(REPO), COLUMNS="200", **values)
    return env


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    """No Twenty, no warehouse: for the failures that come before either is reached."""
    return Cli(clean_env(TRUTH_FORGE_WAREHOUSE_URL=f"duckdb:///{tmp_path / 'w.duckdb'}"), tmp_path)


@pytest.fixture
def warehouse_url(tmp_path: Path) -> str:
    url = f"duckdb:///{tmp_path / 'warehouse.duckdb'}"
    with open_warehouse(url) as wh:
        generate_sample_data(wh, 30, 5, seed=3)
    return url


@pytest.fixture
def ready_cli(sandbox: Any, warehouse_url: str, tmp_path: Path) -> Iterator[Cli]:
    """The sandbox set up for truth-forge and a DuckDB warehouse of 30 contacts, as the environment says."""
    with TwentyClient(sandbox.base_url, sandbox.api_key, requests_per_minute=100_000, timeout=5) as api:
        setup_schema(api, CrmSchema.load())
    yield Cli(clean_env(TWENTY_API_KEY=sandbox.api_key, TWENTY_BASE_URL=sandbox.base_url,
                        TRUTH_FORGE_WAREHOUSE_URL=warehouse_url,
                        TRUTH_FORGE_TWENTY_REQUESTS_PER_MINUTE="100000"), tmp_path)
