"""The soak trials run only under `make soak` (TRUTH_FORGE_SOAK=1); any other pytest run deselects them.

Deselecting here, rather than with `-m "not soak"` in addopts, keeps them out of every default run,
including `pytest -m "not bigquery"` (a second `-m` would replace the first).
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from tests.soak.tally import TALLY

SOAK_ENV = "TRUTH_FORGE_SOAK"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get(SOAK_ENV) == "1":
        return
    soak = [item for item in items if item.get_closest_marker("soak")]
    if soak:
        config.hook.pytest_deselected(items=soak)
        items[:] = [item for item in items if not item.get_closest_marker("soak")]


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if TALLY.trials:
        terminalreporter.write_line(TALLY.line())
