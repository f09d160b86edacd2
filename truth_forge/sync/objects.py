"""The two kinds of record the sync moves, and what differs between them (names, keys, mapping)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from truth_forge.core.crm_schema import CrmSchema
from truth_forge.sync import mapping
from truth_forge.warehouse.base import ObjectType


@dataclass(frozen=True)
class SyncedObject:
    object_type: ObjectType  # as the warehouse's sync state names it
    plural: str  # Twenty's REST path segment
    key_column: str  # warehouse key: contact_id / business_id
    key_field: str  # Twenty's unique external-id field: contactId / businessId
    editable_from_crm: Callable[[Mapping[str, Any], CrmSchema], dict[str, Any]]
    link_fields: tuple[str, ...] = ()  # relations a person can change in Twenty (by Twenty id)

    def crm_hash(self, record: Mapping[str, Any], schema: CrmSchema,
                 editable: Mapping[str, Any] | None = None) -> str:
        """Hash of the values a person can edit in Twenty: equal hashes mean nothing new to pull.
        `editable`: `editable_from_crm(record, schema)` when the caller has it already."""
        links = {name: record.get(name) for name in self.link_fields}
        if editable is None:
            editable = self.editable_from_crm(record, schema)
        return mapping.crm_hash({**editable, **links})


PERSON = SyncedObject("person", "people", "contact_id", "contactId", mapping.person_to_contact, ("companyId",))
COMPANY = SyncedObject("company", "companies", "business_id", "businessId", mapping.company_to_business)
# Companies go first: a person links to its company by the company's Twenty id.
SYNC_ORDER = (COMPANY, PERSON)
OBJECT_TYPES = tuple(obj.object_type for obj in SYNC_ORDER)
BY_TYPE: dict[str, SyncedObject] = {obj.object_type: obj for obj in SYNC_ORDER}


def selected(object_types: Iterable[str] | None) -> tuple[SyncedObject, ...]:
    """The objects a run syncs, in SYNC_ORDER (None: all of them)."""
    if object_types is None:
        return SYNC_ORDER
    wanted = set(object_types)
    unknown = sorted(wanted - set(OBJECT_TYPES))
    if unknown:
        raise ValueError(f"unknown object {', '.join(unknown)}: choose from {', '.join(OBJECT_TYPES)}")
    return tuple(obj for obj in SYNC_ORDER if obj.object_type in wanted)


def parse_timestamp(value: Any) -> dt.datetime | None:
    """Twenty's ISO-8601 timestamps ("...Z") -> aware datetimes."""
    if value in (None, ""):
        return None
    if isinstance(value, dt.datetime):
        return value
    parsed = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def format_timestamp(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def now_utc() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def write_by_field_set(write: Callable[[list[dict[str, Any]]], Any], rows: list[dict[str, Any]]) -> None:
    """Call a warehouse upsert once per set of fields the rows carry.

    The warehouse wants every row of a call to carry the same fields (a field left out means "leave
    it as it is"), and the sync's rows differ: a failed push must not touch the hashes, a pulled
    person may or may not bring a company link.
    """
    groups: dict[frozenset[str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(frozenset(row), []).append(row)
    for group in groups.values():
        write(group)
