"""The rolling sweep (sync/sweep.py) against the sandbox: edits the own-writes filter cannot see.

A merge, an older workflow step and a restore change a record without stamping `updatedBy`; on a
record we wrote last, the pull's filter leaves such a change out for good. These tests make each
of them on records truth-forge wrote, show the plain pull missing them, and the sweep bringing
them into the warehouse within its window, never spending more than its cap on a run.
The sweep follows a clock the test moves (`SweepPolicy.clock`), in runs ten minutes apart.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.sync.test_sync_sandbox import SCHEMA, crm, person_by_key
from truth_forge.sync import sweep as sweep_module
from truth_forge.sync.runner import run_sync
from truth_forge.sync.store import per_server
from truth_forge.sync.sweep import OFF, SweepPolicy
from truth_forge.twenty import TwentyClient

WINDOW = dt.timedelta(hours=1)
INTERVAL = dt.timedelta(minutes=10)
CAP = 3
PAGE = 10  # records per sweep request: the 40 contacts are four pages


class Clock:
    def __init__(self) -> None:
        self.now = dt.datetime(2026, 12, 1, 9, 0, tzinfo=dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def policy(clock: Clock, cap: int = CAP) -> SweepPolicy:
    return SweepPolicy(window=WINDOW, max_requests=cap, clock=clock, page_size=PAGE)


@pytest.fixture
def api(sandbox: Any) -> Iterator[httpx.Client]:
    """truth-forge's own key, for the control route (plain HTTP)."""
    with httpx.Client(base_url=sandbox.base_url, headers={"Authorization": f"Bearer {sandbox.api_key}"}) as http:
        yield http


def sweep_reads(sandbox: Any) -> int:
    """Requests of the sweep in the sandbox's log: the only reads in id order."""
    return sum(1 for e in sandbox.request_log if e.method == "GET" and "order_by=id" in e.query)


def swept_run(store: Any, client: TwentyClient, sandbox: Any, clock: Clock, cap: int = CAP) -> Any:
    sandbox.clear_request_log()
    result = run_sync(store, client, SCHEMA, sweep=policy(clock, cap))
    assert result.status == "succeeded", result.sync_errors
    assert sweep_reads(sandbox) <= cap  # the cap holds, as the server counted them
    assert sum(result.counts.get(f"sweep_{o}", {}).get("requests", 0) for o in ("company", "person")) <= cap
    return result


def unstamped_changes(sandbox: Any, client: TwentyClient, store: Any, api: httpx.Client) -> dict[str, Any]:
    """Three changes on records truth-forge wrote last, none of which stamps `updatedBy`."""
    workflow, merged, restored = (person_by_key(client, k) for k in (3, 9, 5))
    with crm(sandbox) as person:
        # A duplicate of contact 9 made by a person, pulled in (it gets its own contact), then merged.
        dup = person.post("/rest/people", json={"name": {"firstName": "Sam", "lastName": "S."},
                                                "emails": {"primaryEmail": "sam.dup@example.com"}})
        dup.raise_for_status()
        # Contact 5 deleted by a person: the pull carries the deletion.
        person.delete(f"/rest/people/{restored['id']}", params={"soft_delete": "true"}).raise_for_status()
        assert run_sync(store, client, SCHEMA, sweep=OFF).status == "succeeded"
        assert store.get_rows("person", [5])[0]["deleted_at"] is not None
        code = "C" if workflow["categoryCode"] != "C" else "D"
        api.patch(f"/_sandbox/unstamped/people/{workflow['id']}", json={"categoryCode": code}).raise_for_status()
        person.patch("/rest/people/merge", json={"ids": [merged["id"], dup.json()["data"]["createPerson"]["id"]],
                                                 "conflictPriorityIndex": 0}).raise_for_status()
        person.patch(f"/rest/people/{restored['id']}/restore").raise_for_status()
    for key in (3, 9, 5):
        assert person_by_key(client, key)["updatedBy"]["source"] == "API"  # still our stamp on all three
    return {"code": code}


def arrived(store: Any, code: str) -> dict[str, bool]:
    three, nine, five = (store.get_rows("person", [k])[0] for k in (3, 9, 5))
    return {"workflow": three["category_code"] == code,
            "merge": "sam.dup@example.com" in (nine["additional_emails"] or []),
            "restore": five["deleted_at"] is None}


def test_merge_workflow_and_restore_reach_the_warehouse_within_the_window(
        sandbox: Any, client: TwentyClient, store: Any, api: httpx.Client, clock: Clock) -> None:
    swept_run(store, client, sandbox, clock)  # the first push; the walk begins now
    started = clock.now
    code = unstamped_changes(sandbox, client, store, api)["code"]
    # The plain pull never sees them: each carries our stamp.
    plain = run_sync(store, client, SCHEMA, sweep=OFF)
    assert plain.counts["pull_person"]["updated"] == 0
    assert arrived(store, code) == {"workflow": False, "merge": False, "restore": False}
    runs = 0
    while not all(arrived(store, code).values()):
        assert clock.now - started <= WINDOW + INTERVAL, f"still missing after the window: {arrived(store, code)}"
        clock.now += INTERVAL
        swept_run(store, client, sandbox, clock)
        runs += 1
    assert runs >= 2  # spread over runs, not read at once
    # And nothing else was disturbed: the push had nothing to send back.
    assert store.get_rows("person", [9])[0]["primary_email"] == person_by_key(client, 9)["emails"]["primaryEmail"]


