"""Check and normalise rows before any of them reaches the engine.

Why it exists: a bad value found half-way through a MERGE would leave a batch partly applied on
BigQuery (no multi-statement transactions there). Validating the whole batch in Python first means
a bad row raises `WarehouseDataError` naming the row and column, and nothing is written.
JSON values are serialised canonically (sorted keys, compact) so that the same object always
stores the same text and so hashes the same.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from truth_forge.core.json_text import CompactJson
from truth_forge.warehouse.errors import WarehouseDataError
from truth_forge.warehouse.schema import BOOL, INT64, JSON, STRING, TIMESTAMP

STRING_LIST = "ARRAY<STRING>"
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


# json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False), built
# once (every saved merge base goes through it); orjson writes it where that is json's own text.
_CANONICAL = CompactJson(sort_keys=True, ensure_ascii=False, allow_nan=False)


def canonical_json(value: Any) -> str:
    """The one text form of a JSON value that the warehouse stores (or json.dumps' own error)."""
    return _CANONICAL.encode(value)


def _coerce(value: Any, type_: str) -> Any:
    """Return the value in the form the engines bind, or raise TypeError/ValueError saying why."""
    if value is None:
        return [] if type_ == STRING_LIST else None
    coerce = _COERCE.get(type_)
    if coerce is None:
        raise AssertionError(f"unknown column type {type_}")  # a bug in the field specs, not user data
    return coerce(value)


def _int64(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expects an integer, got {type(value).__name__} {value!r}")
    if not _INT64_MIN <= value <= _INT64_MAX:
        raise ValueError(f"integer {value} does not fit INT64")
    return value


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expects a string, got {type(value).__name__} {value!r}")
    return value


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"expects a bool, got {type(value).__name__} {value!r}")
    return value


def _timestamp(value: Any) -> dt.datetime:
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError as exc:
            raise ValueError(f"expects an ISO-8601 timestamp, got {value!r}") from exc
    if not isinstance(value, dt.datetime):
        raise TypeError(f"expects a datetime, got {type(value).__name__} {value!r}")
    if value.tzinfo is None or value.utcoffset() is None:
        # A naive datetime is ambiguous (local time or UTC?); refuse rather than guess.
        raise ValueError(f"expects a timezone-aware datetime, got naive {value.isoformat()}")
    return value.astimezone(dt.UTC)


def _json(value: Any) -> str:
    try:
        return canonical_json(value)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"expects a JSON-serialisable value: {exc}") from exc


def _string_list(value: Any) -> list[str]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise TypeError(f"expects a list of strings, got {type(value).__name__} {value!r}")
    for item in value:
        if not isinstance(item, str) or not item:
            raise TypeError(f"expects a list of non-empty strings, got item {item!r}")
    return list(value)


# Each column type's check, looked up once per value (a push validates a dozen values per record).
_COERCE: dict[str, Callable[[Any], Any]] = {
    INT64: _int64, STRING: _string, BOOL: _bool, TIMESTAMP: _timestamp, JSON: _json, STRING_LIST: _string_list,
}


def validate_rows(
    table: str,
    rows: Iterable[Mapping[str, Any]],
    fields: Mapping[str, str],
    key: str | tuple[str, ...],
    *,
    required_together: Sequence[tuple[str, ...]] = (),
) -> tuple[list[dict[str, Any]], tuple[str, ...]]:
    """Validate a batch; return (normalised rows de-duplicated on `key`, last wins; the field set).

    De-duplication matters: BigQuery's MERGE fails when two source rows match one target row.

    Every row must carry the key and the same set of fields: a field left out means "don't touch
    this column", which is only unambiguous when it holds for the whole batch.
    """
    keys = (key,) if isinstance(key, str) else key
    out: dict[Any, dict[str, Any]] = {}
    field_set: tuple[str, ...] | None = None
    first_keys: Any = None  # the first row's keys: a later row with the same ones has the same shape
    for index, row in enumerate(rows):
        if first_keys is not None and isinstance(row, Mapping) and row.keys() == first_keys:
            for k in keys:
                if row.get(k) is None:
                    raise WarehouseDataError(table, index, f"missing its key {k!r}")
        else:
            field_set = _checked_shape(table, index, row, fields, keys, field_set, required_together)
            first_keys = row.keys() if first_keys is None else first_keys
        clean: dict[str, Any] = {}
        for name, value in row.items():
            kind = fields[name]
            # The common cases, as _coerce would give them, without the call: no value, a plain
            # string, a timestamp already in UTC (astimezone(UTC) gives that same datetime back).
            if value is None:
                clean[name] = [] if kind == STRING_LIST else None
                continue
            if (kind == STRING and type(value) is str) or (
                    kind == TIMESTAMP and type(value) is dt.datetime and value.tzinfo is dt.UTC):
                clean[name] = value
                continue
            try:
                clean[name] = _coerce(value, kind)
            except (TypeError, ValueError) as exc:
                raise WarehouseDataError(
                    table, index, f"{_key_text(row, keys)}: column {name!r} {exc}"
                ) from exc
        ident = tuple([clean[k] for k in keys])  # a list first: a generator costs more for two or three keys
        out.pop(ident, None)  # re-insert so the last occurrence also keeps the last position
        out[ident] = clean
    return list(out.values()), field_set or ()


def _checked_shape(table: str, index: int, row: Any, fields: Mapping[str, str], keys: tuple[str, ...],
                   field_set: tuple[str, ...] | None, required_together: Sequence[tuple[str, ...]]) -> tuple[str, ...]:
    """A row's shape checked (a mapping, known fields, its key, the batch's field set); the field set."""
    if not isinstance(row, Mapping):
        raise WarehouseDataError(table, index, f"expects a mapping, got {type(row).__name__}")
    unknown = sorted(set(row) - set(fields))
    if unknown:
        raise WarehouseDataError(table, index, f"unknown fields {unknown}; known: {sorted(fields)}")
    missing = [k for k in keys if row.get(k) is None]
    if missing:
        raise WarehouseDataError(table, index, f"missing its key {missing[0]!r}")
    names = tuple(sorted(row))
    if field_set is None:
        for group in required_together:
            present = [f for f in group if f in row]
            if present and len(present) != len(group):
                raise WarehouseDataError(
                    table, index, f"fields {list(group)} must be given together (got only {present})"
                )
    elif names != field_set:
        raise WarehouseDataError(
            table,
            index,
            f"carries fields {list(names)} but the batch's first row carries {list(field_set)}; "
            "every row of one call must carry the same fields",
        )
    return names


def _key_text(row: Mapping[str, Any], keys: tuple[str, ...]) -> str:
    return ", ".join(f"{k}={row.get(k)!r}" for k in keys)
