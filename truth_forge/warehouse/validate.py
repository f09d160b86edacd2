"""Check and normalise rows before any of them reaches the engine.

Why it exists: a bad value found half-way through a MERGE would leave a batch partly applied on
BigQuery (no multi-statement transactions there). Validating the whole batch in Python first means
a bad row raises `WarehouseDataError` naming the row and column, and nothing is written.
JSON values are serialised canonically (sorted keys, compact) so that the same object always
stores the same text and so hashes the same.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from truth_forge.warehouse.errors import WarehouseDataError
from truth_forge.warehouse.schema import BOOL, INT64, JSON, STRING, TIMESTAMP

STRING_LIST = "ARRAY<STRING>"
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


# json.dumps with these options, built once (every saved merge base goes through it).
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def canonical_json(value: Any) -> str:
    """The one text form of a JSON value that the warehouse stores."""
    return _CANONICAL.encode(value)


def _coerce(value: Any, type_: str) -> Any:
    """Return the value in the form the engines bind, or raise TypeError/ValueError saying why."""
    if value is None:
        return [] if type_ == STRING_LIST else None
    if type_ == INT64:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"expects an integer, got {type(value).__name__} {value!r}")
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise ValueError(f"integer {value} does not fit INT64")
        return value
    if type_ == STRING:
        if not isinstance(value, str):
            raise TypeError(f"expects a string, got {type(value).__name__} {value!r}")
        return value
    if type_ == BOOL:
        if not isinstance(value, bool):
            raise TypeError(f"expects a bool, got {type(value).__name__} {value!r}")
        return value
    if type_ == TIMESTAMP:
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
    if type_ == JSON:
        try:
            return canonical_json(value)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"expects a JSON-serialisable value: {exc}") from exc
    if type_ == STRING_LIST:
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
            raise TypeError(f"expects a list of strings, got {type(value).__name__} {value!r}")
        for item in value:
            if not isinstance(item, str) or not item:
                raise TypeError(f"expects a list of non-empty strings, got item {item!r}")
        return list(value)
    raise AssertionError(f"unknown column type {type_}")  # a bug in the field specs, not user data


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
    known = set(fields)
    for index, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise WarehouseDataError(table, index, f"expects a mapping, got {type(row).__name__}")
        unknown = sorted(set(row) - known)
        if unknown:
            raise WarehouseDataError(table, index, f"unknown fields {unknown}; known: {sorted(fields)}")
        missing = [k for k in keys if row.get(k) is None]
        if missing:
            raise WarehouseDataError(table, index, f"missing its key {missing[0]!r}")
        names = tuple(sorted(row))
        if field_set is None:
            field_set = names
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
        clean: dict[str, Any] = {}
        for name, value in row.items():
            try:
                clean[name] = _coerce(value, fields[name])
            except (TypeError, ValueError) as exc:
                raise WarehouseDataError(
                    table, index, f"{_key_text(row, keys)}: column {name!r} {exc}"
                ) from exc
        ident = tuple(clean[k] for k in keys)
        out.pop(ident, None)  # re-insert so the last occurrence also keeps the last position
        out[ident] = clean
    return list(out.values()), field_set or ()


def _key_text(row: Mapping[str, Any], keys: tuple[str, ...]) -> str:
    return ", ".join(f"{k}={row.get(k)!r}" for k in keys)