def test_every_run_stays_within_the_cap_when_far_behind(
        sandbox: Any, client: TwentyClient, store: Any, clock: Clock) -> None:
    swept_run(store, client, sandbox, clock, cap=2)
    clock.now += 5 * WINDOW  # no run for five windows: everything is due at once
    first = swept_run(store, client, sandbox, clock, cap=2)
    assert first.counts["sweep_person"]["behind"] > 0  # said so, and left for the next runs
    read = first.counts["sweep_company"]["read"] + first.counts["sweep_person"]["read"]
    for _ in range(5):
        if first.counts["sweep_person"]["cycles_completed"]:
            break
        first = swept_run(store, client, sandbox, clock, cap=2)
        read += first.counts["sweep_person"]["read"]
    assert first.counts["sweep_person"]["cycles_completed"] == 1
    assert read >= 40 + 8  # every record read, none twice (the walk resumed where it stopped)
    assert read <= 40 + 8 + 8  # the companies' new walk may start again in the same runs


def test_a_run_killed_midway_reads_its_slice_again(
        sandbox: Any, client: TwentyClient, store: Any, api: httpx.Client, clock: Clock,
        monkeypatch: pytest.MonkeyPatch) -> None:
    swept_run(store, client, sandbox, clock)
    seven = person_by_key(client, 7)
    code = "C" if seven["categoryCode"] != "C" else "D"
    api.patch(f"/_sandbox/unstamped/people/{seven['id']}", json={"categoryCode": code}).raise_for_status()
    mark = per_server("sweep:person", client.transport.base_url)
    before = store.get_watermark(mark)
    assert before is not None

    def killed(*args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt("killed while merging the slice")

    monkeypatch.setattr(sweep_module, "apply_records", killed)
    clock.now += WINDOW  # the whole object is due
    with pytest.raises(KeyboardInterrupt):
        run_sync(store, client, SCHEMA, sweep=policy(clock, cap=20))
    assert store.get_watermark(mark) == before  # not moved past unmerged records
    monkeypatch.undo()
    swept_run(store, client, sandbox, clock, cap=20)
    assert store.get_rows("person", [7])[0]["category_code"] == code


def test_the_settings_pace_the_sweep(monkeypatch: pytest.MonkeyPatch) -> None:
    from truth_forge.core.config import Settings

    monkeypatch.setenv("TRUTH_FORGE_SWEEP_WINDOW_HOURS", "6")
    monkeypatch.setenv("TRUTH_FORGE_SWEEP_MAX_REQUESTS", "12")
    paced = SweepPolicy.from_settings(Settings())
    assert paced.window == dt.timedelta(hours=6) and paced.max_requests == 12 and paced.enabled
    assert not SweepPolicy.from_settings(Settings(sweep_window_hours=0)).enabled
    assert not SweepPolicy.from_settings(Settings(sweep_max_requests=0)).enabled
    monkeypatch.delenv("TRUTH_FORGE_SWEEP_WINDOW_HOURS")
    assert SweepPolicy.from_settings(Settings()).window == dt.timedelta(hours=24)


def test_a_full_pass_starts_the_walk_again(sandbox: Any, client: TwentyClient, store: Any, clock: Clock) -> None:
    swept_run(store, client, sandbox, clock)
    clock.now += WINDOW / 2
    swept_run(store, client, sandbox, clock)  # half of the walk read
    mark = per_server("sweep:person", client.transport.base_url)
    assert '"after": null' not in (store.get_watermark(mark) or "")
    clock.now += dt.timedelta(minutes=1)
    assert run_sync(store, client, SCHEMA, full=True, sweep=policy(clock)).status == "succeeded"
    assert f'"started": "{clock.now:%Y-%m-%dT%H:%M}' in (store.get_watermark(mark) or "")
    assert '"after": null' in (store.get_watermark(mark) or "")


def test_runs_further_apart_get_a_larger_default_cap_but_a_set_cap_stays() -> None:
    """serve on BigQuery syncs every 30 minutes: the default cap (chosen for 10) triples, so the
    sweep still re-reads as many records a day; a cap someone set is theirs."""
    from truth_forge.sync.sweep import DEFAULT_MAX_REQUESTS, SweepPolicy

    policy = SweepPolicy()
    assert policy.per_run_of(30, explicit=False).max_requests == 3 * DEFAULT_MAX_REQUESTS
    assert policy.per_run_of(10, explicit=False).max_requests == DEFAULT_MAX_REQUESTS
    assert policy.per_run_of(5, explicit=False).max_requests == DEFAULT_MAX_REQUESTS
    assert SweepPolicy(max_requests=7).per_run_of(30, explicit=True).max_requests == 7
