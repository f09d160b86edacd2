"""An edit that leaves our `updatedBy` stamp in place is an edit, not a write of ours (own_writes.py).

Twenty has writers that do not stamp `updatedBy` (older workflow steps, merges, restores, writes made
past the API); the sandbox's `/_sandbox/unstamped` route writes like them. On a record truth-forge
wrote last, such an edit keeps our stamp. The merge used to take every value under our stamp for
ours (a rule meant for a write whose answer a killed run never saved), so when the warehouse changed
the same field, the Twenty edit was overwritten with no conflict and no trace. Now Twenty's values
count as ours only where a write of ours can have lost its answer: within a run that did not end
cleanly (read from `crm_sync_runs`), or for a record nothing wrote since we created it, or shortly
before a write of ours failed. These tests hold both sides: the unstamped edit is a conflict settled
by policy and recorded, and a killed run's landed write still merges with no conflict.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.sync.test_sync_sandbox import SCHEMA, person_by_key
from truth_forge.sync import own_writes
from truth_forge.sync.objects import PERSON, format_timestamp, now_utc
from truth_forge.sync.pull import read_again
from truth_forge.sync.runner import run_sync
from truth_forge.sync.sweep import OFF
from truth_forge.twenty import TwentyClient
from truth_forge.warehouse.accounting import Statement
from truth_forge.warehouse.sample_data import generate_sample_data

KEY = 7
BEFORE = {"firstName": "Seven", "lastName": "Before"}


@pytest.fixture
def engine_store(warehouse: Any) -> Any:
    """40 contacts and 8 businesses, on each engine in turn (DuckDB, then BigQuery on bqemulator)."""
    generate_sample_data(warehouse, 40, 8, seed=7)
    return warehouse


@pytest.fixture
def api(sandbox: Any) -> Iterator[httpx.Client]:
    """truth-forge's own key, for the sandbox's control routes (plain HTTP)."""
    with httpx.Client(base_url=sandbox.base_url, headers={"Authorization": f"Bearer {sandbox.api_key}"}) as http:
        yield http


def synced(store: Any, client: TwentyClient, **options: Any) -> Any:
    result = run_sync(store, client, SCHEMA, sweep=OFF, **options)
    assert result.status == "succeeded", result.sync_errors
    return result


def edit_unstamped(api: httpx.Client, client: TwentyClient, crm_id: str, last_name: str) -> None:
    """As an older workflow step writes: the value lands, `updatedAt` moves, `updatedBy` stays ours."""
    api.patch(f"/_sandbox/unstamped/people/{crm_id}",
              json={"name": {"firstName": "Seven", "lastName": last_name}}).raise_for_status()
    assert person_by_key(client, KEY)["updatedBy"]["source"] == "API"  # still our stamp


def write_as_a_killed_run_did(store: Any, client: TwentyClient, crm_id: str, last_name: str) -> None:
    """What a run killed right after a write landed leaves: its run row `running` (closed as stale by
    the next run), and our stamped write in Twenty that the sync state never heard of."""
    store.start_run(started_at=now_utc())
    client.records.create_many("people", [{"id": crm_id, "name": {"firstName": "Seven", "lastName": last_name}}],
                               upsert=True, match_key="id")


def rename_here(store: Any, last_name: str) -> None:
    store.upsert_contacts([{"contact_id": KEY, "canonical_name": f"Seven {last_name}"}])


def names(store: Any, client: TwentyClient) -> tuple[str, str]:
    """(the warehouse's name, Twenty's name) of the contact."""
    name = person_by_key(client, KEY)["name"]
    return store.get_rows("person", [KEY])[0]["canonical_name"], f"{name['firstName']} {name['lastName']}"


def conflicts_of(store: Any) -> list[dict[str, Any]]:
    return [c for c in store.conflicts() if c["record_key"] == str(KEY)]


@pytest.mark.parametrize("policy", ["crm_wins", "warehouse_wins"])
def test_an_unstamped_edit_met_by_a_warehouse_edit_is_a_conflict_the_policy_settles(
        sandbox: Any, client: TwentyClient, engine_store: Any, api: httpx.Client, policy: str) -> None:
    store = engine_store
    synced(store, client)
    seven = person_by_key(client, KEY)
    edit_unstamped(api, client, seven["id"], "Workflow")
    rename_here(store, "Warehouse")

    result = synced(store, client, conflict_policy=policy)

    winner = "Seven Workflow" if policy == "crm_wins" else "Seven Warehouse"
    assert names(store, client) == (winner, winner)
    [conflict] = conflicts_of(store)  # before: none, and the workflow's value silently overwritten
    assert (conflict["field"], conflict["winner"]) == ("canonical_name", "twenty" if policy == "crm_wins" else "warehouse")
    assert "Workflow" in conflict["twenty_value"] and "Warehouse" in conflict["warehouse_value"]
    assert conflict["run_id"] == result.run_id
    # The losing value is on record in the run's errors too (a settled conflict, closed at once).
    said = [e for e in result.sync_errors if e["operation"] == "conflict" and e["record_key"] == str(KEY)]
    assert len(said) == 1 and "Workflow" in said[0]["error_message"] and "Warehouse" in said[0]["error_message"]
    if policy == "crm_wins":  # the warehouse row changed: its history says from what
        pulled = [h for h in store.history_of("person", record_key=KEY) if h["field"] == "canonical_name"]
        assert any("Warehouse" in str(h["old_value"]) and "Workflow" in str(h["new_value"]) for h in pulled), pulled


def test_a_write_a_killed_run_left_is_ours_and_the_newer_warehouse_value_goes_out(
        sandbox: Any, client: TwentyClient, engine_store: Any) -> None:
    store = engine_store
    synced(store, client)
    seven = person_by_key(client, KEY)
    write_as_a_killed_run_did(store, client, seven["id"], "Once")
    rename_here(store, "Twice")

    synced(store, client)

    assert names(store, client) == ("Seven Twice", "Seven Twice")
    assert conflicts_of(store) == []


def test_a_write_that_landed_but_failed_for_its_run_is_ours_in_a_run_that_ended_partial(
        sandbox: Any, client: TwentyClient, engine_store: Any) -> None:
    """A batch update whose answers never came (each attempt carried out, its answer dripping past
    the deadline) fails as a whole and the run goes on, ending `partial`: no run window covers that
    write, the record's `failed` state does."""
    store = engine_store
    synced(store, client)
    rename_here(store, "Once")
    sandbox.set_faults(drip_rate=1.0, drip_interval_ms=200, path_prefix="/rest/batch/people", max_faults=2)
    with TwentyClient(sandbox.base_url, sandbox.api_key, requests_per_minute=100_000, timeout=5, max_retries=1,
                      deadline=1.0) as impatient:
        cut_off = run_sync(store, impatient, SCHEMA, sweep=OFF)
    sandbox.clear_faults()
    assert cut_off.status == "partial", cut_off.sync_errors
    assert person_by_key(client, KEY)["name"]["lastName"] == "Once"  # it landed
    assert store.read_sync_state("person", [KEY])[str(KEY)]["status"] == "failed"
    rename_here(store, "Twice")

    synced(store, client)

    assert names(store, client) == ("Seven Twice", "Seven Twice")
    assert conflicts_of(store) == []


