"""Every response carries the server's Date (RFC 7231, as Node sends it), from the sandbox clock.

The Date header is the one time a client can read off the server without writing; it must be in
the same frame as `updatedAt`, so the sandbox takes both from one clock (offset included).
"""

from __future__ import annotations

import re
from email.utils import parsedate_to_datetime

import httpx

from tests.sandbox.util import create_person
from truth_forge.sandbox import SandboxConfig, SandboxServer
from truth_forge.sandbox.clock import parse_iso_ms

IMF_FIXDATE = re.compile(r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{2} (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|"
                         r"Sep|Oct|Nov|Dec) \d{4} \d{2}:\d{2}:\d{2} GMT$")


def _date_s(response: httpx.Response) -> int:
    values = response.headers.get_list("date")
    assert len(values) == 1, values
    assert IMF_FIXDATE.match(values[0]), values[0]
    return int(parsedate_to_datetime(values[0]).timestamp())


def test_every_response_has_one_date_header(sandbox: SandboxServer,
                                            sandbox_client: httpx.Client) -> None:
    rec = create_person(sandbox_client, first="Ada")
    responses = [
        sandbox_client.get("/rest/people"),
        sandbox_client.post("/rest/people", json={"name": {"firstName": "B"}}),
        sandbox_client.get(f"/rest/people/{rec['id']}"),
        sandbox_client.get("/rest/people/not-a-uuid"),          # 400
        sandbox_client.get("/rest/people", headers={"Authorization": "Bearer wrong"}),  # 401
        sandbox_client.get("/rest/metadata/objects"),
        sandbox_client.get("/_sandbox/health"),
        sandbox_client.get("/nowhere"),                          # 404 outside the API
    ]
    sandbox.set_faults(error_rate=1.0, max_faults=1, error_statuses=(500,))
    responses.append(sandbox_client.get("/rest/people"))          # injected 500
    sandbox.set_rate_limit(1)
    sandbox_client.get("/rest/people")
    responses.append(sandbox_client.get("/rest/people"))          # 429
    assert [r.status_code for r in responses] == [200, 201, 200, 400, 401, 200, 200, 404, 500, 429]
    for response in responses:
        _date_s(response)


def test_date_header_follows_the_sandbox_clock() -> None:
    """With the server's clock three days ahead, Date sits between the updatedAt of a write
    answered with it and that of the next write (it could not, read off the local clock)."""
    config = SandboxConfig(clock_offset_ms=3 * 86_400_000, rate_limit_per_minute=None)
    with SandboxServer(config) as sb, httpx.Client(
            base_url=sb.base_url, headers={"Authorization": f"Bearer {sb.api_key}"}) as http:
        first = http.post("/rest/people", json={"name": {"firstName": "A"}})
        date = _date_s(first)
        second = http.post("/rest/people", json={"name": {"firstName": "B"}})
        before = parse_iso_ms(first.json()["data"]["createPerson"]["updatedAt"])
        after = parse_iso_ms(second.json()["data"]["createPerson"]["updatedAt"])
        assert before is not None and after is not None
        assert before // 1000 <= date <= after // 1000
