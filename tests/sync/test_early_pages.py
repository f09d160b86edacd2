"""A run asks for every object's first page of changes beside the setup check (sync/early_pages.py):
the requests overlap, what is done with their answers keeps its order. Sandbox over HTTP, DuckDB file."""

from __future__ import annotations

import datetime as dt
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from tests.sync.test_sync_sandbox import SCHEMA, crm, person_by_key, record_writes
from truth_forge.sync.objects import PERSON, parse_timestamp
from truth_forge.sync.pull import read_again
from truth_forge.sync.runner import run_sync
from truth_forge.twenty import TwentyClient


def test_the_pages_leave_with_the_setup_check_and_nothing_is_merged_before_its_verdict(
        sandbox: Any, client: TwentyClient, store: Any) -> None:
    assert run_sync(store, client, SCHEMA).status == "succeeded"
    key = person_by_key(client, 3)
    with crm(sandbox) as http:
        http.patch(f"/rest/people/{key['id']}", json={"subcategoryCode": "EDITED"}).raise_for_status()
        # One of our fields goes away: a pull merged now would read it as emptied in Twenty.
        person = next(o for o in client.metadata.list_objects() if o["nameSingular"] == "person")
        field = next(f for f in person["fields"] if f["name"] == "categoryCode")
        http.delete(f"/rest/metadata/fields/{field['id']}").raise_for_status()
    store._run("DELETE FROM {crm_sync_kv} WHERE key LIKE 'watermark:setup-verified:%'", ())
    rows_before = store.count_rows("contacts")
    sandbox.clear_request_log()
    stopped = run_sync(store, client, SCHEMA)
    assert stopped.status == "aborted" and "categoryCode missing" in stopped.sync_errors[-1]["error_message"]
    sent = [(e.method, e.path) for e in sandbox.request_log]
    assert ("GET", "/rest/people") in sent and ("GET", "/rest/metadata/objects") in sent  # asked together
    assert record_writes(sandbox) == []
    assert stopped.counts.get("pull_person") is None and store.count_rows("contacts") == rows_before
    assert store.get_rows("person", [3])[0]["subcategory_code"] != "EDITED"


def test_a_page_read_before_the_retry_lists_records_is_asked_for_again_after_them(
        sandbox: Any, client: TwentyClient, store: Any) -> None:
    """A record on the retry list is read by id and merged first; the page asked for ahead was read
    before that, so it may hold an older version of it, which must not be merged over the newer."""
    assert run_sync(store, client, SCHEMA).status == "succeeded"
    seven = person_by_key(client, 7)
    with crm(sandbox) as http:
        http.patch(f"/rest/people/{seven['id']}", json={"subcategoryCode": "OLDER"}).raise_for_status()
    read_again(store, PERSON, [seven["id"]])
    edits: list[str] = []

    def edited_once_the_page_answered(response: httpx.Response) -> None:
        request = response.request
        if request.method == "GET" and request.url.path == "/rest/people" and "updatedAt" in str(request.url) \
                and not edits:
            with crm(sandbox) as http:
                http.patch(f"/rest/people/{seven['id']}", json={"subcategoryCode": "NEWER"}).raise_for_status()
            edits.append(seven["id"])

    client.transport._http.event_hooks["response"].append(edited_once_the_page_answered)
    try:
        assert run_sync(store, client, SCHEMA).status == "succeeded"
    finally:
        client.transport._http.event_hooks["response"].remove(edited_once_the_page_answered)
    assert edits
    assert store.get_rows("person", [7])[0]["subcategory_code"] == "NEWER"


def test_the_watermark_is_no_later_than_the_answer_to_the_page(
        sandbox: Any, client: TwentyClient, store: Any) -> None:
    """With requests on the wire together, the transport's last Date may be another answer's (here
    the setup check's, answered 1.5 s after the people's page): the watermark a pull that found
    nothing leaves is never later than the Date of the people's own page."""
    assert run_sync(store, client, SCHEMA).status == "succeeded"
    assert run_sync(store, client, SCHEMA).status == "succeeded"  # our own writes read back once
    store._run("DELETE FROM {crm_sync_kv} WHERE key LIKE 'watermark:setup-verified:%'", ())
    sandbox.set_faults(latency_ms=1500, path_prefix="/rest/metadata")
    dates: list[dt.datetime] = []

    def note_the_page_date(response: httpx.Response) -> None:
        if response.request.url.path == "/rest/people" and response.request.method == "GET":
            dates.append(parsedate_to_datetime(response.headers["date"]))

    client.transport._http.event_hooks["response"].append(note_the_page_date)
    try:
        quiet = run_sync(store, client, SCHEMA)
    finally:
        client.transport._http.event_hooks["response"].remove(note_the_page_date)
        sandbox.set_faults(latency_ms=0)
    assert quiet.status == "succeeded" and quiet.counts["pull_person"] == {
        "updated": 0, "created": 0, "deleted": 0, "unchanged": 0, "conflicts": 0, "failed": 0}
    [answered] = dates
    mark = parse_timestamp(store.get_watermark("pull:person"))
    assert mark is not None and mark <= answered