def test_a_run_that_went_wrong_earlier_does_not_make_a_later_unstamped_edit_ours(
        sandbox: Any, client: TwentyClient, store: Any, api: httpx.Client) -> None:
    """Only the span of a run that went wrong is suspect, not every stamped record once one has."""
    synced(store, client)
    aborted = store.start_run(started_at=now_utc() - dt.timedelta(hours=3))
    store.finish_run(aborted, "aborted", {}, finished_at=now_utc() - dt.timedelta(hours=2))
    seven = person_by_key(client, KEY)
    edit_unstamped(api, client, seven["id"], "Workflow")
    rename_here(store, "Warehouse")

    synced(store, client)

    assert names(store, client) == ("Seven Workflow", "Seven Workflow")  # Twenty wins by default
    assert len(conflicts_of(store)) == 1


def test_a_killed_serves_webhook_run_is_not_one_window_over_the_servers_life(
        sandbox: Any, client: TwentyClient, engine_store: Any, api: httpx.Client) -> None:
    """A killed `serve` leaves its webhook run `running` from the server's start until the next writer
    closes it: as one window it would make every stamped value of the server's life ours. Its own
    writes are record keys only, and each scheduled sync inside it is a run of its own."""
    store = engine_store
    synced(store, client)
    started = now_utc() - dt.timedelta(hours=2)
    store.start_run(started_at=started)  # the webhook run, killed with the server
    for minutes in (0.1, 10, 20):  # its scheduled syncs, ten minutes apart (the first one at once)
        inside = store.start_run(started_at=started + dt.timedelta(minutes=minutes))
        store.finish_run(inside, "succeeded", {}, finished_at=started + dt.timedelta(minutes=minutes + 1))
    seven = person_by_key(client, KEY)
    edit_unstamped(api, client, seven["id"], "Workflow")
    rename_here(store, "Warehouse")

    synced(store, client)  # closes the webhook run as aborted, ending now

    assert names(store, client) == ("Seven Workflow", "Seven Workflow")
    assert len(conflicts_of(store)) == 1


