"""CompactJson gives byte for byte the text of json.dumps with the same options (digests and hashes
kept in the sync state depend on it: a different text would make every record look changed)."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from typing import Any

import pytest

from tests.fixtures.hostile_data import warehouse_businesses, warehouse_rows
from truth_forge.twenty.json_text import CompactJson

VALUES: list[Any] = [
    None, True, False, 0, -1, 2**63 - 1, 2**70, 1.1, -0.0, 1e16, 1e-7, float("nan"), float("inf"),
    "", "plain", "é ü 中文 😀", "line\nbreak \"quoted\" \\ tab\t nul\x00 \u2028", "</script>",
    [], {}, [1, [2, [3, {"b": 1, "a": [None, {"z": "é", "y": 2.5}]}]]], (1, 2),
    {"b": 1, "a": 2, "é": {"d": [], "c": {}}}, {"when": dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)},
    {"amount": Decimal("12.50")}, {1: "int key", "2": "text key"},
]
HOSTILE = [v for row in warehouse_rows() + warehouse_businesses() for v in row.values()]


@pytest.mark.parametrize("ensure_ascii", [True, False])
@pytest.mark.parametrize("sort_keys", [True, False])
def test_the_text_is_that_of_json_dumps(sort_keys: bool, ensure_ascii: bool) -> None:
    fast = CompactJson(sort_keys=sort_keys, ensure_ascii=ensure_ascii, default=str)
    for value in VALUES + HOSTILE:
        if sort_keys and isinstance(value, dict) and {type(k) for k in value} == {int, str}:
            continue  # json.dumps itself cannot sort mixed keys
        expected = json.dumps(value, sort_keys=sort_keys, separators=(",", ":"), ensure_ascii=ensure_ascii,
                              default=str)
        assert fast.encode(value) == expected, value


def test_what_json_dumps_refuses_is_refused_the_same_way() -> None:
    fast = CompactJson(sort_keys=True, ensure_ascii=True)
    circular: list[Any] = []
    circular.append(circular)
    with pytest.raises(ValueError, match="Circular reference"):
        fast.encode(circular)
    with pytest.raises(TypeError, match="not JSON serializable"):
        fast.encode({"a": object()})
    with pytest.raises(TypeError):
        fast.encode({1: "a", "b": 2})  # mixed keys cannot be sorted
