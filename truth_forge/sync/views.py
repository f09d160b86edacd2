"""Both sides of a record in one comparable form: the field values the merge compares.

A view maps warehouse column names to values as Twenty stores them. Two-way fields are read back
through the same mapping Twenty's answers go through (`editable_from_crm`), so a warehouse value
and the value Twenty made of it compare equal (emails lower-cased, phones re-parsed, names split
and joined). Push-only fields are kept in the form they are sent in; they are compared only with
what was last sent. A person's company link is the `business_id` (Twenty names it by company id).
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Collection, Iterable, Mapping
from json.encoder import encode_basestring
from typing import Any

from truth_forge.core.crm_schema import CrmSchema
from truth_forge.core.json_text import CompactJson
from truth_forge.sync import mapping
from truth_forge.sync.objects import PERSON, SyncedObject

COMPANY_LINK = "business_id"  # a person's company, as the merge sees it
# Push-only fields (LLM context, statistics: kilobytes of JSON) are only ever compared with what was
# last sent, so a view holds a digest of them, not the value: the merge base in crm_sync_state stays
# small, and on BigQuery every read or fold of the state bills its size. `#` and 64 bits of SHA-256
# in hex are plenty: a digest is only compared with the same field's previous digest, never looked up.
DIGEST = "#"
DIGEST_HEX = 16
# The form truth-forge kept before (the whole hex digest): its first 16 digits are the digest now.
_LONG_DIGEST = "digest:sha256:"

# Warehouse columns of the standard fields -> the Twenty body key that carries them (composites whole).
_STANDARD_KEYS = {
    "person": {"canonical_name": "name", "primary_email": "emails", "additional_emails": "emails",
               "primary_phone": "phones", "additional_phones": "phones", COMPANY_LINK: "companyId"},
    "company": {"business_name": "name", "website": "domainName"},
}


def push_only_columns(obj: SyncedObject, schema: CrmSchema) -> list[str]:
    return [s.column for s in schema.for_object(obj.object_type) if s.sync == "push"]


def body_keys(obj: SyncedObject, schema: CrmSchema, columns: Iterable[str]) -> set[str]:
    """The Twenty body keys that carry these columns."""
    names = {s.column: s.name for s in schema.for_object(obj.object_type)}
    standard = _STANDARD_KEYS[obj.object_type]
    return {standard.get(c) or names[c] for c in columns if c in standard or c in names}


def twenty_view(obj: SyncedObject, schema: CrmSchema, record: Mapping[str, Any],
                company_keys: Mapping[str, int], editable: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A Twenty record's two-way fields (and company link, when the company is known to us).
    `editable`: `obj.editable_from_crm(record, schema)` when the caller has it already."""
    view = obj.editable_from_crm(record, schema) if editable is None else dict(editable)
    if obj is PERSON and "companyId" in record:
        company = record["companyId"]
        if company is None:
            view[COMPANY_LINK] = None
        elif company in company_keys:
            view[COMPANY_LINK] = company_keys[company]
    return view


def agrees(obj: SyncedObject, record: Mapping[str, Any], editable: Mapping[str, Any], base: Mapping[str, Any],
           company_keys: Mapping[str, int], push_only: Collection[str]) -> bool:
    """Whether a Twenty record's view (`twenty_view`, of `editable`) holds what the merge base's two-way
    fields (`two_way`) hold, on every field both have: the same answer, without building either."""
    link: Any = _NO_LINK  # the company link twenty_view sets, if it sets one
    if obj is PERSON and "companyId" in record:
        company = record["companyId"]
        if company is None:
            link = None
        elif company in company_keys:
            link = company_keys[company]
    for name, value in editable.items():
        if name == COMPANY_LINK and link is not _NO_LINK:
            continue  # the view holds the link instead
        if name in base and name not in push_only and not value == base[name]:
            return False
    return (link is _NO_LINK or COMPANY_LINK not in base or COMPANY_LINK in push_only
            or bool(link == base[COMPANY_LINK]))


