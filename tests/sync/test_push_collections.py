"""While a sync runs, garbage collections are rarer (core/memory.py `rarer_collections`, issue 22).

A first push keeps each request's answers and rows alive across young collections; with CPython's
default thresholds that set off a full collection every few thousand records (15 % of the push's
CPU), and the run's closing fold made hundreds of young ones. What must hold: from a run's start to
its end (a real one: DuckDB file, the sandbox over HTTP) the young collection waits for
memory.YOUNG_COLLECTION_AT new objects and the older two are rarer; afterwards the process has its
own thresholds back, also when uses overlap or one fails.
"""

from __future__ import annotations

import gc
import platform
from collections.abc import Iterator
from typing import Any

import pytest

from truth_forge.core import memory
from truth_forge.core.crm_schema import CrmSchema
from truth_forge.sync.context import SyncEvent
from truth_forge.sync.runner import run_sync
from truth_forge.twenty import TwentyClient

SCHEMA = CrmSchema.load()
# What a sync sets, starting from CPython's defaults (700, 10, 10).
RARER = (memory.YOUNG_COLLECTION_AT, 10 * memory.MIDDLE_COLLECTION_SPACING, 10 * memory.FULL_COLLECTION_SPACING)


@pytest.fixture
def thresholds() -> Iterator[tuple[int, int, int]]:
    found = gc.get_threshold()
    gc.set_threshold(700, 10, 10)  # CPython's defaults, whatever the test process was given
    yield gc.get_threshold()
    gc.set_threshold(*found)


def test_a_sync_makes_collections_rarer_from_start_to_end_and_gives_the_thresholds_back(
        thresholds: tuple[int, int, int], client: TwentyClient, store: Any) -> None:
    seen: dict[str, set[tuple[int, int, int]]] = {}

    def during(event: SyncEvent) -> None:
        seen.setdefault(event.kind, set()).add(gc.get_threshold())

    result = run_sync(store, client, SCHEMA, on_event=during)
    assert result.status == "succeeded", result.sync_errors
    # The push's writes, and the run's first and last events (its closing fold runs before the last).
    assert {"batch_written", "run_started", "run_finished"} <= set(seen), sorted(seen)
    assert all(found == {RARER} for found in seen.values()), seen
    assert gc.get_threshold() == thresholds


def test_overlapping_pushes_and_a_failing_one_leave_the_thresholds_as_found(
        thresholds: tuple[int, int, int]) -> None:
    rarer = RARER
    with memory.rarer_collections():
        with pytest.raises(RuntimeError), memory.rarer_collections():
            assert gc.get_threshold() == rarer  # not multiplied twice
            raise RuntimeError("a push failing inside another")
        assert gc.get_threshold() == rarer  # the other one still runs
    assert gc.get_threshold() == thresholds


def _rss_bytes() -> int:
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's malloc_trim")
def test_memory_a_push_freed_goes_back_to_the_system() -> None:
    """What the push's rows and answers held is freed by then, but glibc keeps free heap chunks below
    the last one in use; `release_free_memory` (called as each object's push ends) returns them."""
    chunks = [bytes([i % 256]) * 4097 for i in range(20_000)]  # ~80 MiB through malloc, not pymalloc
    keep = chunks[-1]  # allocated last: the heap's top stays in use, so freeing the rest does not shrink it
    del chunks
    before = _rss_bytes()
    assert memory.release_free_memory() is True
    released = before - _rss_bytes()
    assert len(keep) == 4097  # still held, as the heap's top
    assert released > 40 * 2**20, f"only {released / 2**20:.1f} MiB went back"
