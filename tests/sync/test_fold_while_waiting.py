"""The push folds its saves while its last answers are on the wire (DuckDB), so the run's own fold
after the last answer takes in only the last requests' entries; a kill at any point still loses
nothing (tests/sync/test_kill_recovery.py), as each fold is one that a later one does again. (A
first sync's creates go into the state directly, with no entries to fold: the run here is the
second, updating every contact.)"""

from __future__ import annotations

import threading
from typing import Any

from tests.sync.conftest import SCHEMA
from truth_forge.core.crm_schema import setup_schema
from truth_forge.sync.runner import _on_this_thread, run_sync
from truth_forge.twenty import TwentyClient


def test_the_saves_so_far_are_folded_while_the_push_waits_and_the_hook_ends_with_the_run(
        sandbox: Any, store: Any) -> None:
    with TwentyClient(sandbox.base_url, sandbox.api_key, requests_per_minute=100_000, timeout=5) as client:
        setup_schema(client, SCHEMA)
        assert run_sync(store, client, SCHEMA).status == "succeeded"
    store.upsert_contacts([{"contact_id": k, "canonical_name": f"Renamed Person {k}"} for k in range(1, 41)])
    sandbox.set_faults(latency_ms=150)  # answers the push must wait for
    fold_while_idle = store.fold_journal_while_idle
    waits: list[tuple[int, int]] = []  # (journal entries before the fold, after it)

    def watched() -> None:
        before = store.count_rows("crm_sync_journal")
        fold_while_idle()
        waits.append((before, store.count_rows("crm_sync_journal")))

    store.fold_journal_while_idle = watched
    with TwentyClient(sandbox.base_url, sandbox.api_key, requests_per_minute=100_000, timeout=5,
                      batch_size=5, max_in_flight=4) as client:
        result = run_sync(store, client, SCHEMA)
        assert client.transport.while_waiting is None  # the run's alone: later requests fold nothing
    assert result.status == "succeeded"
    assert [(b, a) for b, a in waits if b] and all(a == 0 for _, a in waits)  # folded in the waits
    assert store.count_rows("crm_sync_journal") == 0
    assert store.count_rows("crm_sync_state") == 48  # 40 contacts and 8 businesses, all in the state


def test_the_fold_runs_only_on_the_runs_own_thread() -> None:
    """Another thread's stream on the same client must not reach the run's warehouse connection."""
    folds: list[int] = []
    hook = _on_this_thread(lambda: folds.append(threading.get_ident()))
    other = threading.Thread(target=hook)
    other.start()
    other.join()
    hook()
    assert folds == [threading.get_ident()]