_NO_LINK = object()


def warehouse_view(obj: SyncedObject, schema: CrmSchema, row: Mapping[str, Any]) -> dict[str, Any]:
    """A warehouse row's two-way fields as Twenty would store them, and its push-only fields as sent."""
    try:
        body = (mapping.contact_to_person(row, schema, left_out=[]) if obj is PERSON
                else mapping.business_to_company(row, schema, left_out=[]))
    except ValueError:
        # Not sendable as it is (an unreadable phone...): compare the raw values; the push reports why.
        view = {c: row.get(c) for c in _two_way_columns(obj, schema)}
        if obj is PERSON:
            view[COMPANY_LINK] = row.get(COMPANY_LINK)
        return view
    return body_view(obj, schema, row, body)


def body_view(obj: SyncedObject, schema: CrmSchema, row: Mapping[str, Any], body: Mapping[str, Any]
              ) -> dict[str, Any]:
    """`warehouse_view` of a row whose body the push has already mapped (with no default region):
    the same view, without mapping the row a second time. Keys the push adds to a body (its Twenty
    id, its company link) are not among the fields a view reads."""
    view = obj.editable_from_crm(body, schema)
    for column, name in _push_only_fields(schema, obj.object_type):
        view[column] = digest(body.get(name))
    if obj is PERSON:
        view[COMPANY_LINK] = row.get(COMPANY_LINK)
    return view


@functools.lru_cache(maxsize=16)
def _push_only_fields(schema: CrmSchema, object_type: str) -> tuple[tuple[str, str], ...]:
    """(column, Twenty name) of each push-only field: asked for by every view of a body."""
    return tuple((s.column, s.name) for s in schema.for_object(object_type) if s.sync == "push")  # type: ignore[arg-type]


# json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).
_DIGEST_JSON = CompactJson(sort_keys=True, ensure_ascii=False, default=str)
_sha256 = hashlib.sha256


def digest(value: Any) -> str:
    """A push-only value as views hold it: the digest of its canonical JSON."""
    # A string's JSON is its quoted text (most push-only values: JSON columns sent as text, ids).
    text = encode_basestring(value) if type(value) is str else _DIGEST_JSON.encode(value)
    return DIGEST + _sha256(text.encode()).hexdigest()[:DIGEST_HEX]


def comparable_base(obj: SyncedObject, schema: CrmSchema, base: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A merge base as views compare it: push-only values that an older truth-forge kept whole, or
    as a longer digest, are brought to today's digest, so an upgrade does not take every computed
    field for changed (and re-send it)."""
    if base is None:
        return None
    out = dict(base)
    for column in push_only_columns(obj, schema):
        if column in out:
            out[column] = _as_digest(out[column])
    return out


def _as_digest(value: Any) -> str:
    if isinstance(value, str):
        if value.startswith(DIGEST) and len(value) == len(DIGEST) + DIGEST_HEX:
            return value
        if value.startswith(_LONG_DIGEST) and len(value) == len(_LONG_DIGEST) + 64:
            return DIGEST + value[len(_LONG_DIGEST):][:DIGEST_HEX]
    return digest(value)


def _two_way_columns(obj: SyncedObject, schema: CrmSchema) -> list[str]:
    standard = [c for c in _STANDARD_KEYS[obj.object_type] if c != COMPANY_LINK]
    return standard + [s.column for s in schema.for_object(obj.object_type) if s.sync == "both"]


def two_way(obj: SyncedObject, schema: CrmSchema, view: Mapping[str, Any],
            push_only: Collection[str] | None = None) -> dict[str, Any]:
    """The part of a view the merge decides between both sides (push-only fields removed).
    `push_only`: `push_only_columns(obj, schema)` as a set, when the caller keeps it."""
    skip = set(push_only_columns(obj, schema)) if push_only is None else push_only
    return {k: v for k, v in view.items() if k not in skip}
