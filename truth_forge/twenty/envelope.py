"""Twenty's answer envelope: every record route wraps its payload as `{"data": {"<operation>": ...}}`."""

from __future__ import annotations

from typing import Any

from truth_forge.twenty.errors import TwentyProtocolError


def data_of(body: Any, method: str, path: str) -> Any:
    """The payload inside the envelope, or a protocol error naming the request."""
    if not isinstance(body, dict) or not isinstance(body.get("data"), dict) or len(body["data"]) != 1:
        raise TwentyProtocolError(
            "Twenty's answer does not have the expected {data: {...}} envelope",
            method=method,
            path=path,
            body_excerpt=str(body)[:300],
        )
    return next(iter(body["data"].values()))
