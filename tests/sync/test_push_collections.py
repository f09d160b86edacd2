"""While a push runs, garbage collections are rarer (sync/push.py, issue 22).

A first push keeps each request's answers and rows alive across young collections; with CPython's
default thresholds that set off a full collection every few thousand records (15 % of the push's
CPU). What must hold: during a push (a real one: DuckDB file, the sandbox over HTTP) the young
collection waits for push.YOUNG_COLLECTION_AT new objects and the older two are rarer; afterwards the process has its own thresholds back, also
when pushes overlap or one fails.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from typing import Any

import pytest

from truth_forge.core.crm_schema import CrmSchema
from truth_forge.sync import push
from truth_forge.sync.context import SyncEvent
from truth_forge.sync.runner import run_sync
from truth_forge.twenty import TwentyClient

SCHEMA = CrmSchema.load()
# What a push sets, starting from CPython's defaults (700, 10, 10).
RARER = (push.YOUNG_COLLECTION_AT, 10 * push.MIDDLE_COLLECTION_SPACING, 10 * push.FULL_COLLECTION_SPACING)


@pytest.fixture
def thresholds() -> Iterator[tuple[int, int, int]]:
    found = gc.get_threshold()
    gc.set_threshold(700, 10, 10)  # CPython's defaults, whatever the test process was given
    yield gc.get_threshold()
    gc.set_threshold(*found)


def test_a_push_makes_full_collections_rarer_and_gives_the_thresholds_back(
        thresholds: tuple[int, int, int], client: TwentyClient, store: Any) -> None:
    seen: list[tuple[int, int, int]] = []

    def during(event: SyncEvent) -> None:
        if event.kind == "batch_written":
            seen.append(gc.get_threshold())

    result = run_sync(store, client, SCHEMA, on_event=during)
    assert result.status == "succeeded", result.sync_errors
    assert seen and set(seen) == {RARER}
    assert gc.get_threshold() == thresholds


def test_overlapping_pushes_and_a_failing_one_leave_the_thresholds_as_found(
        thresholds: tuple[int, int, int]) -> None:
    rarer = RARER
    with push._rarer_full_collections():
        with pytest.raises(RuntimeError), push._rarer_full_collections():
            assert gc.get_threshold() == rarer  # not multiplied twice
            raise RuntimeError("a push failing inside another")
        assert gc.get_threshold() == rarer  # the other one still runs
    assert gc.get_threshold() == thresholds
