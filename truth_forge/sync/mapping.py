"""Canonical warehouse rows <-> Twenty records, with per-field ownership.

The warehouse speaks snake_case and keeps computed context as JSON; Twenty speaks camelCase with
composite fields. Fields marked `sync="push"` in the CRM schema (computed context, external ids)
flow only to Twenty; the rest are human-editable and flow both ways. The hash of the CRM-side values
lets a pull recognise the echo of our own push.
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from truth_forge.core.crm_schema import CrmSchema, FieldSpec, to_option_value
from truth_forge.core.json_text import CompactJson
from truth_forge.twenty import shapes


def to_twenty_value(spec: FieldSpec, value: Any) -> Any:
    """A warehouse value -> the value Twenty stores in the field `spec` describes."""
    if value is None:
        return None
    if spec.type == "SELECT":
        return to_option_value(value)
    if spec.type == "MULTI_SELECT":
        return [to_option_value(v) for v in value]
    if spec.type == "TEXT":
        return shapes.text_value(value) if isinstance(value, (dict, list)) else str(value)
    if spec.type == "DATE_TIME" and isinstance(value, datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=UTC)
        return aware.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if spec.type == "DATE" and isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):  # warehouses return NUMERIC as Decimal, which JSON cannot carry
        return float(value)
    return value


def from_twenty_value(spec: FieldSpec, value: Any) -> Any:
    """A Twenty value -> the warehouse's: empty strings are Twenty's way of saying 'no value'."""
    if value == "" or value is None:
        return None
    return value


def _custom_fields(schema: CrmSchema, obj: str, row: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, column, spec, convert in _sent_fields(schema, obj):
        if column in row:
            value = row[column]
            out[name] = None if value is None else convert(value) if convert is not None else to_twenty_value(spec, value)
    return out


def _text_field(value: Any) -> Any:
    """`to_twenty_value` of a TEXT field's value other than None."""
    kind = type(value)
    if kind is str:
        return value  # what str() gives back
    if kind is dict or kind is list:
        return shapes.TEXT_JSON.encode(value)  # shapes.text_value, without its own look at the type
    return shapes.text_value(value) if isinstance(value, (dict, list)) else str(value)


# SELECT values repeat (a handful of categories): their option value remembered by the text.
_option_of_text = functools.lru_cache(maxsize=1024)(to_option_value)


def _select_field(value: Any) -> Any:
    """`to_twenty_value` of a SELECT field's value other than None."""
    return _option_of_text(value) if type(value) is str else to_option_value(value)


@functools.lru_cache(maxsize=16)
def _sent_fields(schema: CrmSchema, obj: str) -> tuple[tuple[str, str, FieldSpec, Callable[[Any], Any] | None], ...]:
    """(Twenty name, column, spec, its conversion when it has a shortcut) of each custom field, in
    the schema's order: every body is mapped through it, so it is worked out once a schema."""
    shortcut = {"TEXT": _text_field, "SELECT": _select_field}
    return tuple((spec.name, spec.column, spec, shortcut.get(spec.type))
                 for spec in schema.for_object(obj))  # type: ignore[arg-type]


@functools.lru_cache(maxsize=16)
def _two_way_fields(schema: CrmSchema, obj: str) -> tuple[tuple[str, str, FieldSpec], ...]:
    """(column, Twenty name, spec) of each custom field that a person may edit in Twenty."""
    return tuple((spec.column, spec.name, spec) for spec in schema.for_object(obj)  # type: ignore[arg-type]
                 if spec.sync == "both")


def _checked_emails(row: Mapping[str, Any], left_out: list[str] | None) -> dict[str, Any]:
    """The EMAILS composite, without addresses Twenty would refuse (which would fail the whole batch)."""
    emails = shapes.emails_value(row.get("primary_email"), row.get("additional_emails") or [])
    primary = emails["primaryEmail"]
    if primary is not None and not shapes.is_valid_email(primary):
        _leave_out(left_out, f"primary_email {primary!r} is not an address Twenty accepts")
        emails["primaryEmail"] = None
    for extra in [e for e in emails["additionalEmails"] if not shapes.is_valid_email(e)]:
        _leave_out(left_out, f"additional email {extra!r} is not an address Twenty accepts")
        emails["additionalEmails"].remove(extra)
    return emails


def _leave_out(left_out: list[str] | None, reason: str) -> None:
    if left_out is None:
        raise ValueError(reason)
    left_out.append(reason)


