"""Find-many query parameters: `limit`, `order_by`, cursors, `depth`, `fields`.

Kept apart from the record service so the paging rules (default 60, max 200, id tie-breaker,
base64-JSON cursors holding the order values) are in one readable place and can be checked
against the reference line by line.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

from truth_forge.sandbox.errors import bad_request, unknown_field
from truth_forge.sandbox.metadata import COMPOSITE_TYPES, ObjectDef

DEFAULT_LIMIT = 60
MAX_LIMIT = 200
DIRECTIONS = ("AscNullsFirst", "AscNullsLast", "DescNullsFirst", "DescNullsLast")
_ALLOWED = "', '".join(DIRECTIONS)


@dataclass(frozen=True)
class OrderItem:
    path: tuple[str, ...]
    direction: str

    @property
    def descending(self) -> bool:
        return self.direction.startswith("Desc")

    @property
    def nulls_first(self) -> bool:
        return self.direction.endswith("NullsFirst")


def parse_limit(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_LIMIT
    try:
        value = int(raw)
    except ValueError:
        raise bad_request(f"limit '{raw}' is invalid. Should be an integer") from None
    if value < 0:
        raise bad_request(f"limit '{raw}' is invalid. Should be an integer")
    return min(value, MAX_LIMIT)  # a larger limit is silently lowered


def parse_depth(raw: str | None) -> int:
    if raw is None:
        return 0
    if raw not in ("0", "1"):
        raise bad_request(f"'depth={raw}' parameter invalid. Allowed values are 0, 1")
    return int(raw)


def parse_order_by(raw: str | None, obj: ObjectDef) -> list[OrderItem]:
    items: list[OrderItem] = []
    if raw:
        for part in raw.split(","):
            if "[" in part and "]" in part:
                name, rest = part.split("[", 1)
                direction = rest.replace("]", "")
                if direction not in DIRECTIONS:
                    raise bad_request(
                        f"'order_by' direction '{direction}' invalid. Allowed values are "
                        f"'{_ALLOWED}'. eg: ?order_by=field_1[AscNullsFirst],"
                        "field_2[DescNullsLast],field_3")
            else:
                name, direction = part, "AscNullsFirst"
            path = tuple(name.strip().split("."))
            _check_order_path(path, obj)
            items.append(OrderItem(path, direction))
    if not any(item.path == ("id",) for item in items):
        items.append(OrderItem(("id",), "AscNullsFirst"))  # id is always the tie-breaker
    return items


def _check_order_path(path: tuple[str, ...], obj: ObjectDef) -> None:
    name = path[0]
    if name in obj.join_columns() and len(path) == 1:
        return
    f = obj.field(name)
    if f is None:
        raise unknown_field(obj.name_singular, ".".join(path))
    if f.type == "RELATION":
        raise bad_request(f"Cannot order by relation field '{name}'")
    if f.is_composite:
        if len(path) != 2 or path[1] not in COMPOSITE_TYPES[f.type]:
            raise bad_request(f"Cannot order by composite field '{name}' without a subfield. "
                              f"eg: ?order_by={name}.{next(iter(COMPOSITE_TYPES[f.type]))}")
    elif len(path) > 1:
        raise unknown_field(obj.name_singular, ".".join(path))


def parse_fields(raw: str | None, obj: ObjectDef) -> list[str] | None:
    if raw is None or raw == "":
        return None
    names = [n.strip() for n in raw.split(",") if n.strip()]
    joins = obj.join_columns()
    for name in names:
        if obj.field(name) is None and name not in joins:
            raise unknown_field(obj.name_singular, name)
    return names


FIELDS_CAPPED_HEADER = "X-Twenty-Fields-Capped"
_FIRST_FIELDS = ("id", "createdAt", "updatedAt", "deletedAt", "position")


def default_field_names(obj: ObjectDef, cap: int | None) -> list[str] | None:
    """The fields a read without `fields` returns when the object has more than `cap` readable
    fields (None when it has no more): id, the label and image identifiers, createdAt, updatedAt,
    deletedAt, position, then standard fields before custom ones, each group by name (the `fields`
    parameter's description in Twenty's OpenAPI, REST_API_DEFAULT_MAX_FIELDS = 200)."""
    readable = [f for f in obj.fields.values() if f.is_active]
    if cap is None or len(readable) <= cap:
        return None
    names = {f.name for f in readable}
    first = [n for n in ("id", obj.label_identifier_field, "avatarUrl", *_FIRST_FIELDS[1:]) if n in names]
    rest = sorted((f for f in readable if f.name not in first), key=lambda f: (f.is_custom, f.name))
    return list(dict.fromkeys([*first, *(f.name for f in rest)]))[:cap]


def cap_fields(record: dict[str, Any], obj: ObjectDef, kept: list[str]) -> dict[str, Any]:
    """The record with only the kept fields (a kept relation keeps its join column too)."""
    allowed = set(kept) | {f.join_column for f in obj.fields.values() if f.name in kept and f.join_column}
    return {k: v for k, v in record.items() if k in allowed}


# --------------------------------------------------------------------------------------------
# Sorting and cursors


def _value_at(record: dict[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = record
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return value


class _Desc:
    """A value that sorts in reverse, so a descending order item still gives a plain tuple key."""

    __slots__ = ("v",)

    def __init__(self, v: Any) -> None:
        self.v = v

    def __lt__(self, other: _Desc) -> bool:
        return bool(other.v < self.v)

    def __gt__(self, other: _Desc) -> bool:
        return bool(other.v > self.v)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Desc) and bool(self.v == other.v)

    def __hash__(self) -> int:
        return hash(self.v)


def sort_key(record: dict[str, Any], order: list[OrderItem]) -> tuple[Any, ...]:
    """A tuple that orders records (or a decoded cursor) as `order` does.

    Two slots per order item: a rank (nulls first 0, number 1, text 2, nulls last 3) and the
    value. Numbers compare as numbers, everything else as text. `id` is always in `order`, so
    keys of two records never tie, and a cursor's key bisects between records exactly.
    """
    key: list[Any] = []
    for item in order:
        value = _value_at(record, item.path)
        if value is None:
            key += (0 if item.nulls_first else 3, None)
            continue
        rank = 1 if isinstance(value, (int, float)) else 2
        if rank == 2:
            value = str(value)
        key += (rank, _Desc(value) if item.descending else value)
    return tuple(key)


def id_slot(order: list[OrderItem]) -> int:
    """Where the id sits in a `sort_key` tuple."""
    return 2 * next(i for i, item in enumerate(order) if item.path == ("id",)) + 1


def id_from_key(key: tuple[Any, ...], slot: int) -> str:
    value = key[slot]
    return str(value.v if isinstance(value, _Desc) else value)


def sort_records(records: list[dict[str, Any]], order: list[OrderItem]) -> list[dict[str, Any]]:
    return sorted(records, key=lambda r: sort_key(r, order))


def encode_cursor(record: dict[str, Any], order: list[OrderItem]) -> str:
    """base64 of a JSON object holding the order_by values plus the id."""
    payload: dict[str, Any] = {}
    for item in order:
        target = payload
        for key in item.path[:-1]:
            target = target.setdefault(key, {})
        target[item.path[-1]] = _value_at(record, item.path)
    return base64.b64encode(json.dumps(payload, separators=(",", ":")).encode()).decode()


def decode_cursor(cursor: str, order: list[OrderItem]) -> dict[str, Any]:
    try:
        payload = json.loads(base64.b64decode(cursor.encode(), validate=False).decode())
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise bad_request(f"Invalid cursor: {cursor}") from None
    if not isinstance(payload, dict) or "id" not in payload:
        raise bad_request(f"Invalid cursor: {cursor}")
    for item in order:
        holder: Any = payload
        for key in item.path[:-1]:
            holder = holder.get(key) if isinstance(holder, dict) else None
        if not isinstance(holder, dict) or item.path[-1] not in holder:
            raise bad_request(f"Invalid cursor: {cursor} does not match order_by")
    return payload
