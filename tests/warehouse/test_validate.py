"""Row validation and the warehouse's JSON text: the faster paths give what the plain ones gave.

Issue 22 made them cheaper per value (a push validates a dozen values per record it saves); these
check that the values, the text and every error stay what they were.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from truth_forge.warehouse.binds import parse_json
from truth_forge.warehouse.errors import WarehouseDataError
from truth_forge.warehouse.schema import BOOL, INT64, JSON, STRING, TIMESTAMP
from truth_forge.warehouse.validate import STRING_LIST, canonical_json, validate_rows

FIELDS = {"id": INT64, "name": STRING, "flag": BOOL, "at": TIMESTAMP, "doc": JSON, "tags": STRING_LIST}
PLAIN = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _row(i: int, **changes: Any) -> dict[str, Any]:
    return {"id": i, "name": f"n{i}", "flag": True, "at": dt.datetime(2026, 1, 1, 12, tzinfo=dt.timezone(dt.timedelta(hours=2))),
            "doc": {"b": [1, 2.5, None], "a": "é"}, "tags": ("x",), **changes}


def _error(rows: list[dict[str, Any]]) -> str:
    with pytest.raises(WarehouseDataError) as info:
        validate_rows("t", rows, FIELDS, "id")
    return str(info.value)


def test_values_are_normalised_as_before() -> None:
    rows, fields = validate_rows("t", [_row(1), _row(2, name=None, tags=None, doc=None), _row(1, name="last")], FIELDS, "id")
    assert fields == ("at", "doc", "flag", "id", "name", "tags")
    assert [r["id"] for r in rows] == [2, 1] and rows[1]["name"] == "last"  # last wins, and keeps the last place
    assert rows[1]["at"] == dt.datetime(2026, 1, 1, 10, tzinfo=dt.UTC) and rows[1]["at"].tzinfo is dt.UTC
    assert rows[1]["doc"] == '{"a":"é","b":[1,2.5,null]}' and rows[1]["tags"] == ["x"]
    assert (rows[0]["name"], rows[0]["doc"], rows[0]["tags"]) == (None, None, [])


@pytest.mark.parametrize(("bad", "message"), [
    (_row(7, id=None), "row 1: missing its key 'id'"),  # shaped like the first row: the short path
    (_row(7, name=3), "row 1: id=7: column 'name' expects a string, got int 3"),
    (_row(7, id=True), "column 'id' expects an integer, got bool True"),
    (_row(7, flag=1), "column 'flag' expects a bool"),
    (_row(7, at=dt.datetime(2026, 1, 1)), "column 'at' expects a timezone-aware datetime"),
    (_row(7, at="yesterday"), "column 'at' expects an ISO-8601 timestamp"),
    (_row(7, doc={"x": float("nan")}), "column 'doc' expects a JSON-serialisable value: Out of range float"),
    (_row(7, doc={"x": {1}}), "column 'doc' expects a JSON-serialisable value: Object of type set"),
    (_row(7, tags=["a", ""]), "column 'tags' expects a list of non-empty strings"),
    ({**_row(7), "extra": 1}, "row 1: unknown fields ['extra']"),
    ({k: v for k, v in _row(7).items() if k != "flag"}, "row 1: carries fields"),
])
def test_each_bad_value_is_named_by_row_and_column(bad: dict[str, Any], message: str) -> None:
    assert message in _error([_row(1), bad])


def test_a_row_shaped_differently_is_checked_whole_after_rows_shaped_like_the_first() -> None:
    reordered = dict(reversed(list(_row(3).items())))  # the same fields in another order: the same shape
    rows, _ = validate_rows("t", [_row(1), _row(2), reordered], FIELDS, "id")
    assert [r["id"] for r in rows] == [1, 2, 3]
    assert "row 2: missing its key 'id'" in _error([_row(1), _row(2), {"name": "x"}])
    assert "row 2: expects a mapping, got list" in _error([_row(1), _row(2), [1]])  # type: ignore[list-item]


def test_canonical_json_is_the_plain_encoders_text_and_errors() -> None:
    values: list[Any] = [{"b": 1, "a": [1, 2.5, None, True, "é\u2028\x00"]}, [], {}, 1, -0.0, 1e300, "x", None,
                         {"nested": {"z": {"y": [{}]}}}, {1: "int keys become text"}]
    for value in values:
        assert canonical_json(value) == PLAIN.encode(value)
    looped: dict[str, Any] = {}
    looped["self"] = looped
    for bad in ({"x": float("inf")}, {"x": object()}, looped):
        with pytest.raises((TypeError, ValueError)) as ours:
            canonical_json(bad)
        with pytest.raises((TypeError, ValueError)) as plain:
            PLAIN.encode(bad)
        assert (type(ours.value), str(ours.value)) == (type(plain.value), str(plain.value))


@pytest.mark.parametrize("text", ['{"a":[1,2.5,null,true],"b":"\\u00e9"}', ' {"a":1}', '{"a":1}\n', "[]", '"s"', "12",
                                  "NaN", "1e400", '"\\ud800"', "123456789012345678901234567890",
                                  '{"n":18446744073709551616,"m":-9223372036854775809}', "1.0", "-0", "5e-324",
                                  '\t[1.5e300, 0.1, 1E2] ', '"\\ud83d\\ude00 \\u007f"'])
def test_parse_json_is_json_loads(text: str) -> None:
    assert repr(parse_json(text)) == repr(json.loads(text))


def test_parse_json_reads_json_texts_of_every_kind_as_json_loads() -> None:
    """Texts json.dumps wrote of random values (floats of every exponent, integers past 64 bits,
    text of every plane): orjson's reading or json's, the same value (repr tells 1 from 1.0)."""
    from tests.test_json_text import RANDOM

    for value in RANDOM:
        text = json.dumps(value)
        assert repr(parse_json(text)) == repr(json.loads(text)), text


@pytest.mark.parametrize("text", ["", "nul", '{"a":1}x', '{"a":1} 2', "{'a':1}", "[1,]"])
def test_parse_json_refuses_what_json_loads_refuses_with_its_words(text: str) -> None:
    with pytest.raises(json.JSONDecodeError) as ours:
        parse_json(text)
    with pytest.raises(json.JSONDecodeError) as plain:
        json.loads(text)
    assert str(ours.value) == str(plain.value)
