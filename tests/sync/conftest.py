"""Fixtures of the sync tests: a Twenty client set up on the sandbox, and a DuckDB warehouse of 40 contacts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from truth_forge.core.crm_schema import CrmSchema, setup_schema
from truth_forge.twenty import TwentyClient
from truth_forge.warehouse import open_warehouse
from truth_forge.warehouse.sample_data import generate_sample_data

SCHEMA = CrmSchema.load()


@pytest.fixture
def client(sandbox: Any) -> Iterator[TwentyClient]:
    with TwentyClient(sandbox.base_url, sandbox.api_key, requests_per_minute=100_000, timeout=5) as c:
        setup_schema(c, SCHEMA)
        yield c


@pytest.fixture
def store_options() -> str:
    """Extra warehouse URL options of `store` (a module may override this fixture)."""
    return ""


@pytest.fixture
def store(tmp_path: Path, store_options: str) -> Iterator[Any]:
    with open_warehouse(f"duckdb:///{tmp_path / 'w.duckdb'}{store_options}") as wh:
        wh.ensure_tables()
        generate_sample_data(wh, 40, 8, seed=7)
        yield wh