def check_storable(body: Mapping[str, Any]) -> None:
    """Refuse what Twenty cannot store, naming the field: text with a NUL character (its Postgres
    refuses it), and NaN or Infinity (JSON has no such number; the request's encoder would send null)."""
    for name, value in body.items():
        if value is None or (isinstance(value, str) and "\x00" not in value):
            continue  # most fields: one look, no walk
        why = _unstorable(value)
        if why is not None:
            raise ValueError(f"{name} {why}")


def _unstorable(value: Any) -> str | None:
    waiting = [value]
    while waiting:
        item = waiting.pop()
        kind = type(item)  # exact types first: an ABC check costs several times more
        if kind is dict or kind is list:
            for inner in (item.values() if kind is dict else item):
                if type(inner) is str:
                    if "\x00" in inner:
                        return _NUL
                elif inner is not None:  # nothing to look at in None: not worth a turn of the loop
                    waiting.append(inner)
        elif isinstance(item, str):
            if "\x00" in item:
                return _NUL
        elif isinstance(item, float):
            if not math.isfinite(item):
                return f"holds {item!r}, which is not a number JSON or Twenty can hold"
        elif isinstance(item, Mapping):
            waiting.extend(item.values())
        elif isinstance(item, list):
            waiting.extend(item)
    return None


_NUL = "contains a NUL character, which Twenty's database cannot store"


def contact_to_person(
    row: Mapping[str, Any], schema: CrmSchema, *, company_crm_id: str | None = None,
    default_region: str | None = None, left_out: list[str] | None = None,
) -> dict[str, Any]:
    """A row of the warehouse's CRM-facing contact view -> a whole Twenty person body.

    An email Twenty would refuse is left out and explained in `left_out` (a ValueError when no list
    is given), so the rest of the person still syncs.
    """
    body: dict[str, Any] = {
        "name": shapes.split_full_name(row.get("canonical_name")),
        "emails": _checked_emails(row, left_out),
        "phones": shapes.phones_value(row.get("primary_phone"), row.get("additional_phones") or [],
                                      default_region=default_region),
        **_custom_fields(schema, "person", row),
    }
    if company_crm_id is not None:
        # Only a known company is linked; an unknown one is left alone rather than unlinked.
        body["companyId"] = company_crm_id
    check_storable(body)
    return body


def business_to_company(row: Mapping[str, Any], schema: CrmSchema, *, left_out: list[str] | None = None
                        ) -> dict[str, Any]:
    """A row of the warehouse's CRM-facing business view -> a whole Twenty company body."""
    domain = shapes.link_value(row.get("website"))
    url = domain["primaryLinkUrl"]
    if url is not None and not shapes.is_valid_link(url):
        _leave_out(left_out, f"website {row.get('website')!r} is not a URL Twenty accepts")
        domain["primaryLinkUrl"] = None
    body = {
        "name": str(row.get("business_name") or ""),
        "domainName": domain,
        **_custom_fields(schema, "company", row),
    }
    check_storable(body)
    return body


def _editable_custom(schema: CrmSchema, obj: str, record: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for column, name, spec in _two_way_fields(schema, obj):
        if name in record:
            out[column] = from_twenty_value(spec, record[name])
    return out


def person_to_contact(record: Mapping[str, Any], schema: CrmSchema) -> dict[str, Any]:
    """A Twenty person -> the human-editable columns of a warehouse contact (computed ones stay ours)."""
    emails = record.get("emails") or {}
    phones = shapes.phones_to_list(record.get("phones"))
    return {
        "canonical_name": shapes.join_full_name(record.get("name")) or None,
        "primary_email": emails.get("primaryEmail") or None,
        "additional_emails": list(emails.get("additionalEmails") or []),
        "primary_phone": phones[0] if phones else None,
        "additional_phones": phones[1:],
        **_editable_custom(schema, "person", record),
    }


def company_to_business(record: Mapping[str, Any], schema: CrmSchema) -> dict[str, Any]:
    """A Twenty company -> the human-editable columns of a warehouse business."""
    domain = record.get("domainName") or {}
    return {
        "business_name": record.get("name") or None,
        "website": (domain.get("primaryLinkUrl") if isinstance(domain, Mapping) else domain) or None,
        **_editable_custom(schema, "company", record),
    }


def crm_hash(values: Mapping[str, Any]) -> str:
    """A stable hash of CRM-side values, to tell our own echoes from real edits."""
    return hashlib.sha256(_HASH_JSON.encode(values).encode()).hexdigest()


# json.dumps(values, sort_keys=True, separators=(",", ":"), default=str), without an encoder per call.
_HASH_JSON = CompactJson(sort_keys=True, ensure_ascii=True, default=str)
