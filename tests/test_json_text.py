"""CompactJson gives byte for byte the text of json.dumps with the same options (digests and hashes
kept in the sync state depend on it: a different text would make every record look changed), by
orjson where that is json's own text and by json where it is not."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import random
import struct
import uuid
from decimal import Decimal
from typing import Any

import pytest

from tests.fixtures.hostile_data import warehouse_businesses, warehouse_rows
from truth_forge.core.json_text import CompactJson

VALUES: list[Any] = [
    None, True, False, 0, -1, 2**63 - 1, 2**70, 1.1, -0.0, 1e16, 1e-7, float("nan"), float("inf"),
    "", "plain", "é ü 中文 😀", "line\nbreak \"quoted\" \\ tab\t nul\x00 \u2028", "</script>",
    [], {}, [1, [2, [3, {"b": 1, "a": [None, {"z": "é", "y": 2.5}]}]]], (1, 2),
    {"b": 1, "a": 2, "é": {"d": [], "c": {}}}, {"when": dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)},
    {"amount": Decimal("12.50")}, {1: "int key", "2": "text key"},
    # Where orjson alone would write another text: small floats and short negative exponents,
    # NaN and Infinity (null there), DEL and characters past ASCII, dates, integers past 64 bits.
    [1e-05, 2.5e-9, -3e-7, 0.00001234, 1e-10, 1e-100, 5e-324], {"n": float("nan"), "i": float("-inf"), "x": None},
    "del\x7f", ["del\x7f"], ["\ud7ff\ue000\uffff\U00010000\U0010ffff"], {"\U0001f600": 1, "\uffff": 2, "z": 3, "é": 4},
    {"d": dt.date(2026, 1, 2), "t": dt.time(3, 4)}, [uuid.UUID(int=7)], [2**64, -(2**63) - 1, 2**63, -(2**63)],
    "lone \ud800 surrogate", ["lone \udfff"],
]
HOSTILE = [v for row in warehouse_rows() + warehouse_businesses() for v in row.values()]


@dataclasses.dataclass
class _Note:
    text: str


VALUES.append({"note": _Note("a dataclass goes to default, as with json")})
_deep: Any = [1]
for _ in range(300):  # deeper than orjson writes
    _deep = [_deep]
VALUES.append(_deep)


def _random_float(rng: random.Random) -> float:
    if rng.random() < 0.5:
        return struct.unpack("d", struct.pack("Q", rng.getrandbits(64)))[0]  # every exponent, NaN included
    return rng.uniform(-1, 1) * 10.0 ** rng.randint(-30, 30)


def _random_text(rng: random.Random) -> str:
    ranges = [(0, 0x1F), (0x20, 0x7E), (0x7F, 0xFF), (0x100, 0xD7FF), (0xE000, 0xFFFF), (0x10000, 0x10FFFF),
              (0xD800, 0xDFFF)]  # the last: lone surrogates, which orjson refuses
    weights = [1, 20, 2, 2, 1, 1, 0.05]
    return "".join(chr(rng.randint(*rng.choices(ranges, weights)[0])) for _ in range(rng.randint(0, 12)))


def _random_value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(9 if depth < 4 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return rng.random() < 0.5
    if kind == 2:
        return rng.choice([rng.randint(-1000, 1000), rng.getrandbits(63), -rng.getrandbits(63), rng.getrandbits(80)])
    if kind == 3:
        return _random_float(rng)
    if kind in (4, 5):
        return _random_text(rng)
    if kind in (6, 7):
        return {_random_text(rng): _random_value(rng, depth + 1) for _ in range(rng.randint(0, 5))}
    return [_random_value(rng, depth + 1) for _ in range(rng.randint(0, 5))]


RANDOM = [_random_value(random.Random(seed)) for seed in range(3000)]


@pytest.mark.parametrize("ensure_ascii", [True, False])
@pytest.mark.parametrize("sort_keys", [True, False])
def test_the_text_is_that_of_json_dumps(sort_keys: bool, ensure_ascii: bool) -> None:
    fast = CompactJson(sort_keys=sort_keys, ensure_ascii=ensure_ascii, default=str)
    for value in VALUES + HOSTILE + RANDOM:
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


def test_json_values_as_a_warehouse_holds_them_take_orjsons_path() -> None:
    """The fast path is the one taken for the data a push encodes (else the speed is silently lost)."""
    values = [
        {"summary": "Priya likes chess", "interests": ["chess"], "confidence": 0.726},
        {"channels": [{"channel": "call", "count": 34}], "last_contacted": "2025-11-30", "total": None},
        {"résumé": "Zoë, 中文 and 😀", "score": 1e-3, "big": 2**62}]
    for ensure_ascii in (True, False):
        fast = CompactJson(sort_keys=True, ensure_ascii=ensure_ascii, default=str)
        for value in values:
            assert fast._by_orjson(value) is not None, value
