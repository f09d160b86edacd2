"""Shared fixtures live in tests/fixtures/, one plugin module per component they start."""

from __future__ import annotations

import os

import pytest

pytest_plugins = [
    "tests.fixtures.alert_receivers",
    "tests.fixtures.chromium",
    "tests.fixtures.sandbox",
    "tests.fixtures.secret_manager",
    "tests.fixtures.warehouse",
]


def _module_weight(items: list[pytest.Item]) -> int:
    """0 for a file with a `slow` test, 1 for one with a BigQuery test, 2 otherwise."""
    if any(item.get_closest_marker("slow") for item in items):
        return 0
    return 1 if any(item.get_closest_marker("bigquery") for item in items) else 2


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under pytest-xdist (`make test`), the heavy files first: a worker handed the longest file last
    would finish minutes after the others. Files keep their tests' order; a plain run is untouched."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    by_file: dict[str, list[pytest.Item]] = {}
    for item in items:
        by_file.setdefault(item.nodeid.split("::", 1)[0], []).append(item)
    weight = {path: _module_weight(group) for path, group in by_file.items()}
    items.sort(key=lambda item: weight[item.nodeid.split("::", 1)[0]])
