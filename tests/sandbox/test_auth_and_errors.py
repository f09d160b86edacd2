"""Authentication and generic error bodies (reference §5, §1.1)."""

from __future__ import annotations

import uuid

import httpx

from tests.sandbox.util import create_person, error_of
from truth_forge.sandbox import SandboxConfig, SandboxServer


def test_missing_token_is_403_with_twentys_body(sandbox: SandboxServer) -> None:
    response = httpx.get(f"{sandbox.base_url}/rest/people")
    assert response.status_code == 403
    assert response.json() == {"statusCode": 403, "error": "FORBIDDEN_EXCEPTION",
                               "messages": ["Missing authentication token"]}


def test_bad_token_is_401_with_twentys_body(sandbox: SandboxServer) -> None:
    response = httpx.get(f"{sandbox.base_url}/rest/people",
                         headers={"Authorization": "Bearer not-a-key"})
    assert response.status_code == 401
    assert response.json() == {"statusCode": 401, "error": "UNAUTHENTICATED",
                               "messages": ["Token invalid."]}


def test_token_in_query_string_is_not_accepted(sandbox: SandboxServer) -> None:
    response = httpx.get(f"{sandbox.base_url}/rest/people", params={"token": sandbox.api_key})
    assert response.status_code == 403


def test_every_configured_key_works_and_metadata_needs_auth_too(sandbox: SandboxServer) -> None:
    for key in sandbox.config.api_keys:
        response = httpx.get(f"{sandbox.base_url}/rest/people",
                             headers={"Authorization": f"Bearer {key}"})
        assert response.status_code == 200
    assert httpx.get(f"{sandbox.base_url}/rest/metadata/objects").status_code == 403


def test_unknown_object_and_singular_hint(sandbox_client: httpx.Client) -> None:
    assert error_of(sandbox_client.get("/rest/persons"), 400) == \
        "object 'persons' not found. eg: people"
    assert error_of(sandbox_client.get("/rest/person"), 400) == \
        "object 'person' not found. Did you mean 'people'?"


def test_invalid_uuid_in_path_is_400(sandbox_client: httpx.Client) -> None:
    assert error_of(sandbox_client.get("/rest/people/abc"), 400) == "'abc' is not a valid UUID"


def test_unknown_record_is_404_record_not_found(sandbox_client: httpx.Client) -> None:
    response = sandbox_client.get(f"/rest/people/{uuid.uuid4()}")
    assert error_of(response, 404) == "Record not found"
    assert response.json()["error"] == "NotFoundException"
    assert sandbox_client.patch(f"/rest/people/{uuid.uuid4()}", json={}).status_code == 404
    assert sandbox_client.delete(f"/rest/people/{uuid.uuid4()}").status_code == 404


def test_invalid_json_body_is_400(sandbox_client: httpx.Client) -> None:
    response = sandbox_client.post("/rest/people", content=b"{not json",
                                   headers={"Content-Type": "application/json"})
    assert response.status_code == 400


def test_unimplemented_routes_say_so(sandbox_client: httpx.Client) -> None:
    create_person(sandbox_client, first="Ada")
    response = sandbox_client.post("/rest/people/duplicates", json={})
    assert response.status_code == 501


def _missing_record_statuses(client: httpx.Client) -> list[tuple[int, dict[str, object]]]:
    rid = str(uuid.uuid4())
    responses = [client.get(f"/rest/people/{rid}"),
                 client.patch(f"/rest/people/{rid}", json={"jobTitle": "x"}),
                 client.delete(f"/rest/people/{rid}"),
                 client.delete(f"/rest/people/{rid}", params={"soft_delete": "true"}),
                 client.patch(f"/rest/people/{rid}/restore")]
    return [(r.status_code, r.json()) for r in responses]


def test_a_missing_record_is_404_on_latest_and_400_on_legacy(
        sandbox_client: httpx.Client, legacy_client: httpx.Client) -> None:
    assert _missing_record_statuses(sandbox_client) == [(404, {
        "statusCode": 404, "error": "NotFoundException", "messages": ["Record not found"]})] * 5
    assert _missing_record_statuses(legacy_client) == [(400, {
        "statusCode": 400, "error": "BadRequestException", "messages": ["Record not found"]})] * 5


def test_the_not_found_status_can_be_switched_alone() -> None:
    config = SandboxConfig(api_keys=["k"], rate_limit_per_minute=None, not_found_status=400)
    assert config.behaviour.email_check == "strict"  # the rest of "latest" stays
    with SandboxServer(config) as server, httpx.Client(
            base_url=server.base_url, headers={"Authorization": "Bearer k"}) as client:
        assert [status for status, _ in _missing_record_statuses(client)] == [400] * 5
