"""Small helpers shared by the sandbox conformance tests (plain httpx, no project client)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx


def person(first: str, last: str = "", email: str | None = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"name": {"firstName": first, "lastName": last}}
    if email is not None:
        body["emails"] = {"primaryEmail": email}
    body.update(extra)
    return body


def create_person(client: httpx.Client, **kwargs: Any) -> dict[str, Any]:
    response = client.post("/rest/people", json=person(**kwargs))
    assert response.status_code == 201, response.text
    return response.json()["data"]["createPerson"]


def create_people(client: httpx.Client, items: list[dict[str, Any]],
                  upsert: bool = False) -> list[dict[str, Any]]:
    url = "/rest/batch/people" + ("?upsert=true" if upsert else "")
    response = client.post(url, json=items)
    assert response.status_code == 201, response.text
    return response.json()["data"]["createPeople"]


def error_of(response: httpx.Response, status: int) -> str:
    """Assert Twenty's generic error body and return its single message."""
    assert response.status_code == status, response.text
    body = response.json()
    assert body["statusCode"] == status
    assert isinstance(body["messages"], list) and body["messages"]
    return str(body["messages"][0])


def object_id(client: httpx.Client, name_singular: str) -> str:
    objects = client.get("/rest/metadata/objects").json()["data"]
    return next(o["id"] for o in objects if o["nameSingular"] == name_singular)


def create_field(client: httpx.Client, object_name: str, **body: Any) -> httpx.Response:
    return client.post("/rest/metadata/fields",
                       json={"objectMetadataId": object_id(client, object_name), **body})


SELECT_OPTIONS = [
    {"value": "NEW", "label": "New", "color": "blue", "position": 0},
    {"value": "QUALIFIED", "label": "Qualified", "color": "green", "position": 1},
    {"value": "LOST_2024", "label": "Lost", "color": "red", "position": 2},
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def spawn_sandbox(port: int, *args: str) -> subprocess.Popen[str]:
    """`python -m truth_forge.sandbox --port PORT ARGS...`, its output (unbuffered) on stdout."""
    return subprocess.Popen(
        [sys.executable, "-m", "truth_forge.sandbox", "--port", str(port), *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"}, cwd=Path(__file__).resolve().parents[2])


def first_answer(send: Callable[[], httpx.Response]) -> httpx.Response:
    """`send()`'s answer once the server listens (it prints before uvicorn binds): a bounded wait."""
    for _ in range(200):
        try:
            return send()
        except httpx.ConnectError:
            time.sleep(0.05)
    raise AssertionError("server never accepted a connection")
