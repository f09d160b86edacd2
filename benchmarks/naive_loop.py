"""The seed document's way of syncing, written out for comparison: for each contact, look it up in
Twenty by its email, then create it or update it, one request at a time.

This is what `docs/seed-twenty-crm-setup-and-integration.md` sketches (a per-contact
`upsert_contact` in a loop), with the bodies truth-forge itself would send (same mapping), so the
only difference measured is the loop: no batches, no change detection, one request in flight.
It does what a careful script of that kind does with a 429: wait (Retry-After when the server sends
it, else one second) and send again. Bounded by a contact count and a time limit; the caller
extrapolates from what it measured and says so.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

MAX_RETRIES_PER_REQUEST = 20


@dataclass
class NaiveResult:
    contacts: int = 0  # contacts finished (looked up, then created or updated)
    created: int = 0
    updated: int = 0
    requests: int = 0  # every request sent, refusals included
    rate_limited: int = 0  # 429 answers
    failed: int = 0  # contacts given up on (an answer other than 2xx/429)
    started: float = 0.0  # time.time() when the first request went out
    ended: float = 0.0
    finished_at: list[float] = field(default_factory=list)  # time.time() per finished contact

    @property
    def seconds(self) -> float:
        return self.ended - self.started

    @property
    def contacts_per_minute(self) -> float:
        return self.contacts * 60.0 / self.seconds if self.seconds > 0 else 0.0


def person_bodies(warehouse: Any, schema: Any, limit: int) -> Iterator[dict[str, Any]]:
    """Up to `limit` person bodies from the warehouse's contacts, mapped as truth-forge maps them."""
    from truth_forge.sync import mapping

    produced = 0
    batches = warehouse.changed_rows("person", batch_size=min(limit, 1000))
    try:
        for rows in batches:
            for row in rows:
                if row.get("deleted_at") is not None:
                    continue
                yield mapping.contact_to_person(row, schema, left_out=[])
                produced += 1
                if produced >= limit:
                    return
    finally:
        close = getattr(batches, "close", None)
        if close:
            close()


def _send(client: httpx.Client, result: NaiveResult, method: str, url: str, deadline: float,
          **kwargs: Any) -> httpx.Response | None:
    for _ in range(MAX_RETRIES_PER_REQUEST):
        if time.time() >= deadline:
            return None
        response = client.request(method, url, **kwargs)
        result.requests += 1
        if response.status_code != 429:
            return response
        result.rate_limited += 1
        try:
            wait = float(response.headers.get("Retry-After", "1"))
        except ValueError:
            wait = 1.0
        time.sleep(max(0.0, min(wait, deadline - time.time(), 60.0)))
    return None


def run_naive(base_url: str, api_key: str, bodies: Iterator[Mapping[str, Any]], *,
              max_contacts: int, max_seconds: float) -> NaiveResult:
    """Look up, then create or update, one contact and one request at a time, until `max_contacts`
    are done or `max_seconds` have passed (a contact in progress at the deadline is not counted)."""
    result = NaiveResult()
    headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
    with httpx.Client(base_url=base_url, headers=headers, timeout=30.0) as client:
        result.started = time.time()
        deadline = result.started + max_seconds
        for body in bodies:
            if result.contacts >= max_contacts or time.time() >= deadline:
                break
            email = (body.get("emails") or {}).get("primaryEmail")
            found = None
            if email:
                response = _send(client, result, "GET", "/rest/people", deadline, params={
                    "filter": f"emails.primaryEmail[eq]:{json.dumps(email)}", "limit": "1"})
                if response is None:
                    break
                if response.is_success:
                    people = response.json().get("data", {}).get("people", [])
                    found = people[0]["id"] if people else None
            if found:
                response = _send(client, result, "PATCH", f"/rest/people/{found}", deadline, json=dict(body))
            else:
                response = _send(client, result, "POST", "/rest/people", deadline, json=dict(body))
            if response is None:
                break
            if response.is_success:
                result.contacts += 1
                result.finished_at.append(time.time())
                if found:
                    result.updated += 1
                else:
                    result.created += 1
            else:
                result.failed += 1
        result.ended = time.time()
    return result