@pytest.mark.parametrize("policy", ["crm_wins", "warehouse_wins"])
def test_an_unstamped_edit_met_by_a_deletion_here_is_a_conflict_the_policy_settles(
        sandbox: Any, client: TwentyClient, store: Any, api: httpx.Client, policy: str) -> None:
    synced(store, client)
    seven = person_by_key(client, KEY)
    edit_unstamped(api, client, seven["id"], "Workflow")
    store.soft_delete("person", [KEY])
    # The pull's filter leaves our stamped record out; the sweep (or a retry) reads it: the latter here.
    read_again(store, PERSON, [seven["id"]])

    result = synced(store, client, conflict_policy={"deleted_at": policy, "*": "crm_wins"})

    said = [e for e in result.sync_errors if e["operation"] == "conflict" and e["record_key"] == str(KEY)]
    assert len(said) == 1 and "deleted in the warehouse" in said[0]["error_message"]  # before: none
    row = store.get_rows("person", [KEY])[0]
    if policy == "crm_wins":
        assert row["deleted_at"] is None and row["canonical_name"] == "Seven Workflow"
        assert person_by_key(client, KEY)["deletedAt"] is None
    else:
        assert row["deleted_at"] is not None
        trash = client.records.iter_records("people", filter="deletedAt[is]:NOT_NULL")
        assert seven["id"] in {p["id"] for p in trash}


def test_the_runs_are_read_once_a_run_and_only_when_a_stamped_record_needs_them(
        sandbox: Any, client: TwentyClient, store: Any, api: httpx.Client) -> None:
    reads: list[str] = []

    def count(statement: Statement) -> None:
        if "crm_sync_runs" in statement.sql and "'partial', 'running'" in statement.sql:
            reads.append(statement.sql)

    store.statements.listeners.append(count)
    synced(store, client)
    synced(store, client)
    assert reads == []  # no stamped record met the merge: nothing read
    for key in (3, 5, KEY, 9):
        person = person_by_key(client, key)
        api.patch(f"/_sandbox/unstamped/people/{person['id']}", json={"name": {
            "firstName": "Someone", "lastName": f"Workflow{key}"}}).raise_for_status()
        store.upsert_contacts([{"contact_id": key, "canonical_name": f"Someone Warehouse{key}"}])
    result = synced(store, client)
    assert len(reads) == 1
    assert len([e for e in result.sync_errors if e["operation"] == "conflict"]) == 4


# --- the rule on its own ----------------------------------------------------------------------------

NAME = "truth-forge"
OURS = {"source": "API", "name": NAME, "workspaceMemberId": None}
SOMEONE = {"source": "MANUAL", "name": "Ada Lovelace", "workspaceMemberId": "m-1"}
NOON = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)


def record(updated: dt.datetime, *, created: dt.datetime | None = None, by: dict[str, Any] = OURS,
           created_by: dict[str, Any] = SOMEONE) -> dict[str, Any]:
    return {"id": "r", "updatedBy": by, "updatedAt": format_timestamp(updated), "createdBy": created_by,
            "createdAt": format_timestamp(created or NOON - dt.timedelta(days=1))}


def windows_of(*spans: tuple[dt.datetime, dt.datetime]) -> own_writes.UnsavedWindows:
    return own_writes.UnsavedWindows.from_runs({"started_at": s, "finished_at": e} for s, e in spans)


NO_RUNS = own_writes.UnsavedWindows()


def test_a_window_runs_from_the_start_less_the_skew_to_the_end_plus_the_margins() -> None:
    windows = windows_of((NOON, NOON + dt.timedelta(minutes=10)))
    first = NOON - own_writes.CLOCK_SKEW
    last = NOON + dt.timedelta(minutes=10) + own_writes.LANDING_MARGIN + own_writes.CLOCK_SKEW
    assert windows.covers(first) and windows.covers(last) and windows.covers(NOON + dt.timedelta(minutes=5))
    assert not windows.covers(first - dt.timedelta(milliseconds=1))
    assert not windows.covers(last + dt.timedelta(milliseconds=1))
    assert not NO_RUNS.covers(NOON)


