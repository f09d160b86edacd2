"""What a warehouse statement carries besides its SQL, and the plain row shapes it returns.

Why it exists: the engines, the statement accounting and the mixins of `Warehouse` (run history,
the state journal, change detection) all speak these; keeping them apart from `base.py` lets those
modules import them without importing the `Warehouse` they are part of.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from truth_forge.core.json_text import read_json


@dataclass(frozen=True)
class Scalar:
    """`@name` in the SQL."""

    name: str
    type: str
    value: Any


@dataclass(frozen=True)
class KeySet:
    """`x IN {keys_name}` in the SQL: a list of keys of one type."""

    name: str
    type: str
    values: Sequence[Any]


@dataclass(frozen=True)
class RowSet:
    """`FROM {rows_name} AS r` in the SQL: a batch of typed rows (JSON as canonical text)."""

    name: str
    columns: Sequence[tuple[str, str]]
    rows: Sequence[Mapping[str, Any]]


Bind = Scalar | KeySet | RowSet


def plain_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """A result row as a dict, timestamps as aware UTC datetimes."""
    out = dict(row)
    for name, value in out.items():
        if isinstance(value, dt.datetime):
            out[name] = value.astimezone(dt.UTC)
    return out


def json_value(value: Any) -> Any:
    """A JSON column read as text (TO_JSON_STRING on both engines), parsed; an engine may already have."""
    if isinstance(value, str):
        return parse_json(value)
    return value


# The decoder's C scanner, called directly: `json.loads` wraps it in three Python layers and two
# whitespace matches, which for the short JSON columns of a row cost twice the scan itself.
_SCAN: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]


def parse_json(text: str) -> Any:
    """`json.loads(text)`: the same value, or the same error (orjson reads it where it may)."""
    return read_json(text, _json_loads)


def _json_loads(text: str) -> Any:
    try:
        value, end = _SCAN(text, 0)
    except StopIteration:
        return json.loads(text)  # not a value where one should start: json.loads says why
    return value if end == len(text) else json.loads(text)  # whitespace around it, or extra data
