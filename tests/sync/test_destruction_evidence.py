"""A record is taken as destroyed in Twenty only on positive evidence (a 404 by id, a `destroyed`
event, a full walk that completed), never because a filtered answer lacked it.

The sandbox's `lose_listed_rate` fault plays a lossy proxy or cache: answers to `id[in]` lists lose
records that are alive and well.
"""

from __future__ import annotations

from typing import Any

import httpx

from tests.fixtures.sandbox import as_person
from truth_forge.core.crm_schema import CrmSchema
from truth_forge.sync import push
from truth_forge.sync.runner import run_sync
from truth_forge.twenty import TwentyClient

SCHEMA = CrmSchema.load()
CONTACTS = 40  # tests/sync/conftest.py `store`


def rename_everyone(store: Any) -> None:
    store.upsert_contacts([{"contact_id": n, "canonical_name": f"Renamed Person{n}"} for n in range(1, CONTACTS + 1)])


def deleted_in_warehouse(store: Any) -> set[int]:
    return {r["contact_id"] for r in store.get_rows("person", range(1, CONTACTS + 1)) if r["deleted_at"] is not None}


def crm_ids(client: TwentyClient) -> dict[int, str]:
    return {int(p["contactId"]): p["id"] for p in client.records.iter_records("people")}


def test_records_lost_from_a_read_back_stay_live(sandbox: Any, client: TwentyClient, store: Any) -> None:
    assert run_sync(store, client, SCHEMA).status == "succeeded"
    rename_everyone(store)
    sandbox.set_faults(lose_listed_rate=1.0)  # every id[in] answer comes back empty
    sandbox.clear_request_log()
    result = run_sync(store, client, SCHEMA)
    assert deleted_in_warehouse(store) == set()
    counts = result.counts["push_person"]
    # The first CONFIRM_BY_ID missing records were asked for by id, found alive and updated; the
    # others were neither written nor deleted, and wait for the next run as failures.
    gets = [e for e in sandbox.request_log if e.method == "GET" and e.path.startswith("/rest/people/")]
    assert len(gets) == push.CONFIRM_BY_ID
    assert counts["upserted"] == push.CONFIRM_BY_ID and counts["failed"] == CONTACTS - push.CONFIRM_BY_ID
    assert counts["caught_up"] == 0
    states = store.read_sync_state("person", list(range(1, CONTACTS + 1)))
    assert not [k for k, s in states.items() if s["status"] == "deleted"]
    assert all("not taken as deleted" in e["error_message"] for e in result.sync_errors)

    sandbox.clear_faults()
    again = run_sync(store, client, SCHEMA)
    assert again.status == "succeeded" and again.counts["push_person"]["upserted"] == CONTACTS - push.CONFIRM_BY_ID
    names = {int(p["contactId"]): p["name"]["firstName"] for p in client.records.iter_records("people")}
    assert names == {n: "Renamed" for n in range(1, CONTACTS + 1)}
    assert deleted_in_warehouse(store) == set()


def test_a_record_really_destroyed_is_still_settled_as_destroyed(sandbox: Any, client: TwentyClient,
                                                                 store: Any) -> None:
    run_sync(store, client, SCHEMA)
    ids = crm_ids(client)
    with httpx.Client(base_url=sandbox.base_url, headers=as_person(sandbox)) as crm:
        assert crm.delete(f"/rest/people/{ids[7]}").status_code == 200  # no soft_delete: destroyed
        assert crm.get(f"/rest/people/{ids[7]}").status_code == 404
    store.upsert_contacts([{"contact_id": n, "canonical_name": f"Renamed Person{n}"} for n in (6, 7, 8)])
    sandbox.set_faults(lose_listed_rate=1.0)
    run_sync(store, client, SCHEMA)
    assert deleted_in_warehouse(store) == {7}  # the 404 by id; 6 and 8 were found by id, alive
    assert store.read_sync_state("person", ["7"])["7"]["status"] == "deleted"
    names = {int(p["contactId"]): p["name"]["firstName"] for p in client.records.iter_records("people")}
    assert 7 not in names and names[6] == names[8] == "Renamed"
