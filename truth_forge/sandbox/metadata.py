"""The workspace's data model: objects, fields, composite shapes, and their DTOs.

Every other part of the sandbox (value checks, filters, ordering, the metadata API) asks this
module what an object looks like, so a custom field created through the API is visible to all of
them at once, as on a real Twenty server.
"""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

# Composite field shapes (twenty-shared `compositeTypeDefinitions`): subfield -> subfield type.
COMPOSITE_TYPES: dict[str, dict[str, str]] = {
    "FULL_NAME": {"firstName": "TEXT", "lastName": "TEXT"},
    "EMAILS": {"primaryEmail": "TEXT", "additionalEmails": "RAW_JSON"},
    "PHONES": {
        "primaryPhoneNumber": "TEXT",
        "primaryPhoneCountryCode": "TEXT",
        "primaryPhoneCallingCode": "TEXT",
        "additionalPhones": "RAW_JSON",
    },
    "LINKS": {"primaryLinkUrl": "TEXT", "primaryLinkLabel": "TEXT", "secondaryLinks": "RAW_JSON"},
    "CURRENCY": {"amountMicros": "NUMERIC", "currencyCode": "TEXT"},
    "ADDRESS": {
        "addressStreet1": "TEXT",
        "addressStreet2": "TEXT",
        "addressCity": "TEXT",
        "addressState": "TEXT",
        "addressPostcode": "TEXT",
        "addressCountry": "TEXT",
        "addressLat": "NUMERIC",
        "addressLng": "NUMERIC",
    },
    "ACTOR": {"source": "TEXT", "workspaceMemberId": "UUID", "name": "TEXT", "context": "RAW_JSON"},
    "RICH_TEXT": {"blocknote": "TEXT", "markdown": "TEXT"},
}

# The subfields that carry a composite field's unique constraint (get-conflicting-fields.util).
UNIQUE_SUBFIELDS: dict[str, tuple[str, ...]] = {
    "EMAILS": ("primaryEmail",),
    "LINKS": ("primaryLinkUrl",),
    "PHONES": ("primaryPhoneNumber", "primaryPhoneCountryCode", "primaryPhoneCallingCode"),
}

FIELD_TYPES = frozenset(
    {
        "ACTOR", "ADDRESS", "ARRAY", "BOOLEAN", "CURRENCY", "DATE", "DATE_TIME", "EMAILS", "FILES",
        "FULL_NAME", "LINKS", "MORPH_RELATION", "MULTI_SELECT", "NUMBER", "NUMERIC", "PHONES",
        "POSITION", "RATING", "RAW_JSON", "RELATION", "RICH_TEXT", "SELECT", "TEXT", "TS_VECTOR",
        "UUID",
    }
)

ACTOR_SOURCES = frozenset(
    {"EMAIL", "CALENDAR", "WORKFLOW", "AGENT", "API", "IMPORT", "MANUAL", "SYSTEM", "WEBHOOK",
     "APPLICATION"}
)

# Server-maintained fields present on every object.
SYSTEM_FIELD_NAMES = ("id", "createdAt", "updatedAt", "deletedAt", "createdBy", "updatedBy", "position")

_ID_NAMESPACE = uuid.UUID("6f1d3c2e-9b8a-4f3e-8d2c-1a0b9c8d7e6f")


def stable_id(*parts: str) -> str:
    """Deterministic ids for standard metadata, so they survive a restart with the same workspace."""
    return str(uuid.uuid5(_ID_NAMESPACE, ":".join(parts)))