def test_overlapping_runs_make_one_window_and_the_gaps_between_runs_stay_out() -> None:
    hour = dt.timedelta(hours=1)
    windows = windows_of((NOON + 5 * hour, NOON + 6 * hour), (NOON, NOON + hour),
                         (NOON + hour - dt.timedelta(minutes=1), NOON + 2 * hour))
    assert windows.starts == (NOON - own_writes.CLOCK_SKEW, NOON + 5 * hour - own_writes.CLOCK_SKEW)
    assert windows.covers(NOON + 90 * dt.timedelta(minutes=1))
    assert not windows.covers(NOON + 3 * hour)
    assert windows.covers(NOON + 5 * hour + dt.timedelta(minutes=30))
    assert not windows.covers(NOON + 8 * hour)


def test_a_later_run_ends_the_window_unless_its_start_is_within_the_clock_skew() -> None:
    hour, minute = dt.timedelta(hours=1), dt.timedelta(minutes=1)
    killed = {"started_at": NOON, "finished_at": NOON + 5 * hour}
    cut = own_writes.UnsavedWindows.from_runs([{**killed, "later_starts": [NOON + 10 * minute, NOON + hour]}])
    end = NOON + 10 * minute + own_writes.LANDING_MARGIN + own_writes.CLOCK_SKEW
    assert cut.covers(end) and not cut.covers(end + minute)
    # A start within the skew of the run's own may be the other clock's misreading: the next one counts.
    skewed = own_writes.UnsavedWindows.from_runs([{**killed, "later_starts": [NOON + minute, NOON + hour]}])
    assert skewed.covers(NOON + hour) and not skewed.covers(NOON + 2 * hour)
    # None later than the skew among them: the recorded end.
    uncut = own_writes.UnsavedWindows.from_runs([{**killed, "later_starts": [NOON + minute]}])
    assert uncut.covers(NOON + 5 * hour)


def test_our_stamp_alone_makes_nothing_ours() -> None:
    asked: list[int] = []

    def windows() -> own_writes.UnsavedWindows:
        asked.append(1)
        return windows_of((NOON - dt.timedelta(minutes=1), NOON + dt.timedelta(minutes=1)))

    assert not own_writes.unsaved_write(record(NOON + dt.timedelta(hours=1)), NAME, None, lambda: NO_RUNS)
    assert own_writes.unsaved_write(record(NOON), NAME, None, windows)  # within a run that went wrong
    # Someone else's stamp, or our key unknown: never ours, and no run is read for it.
    assert not own_writes.unsaved_write(record(NOON, by=SOMEONE), NAME, None, windows)
    assert not own_writes.unsaved_write(record(NOON), None, None, windows)
    assert asked == [1]


def test_a_record_nothing_wrote_since_our_create_is_ours() -> None:
    made = record(NOON, created=NOON, created_by=OURS)
    assert own_writes.unsaved_write(made, NAME, None, lambda: NO_RUNS)
    later = record(NOON + dt.timedelta(seconds=1), created=NOON, created_by=OURS)  # an unstamped edit since
    assert not own_writes.unsaved_write(later, NAME, None, lambda: NO_RUNS)
    theirs = record(NOON, created=NOON)  # created by someone: an equal stamp says nothing of ours
    assert not own_writes.unsaved_write(theirs, NAME, None, lambda: NO_RUNS)


def test_a_failed_write_may_have_landed_during_its_attempts_only() -> None:
    failed = {"status": "failed", "last_synced_at": NOON}
    span = own_writes.FAILED_WRITE_SPAN
    assert own_writes.unsaved_write(record(NOON - span + dt.timedelta(minutes=1)), NAME, failed, lambda: NO_RUNS)
    assert not own_writes.unsaved_write(record(NOON - span - own_writes.CLOCK_SKEW - dt.timedelta(minutes=1)),
                                        NAME, failed, lambda: NO_RUNS)
    assert not own_writes.unsaved_write(record(NOON + own_writes.CLOCK_SKEW + dt.timedelta(minutes=1)),
                                        NAME, failed, lambda: NO_RUNS)
    assert not own_writes.unsaved_write(record(NOON - dt.timedelta(minutes=1)), NAME,
                                        {"status": "synced", "last_synced_at": NOON}, lambda: NO_RUNS)