@dataclass
class FieldDef:
    id: str
    object_id: str
    name: str
    type: str
    label: str
    created_at: str
    updated_at: str
    description: str | None = None
    icon: str | None = None
    is_custom: bool = False
    is_active: bool = True
    is_system: bool = False
    is_nullable: bool = True
    is_unique: bool = False
    default_value: Any = None
    options: list[dict[str, Any]] | None = None
    settings: dict[str, Any] | None = None
    is_label_synced_with_name: bool = False
    # Relations only: {"kind": "MANY_TO_ONE"|"ONE_TO_MANY", "target": <nameSingular>,
    # "joinColumn": "companyId" (many-to-one), "inverse": <field name on the target>}
    relation: dict[str, Any] | None = None

    @property
    def is_composite(self) -> bool:
        return self.type in COMPOSITE_TYPES

    @property
    def join_column(self) -> str | None:
        if self.relation and self.relation["kind"] == "MANY_TO_ONE":
            return str(self.relation["joinColumn"])
        return None

    @property
    def option_values(self) -> list[str]:
        return [str(o["value"]) for o in (self.options or [])]

    def to_state(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> FieldDef:
        return cls(**state)


@dataclass
class ObjectDef:
    id: str
    name_singular: str
    name_plural: str
    label_singular: str
    label_plural: str
    created_at: str
    updated_at: str
    description: str | None = None
    icon: str | None = None
    is_custom: bool = False
    label_identifier_field: str = "name"
    fields: dict[str, FieldDef] = field(default_factory=dict)

    def field(self, name: str) -> FieldDef | None:
        return self.fields.get(name)

    def join_columns(self) -> dict[str, FieldDef]:
        """Join column name -> the many-to-one relation field it belongs to."""
        return {f.join_column: f for f in self.fields.values() if f.join_column}

    def unique_fields(self) -> list[FieldDef]:
        return [f for f in self.fields.values() if f.is_unique and f.name != "id"]

    def field_by_id(self, field_id: str) -> FieldDef | None:
        for f in self.fields.values():
            if f.id == field_id:
                return f
        return None


def composite_default(type_: str, quoted: Any) -> Any:
    """Turn a metadata default (SQL-ish quoted strings, e.g. "'NEW'") into a record value."""
    if quoted is None:
        return None
    if isinstance(quoted, dict):
        return {k: composite_default("TEXT", v) for k, v in quoted.items()}
    if isinstance(quoted, list):
        return [unquote(v) for v in quoted]
    if isinstance(quoted, str):
        return unquote(quoted)
    return quoted


def unquote(value: Any) -> Any:
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == "'":
        return value[1:-1]
    return value


# --------------------------------------------------------------------------------------------
# Standard objects (reference §3.4, the set confirmed up to March 2026).

_TEXT_EMPTY = "''"


def _standard_defaults(type_: str) -> Any:
    if type_ == "TEXT":
        return _TEXT_EMPTY
    if type_ in COMPOSITE_TYPES:
        out: dict[str, Any] = {}
        for sub, sub_type in COMPOSITE_TYPES[type_].items():
            out[sub] = _TEXT_EMPTY if sub_type == "TEXT" else None
        if type_ == "ACTOR":
            out.update({"source": "'MANUAL'", "name": "'System'", "context": None})
        return out
    return None


def build_standard_objects(workspace_id: str, now: str) -> list[ObjectDef]:
    """person and company with their standard and system fields, ids derived from the workspace."""

    def obj(singular: str, plural: str, label_s: str, label_p: str, icon: str) -> ObjectDef:
        return ObjectDef(
            id=stable_id(workspace_id, "object", singular),
            name_singular=singular, name_plural=plural, label_singular=label_s,
            label_plural=label_p, created_at=now, updated_at=now, icon=icon,
            description=f"A {singular}",
        )

    person = obj("person", "people", "Person", "People", "IconUser")
    company = obj("company", "companies", "Company", "Companies", "IconBuildingSkyscraper")

    def add(o: ObjectDef, name: str, type_: str, label: str, **kw: Any) -> FieldDef:
        kw.setdefault("default_value", _standard_defaults(type_))
        f = FieldDef(
            id=stable_id(workspace_id, "field", o.name_singular, name), object_id=o.id,
            name=name, type=type_, label=label, created_at=now, updated_at=now, **kw,
        )
        o.fields[name] = f
        return f

    for o in (person, company):
        add(o, "id", "UUID", "Id", is_system=True, is_nullable=False, is_unique=True,
            default_value="uuid", icon="Icon123")
    add(person, "name", "FULL_NAME", "Name", icon="IconUser")
    add(person, "emails", "EMAILS", "Emails", icon="IconMail", is_unique=True,
        settings={"maxNumberOfValues": 1})
    add(person, "linkedinLink", "LINKS", "Linkedin", icon="IconBrandLinkedin")
    add(person, "xLink", "LINKS", "X", icon="IconBrandX")
    add(person, "jobTitle", "TEXT", "Job Title", icon="IconBriefcase", is_nullable=False)
    add(person, "phones", "PHONES", "Phones", icon="IconPhone", settings={"maxNumberOfValues": 1})
    add(person, "city", "TEXT", "City", icon="IconMap", is_nullable=False)
    add(person, "avatarUrl", "TEXT", "Avatar", icon="IconFileUpload", is_system=True,
        is_nullable=False)

    add(company, "name", "TEXT", "Name", icon="IconBuildingSkyscraper", is_nullable=False)
    add(company, "domainName", "LINKS", "Domain Name", icon="IconLink", is_unique=True,
        settings={"maxNumberOfValues": 1})
    add(company, "employees", "NUMBER", "Employees", icon="IconUsers")
    add(company, "linkedinLink", "LINKS", "Linkedin", icon="IconBrandLinkedin")
    add(company, "xLink", "LINKS", "X", icon="IconBrandX")
    add(company, "annualRecurringRevenue", "CURRENCY", "ARR", icon="IconMoneybag")
    add(company, "address", "ADDRESS", "Address", icon="IconMap")
    add(company, "idealCustomerProfile", "BOOLEAN", "ICP", icon="IconTarget",
        is_nullable=False, default_value=False)

    for o in (person, company):
        add_system_fields(o, workspace_id, now, skip_id=True)

    add(person, "company", "RELATION", "Company", icon="IconBuildingSkyscraper",
        relation={"kind": "MANY_TO_ONE", "target": "company", "joinColumn": "companyId",
                  "inverse": "people"},
        settings={"relationType": "MANY_TO_ONE", "onDelete": "SET_NULL",
                  "joinColumnName": "companyId"})
    add(company, "people", "RELATION", "People", icon="IconUsers",
        relation={"kind": "ONE_TO_MANY", "target": "person", "inverse": "company"},
        settings={"relationType": "ONE_TO_MANY"})
    # workspaceMember is not modelled by the sandbox: the join column is kept as a plain UUID.
    add(company, "accountOwner", "RELATION", "Account Owner", icon="IconUserCircle",
        relation={"kind": "MANY_TO_ONE", "target": "workspaceMember",
                  "joinColumn": "accountOwnerId", "inverse": "accountOwnerForCompanies"},
        settings={"relationType": "MANY_TO_ONE", "onDelete": "SET_NULL",
                  "joinColumnName": "accountOwnerId"})
    return [person, company]


def add_system_fields(o: ObjectDef, workspace_id: str, now: str, *, skip_id: bool = False) -> None:
    """The fields every object carries (reference §3.3); searchVector is internal and omitted."""
    specs: list[tuple[str, str, str, dict[str, Any]]] = [
        ("id", "UUID", "Id", {"is_nullable": False, "is_unique": True, "default_value": "uuid"}),
        ("position", "POSITION", "Position", {"is_nullable": False, "default_value": 0}),
        ("createdBy", "ACTOR", "Created by", {"default_value": _standard_defaults("ACTOR")}),
        ("updatedBy", "ACTOR", "Updated by", {"default_value": _standard_defaults("ACTOR")}),
        ("createdAt", "DATE_TIME", "Creation date", {"is_nullable": False, "default_value": "now"}),
        ("updatedAt", "DATE_TIME", "Last update", {"is_nullable": False, "default_value": "now"}),
        ("deletedAt", "DATE_TIME", "Deleted", {}),
    ]
    for name, type_, label, kw in specs:
        if skip_id and name == "id":
            continue
        o.fields[name] = FieldDef(
            id=stable_id(workspace_id, "field", o.name_singular, name), object_id=o.id,
            name=name, type=type_, label=label, created_at=now, updated_at=now,
            is_system=True, **kw,
        )


# --------------------------------------------------------------------------------------------
# DTOs (object-metadata.dto.ts / field-metadata.dto.ts keys)


def field_dto(f: FieldDef, objects_by_name: dict[str, ObjectDef]) -> dict[str, Any]:
    dto: dict[str, Any] = {
        "id": f.id,
        "type": f.type,
        "name": f.name,
        "label": f.label,
        "description": f.description,
        "icon": f.icon,
        "isCustom": f.is_custom,
        "isActive": f.is_active,
        "isSystem": f.is_system,
        "isUIReadOnly": False,
        "isNullable": f.is_nullable,
        "isUnique": f.is_unique,
        "defaultValue": f.default_value,
        "options": f.options,
        "settings": f.settings,
        "objectMetadataId": f.object_id,
        "isLabelSyncedWithName": f.is_label_synced_with_name,
        "applicationId": None,
        "createdAt": f.created_at,
        "updatedAt": f.updated_at,
        "relation": None,
    }
    if f.relation:
        source = next((o for o in objects_by_name.values() if o.id == f.object_id), None)
        target = objects_by_name.get(f.relation["target"])
        inverse = target.field(f.relation["inverse"]) if target else None
        dto["relation"] = {
            "type": f.relation["kind"],
            "sourceObjectMetadata": _object_ref(source),
            "targetObjectMetadata": _object_ref(target) if target else
            {"id": None, "nameSingular": f.relation["target"], "namePlural": None},
            "sourceFieldMetadata": {"id": f.id, "name": f.name},
            "targetFieldMetadata": {"id": inverse.id if inverse else None,
                                    "name": f.relation["inverse"]},
        }
    return dto


def _object_ref(o: ObjectDef | None) -> dict[str, Any]:
    if o is None:
        return {"id": None, "nameSingular": None, "namePlural": None}
    return {"id": o.id, "nameSingular": o.name_singular, "namePlural": o.name_plural}


def object_dto(o: ObjectDef, objects_by_name: dict[str, ObjectDef]) -> dict[str, Any]:
    label_field = o.field(o.label_identifier_field)
    return {
        "id": o.id,
        "nameSingular": o.name_singular,
        "namePlural": o.name_plural,
        "labelSingular": o.label_singular,
        "labelPlural": o.label_plural,
        "description": o.description,
        "icon": o.icon,
        "shortcut": None,
        "isCustom": o.is_custom,
        "isRemote": False,
        "isActive": True,
        "isSystem": False,
        "isUIReadOnly": False,
        "isSearchable": True,
        "applicationId": None,
        "createdAt": o.created_at,
        "updatedAt": o.updated_at,
        "labelIdentifierFieldMetadataId": label_field.id if label_field else None,
        "imageIdentifierFieldMetadataId": None,
        "isLabelSyncedWithName": False,
        "duplicateCriteria": None,
        "fields": [field_dto(f, objects_by_name) for f in o.fields.values()],
    }
