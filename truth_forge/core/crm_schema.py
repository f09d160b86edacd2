"""The custom fields truth-forge owns in Twenty, declared once, and how to set them up and check them.

This is the one place where a warehouse column (snake_case, `contact_id`) meets its Twenty field
(camelCase, `contactId`). Setup only ever adds: it creates missing fields and missing SELECT options,
and never deletes, renames or retypes a field a user already has; anything it will not touch is
reported as a mismatch instead.
"""

from __future__ import annotations

import json
import logging
import re
import tomllib
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from truth_forge.twenty.client import TwentyClient
from truth_forge.twenty.errors import TwentyConfigError, TwentyRecordRejected

log = logging.getLogger(__name__)

ObjectName = Literal["person", "company"]
FieldType = Literal["TEXT", "SELECT", "MULTI_SELECT", "NUMBER", "BOOLEAN", "DATE_TIME", "DATE", "RAW_JSON"]
SyncDirection = Literal["both", "push"]

# Twenty's own rules for field names and option values (metadata validators).
FIELD_NAME_RE = re.compile(r"^[a-z][a-zA-Z0-9]{0,62}$")
OPTION_VALUE_RE = re.compile(r"^[A-Z][A-Z0-9]*(_[A-Z0-9]+)*$")
RESERVED_FIELD_NAMES = frozenset(
    """approvedAccessDomain approvedAccessDomains appToken appTokens billingCustomer billingCustomers
    billingEntitlement billingEntitlements billingMeter billingMeters billingProduct billingProducts
    billingSubscription billingSubscriptions billingSubscriptionItem billingSubscriptionItems featureFlag
    featureFlags job jobs keyValuePair keyValuePairs pageLayout pageLayouts pageLayoutTab pageLayoutTabs
    pageLayoutWidget pageLayoutWidgets twoFactorMethod twoFactorMethods user users userWorkspace
    userWorkspaces workspace workspaces role roles userWorkspaceRole userWorkspaceRoles plan plans event
    events field fields link links currency currencies fullNames address addresses type types object
    objects index relation relations aggregate connect create disconnect search searches""".split()
)
OPTION_COLORS = ("blue", "green", "orange", "purple", "red", "turquoise", "yellow", "pink", "sky", "gray")


def lodash_camel_case(name: str) -> str:
    """What lodash's camelCase makes of `name`; Twenty accepts a field name only if it is unchanged by it."""
    words = re.findall(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+", name)
    if not words:
        return ""
    return words[0].lower() + "".join(w[:1].upper() + w[1:].lower() for w in words[1:])


def to_option_value(value: Any) -> str | None:
    """A warehouse value -> a SELECT option value: `family friend` -> `FAMILY_FRIEND`, `b` -> `B`."""
    if value is None or str(value).strip() == "":
        return None
    return re.sub(r"[^A-Z0-9]+", "_", str(value).strip().upper()).strip("_")


class SelectOption(BaseModel):
    value: str
    label: str

    @field_validator("value")
    @classmethod
    def _twenty_value(cls, value: str) -> str:
        if not OPTION_VALUE_RE.fullmatch(value) or len(value) > 63:
            raise ValueError(f"option value {value!r} must be UPPER_SNAKE_CASE starting with a letter, <= 63 chars")
        return value

    @field_validator("label")
    @classmethod
    def _twenty_label(cls, label: str) -> str:
        if not label.strip() or "," in label or len(label) > 63:
            raise ValueError(f"option label {label!r} must be 1-63 characters with no comma")
        return label


class FieldSpec(BaseModel):
    """One custom field: its Twenty definition and the warehouse column it carries."""

    object: ObjectName
    name: str  # Twenty's field name (camelCase)
    column: str  # the warehouse / Python name (snake_case)
    type: FieldType
    label: str
    description: str = ""
    options: list[SelectOption] = Field(default_factory=list)
    is_unique: bool = False
    sync: SyncDirection = "both"  # computed fields are pushed only; people may edit the rest in Twenty

    @field_validator("name")
    @classmethod
    def _twenty_name(cls, name: str) -> str:
        if not FIELD_NAME_RE.fullmatch(name):
            raise ValueError(f"field name {name!r} must be camelCase: a lower-case letter, then letters/digits")
        if lodash_camel_case(name) != name:
            raise ValueError(f"field name {name!r} must be written {lodash_camel_case(name)!r} (Twenty's camelCase rule)")
        if name in RESERVED_FIELD_NAMES:
            raise ValueError(f"field name {name!r} is reserved by Twenty")
        return name

    @model_validator(mode="after")
    def _options_match_type(self) -> FieldSpec:
        if self.type in ("SELECT", "MULTI_SELECT") and not self.options:
            raise ValueError(f"{self.object}.{self.name}: a {self.type} field needs at least one option")
        if self.type not in ("SELECT", "MULTI_SELECT") and self.options:
            raise ValueError(f"{self.object}.{self.name}: only SELECT fields take options")
        return self

    def create_payload(self, object_metadata_id: str) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "objectMetadataId": object_metadata_id,
            "type": self.type,
            "name": self.name,
            "label": self.label,
            "description": self.description,
            "isNullable": True,
        }
        if self.is_unique:
            payload["isUnique"] = True
        if self.options:
            payload["options"] = _option_payloads(self.options, start=0)
        return payload


def _option_payloads(options: Iterable[SelectOption], start: int) -> list[dict[str, Any]]:
    # Ids are ours to give: some Twenty versions require one on every option sent.
    return [
        {"id": str(uuid.uuid4()), "value": o.value, "label": o.label,
         "color": OPTION_COLORS[(start + i) % len(OPTION_COLORS)], "position": start + i}
        for i, o in enumerate(options)
    ]


def _options(pairs: Iterable[tuple[str, str]]) -> list[SelectOption]:
    return [SelectOption(value=v, label=l) for v, l in pairs]


CATEGORY_CODES = _options(
    [("A", "A"), ("B", "B"), ("C", "C"), ("D", "D"), ("E", "E"), ("F", "F"), ("G", "G"), ("H", "H"), ("X", "X")]
)
RELATIONSHIP_CATEGORIES = _options(
    [("FAMILY", "Family"), ("PARTNER", "Partner"), ("FRIEND", "Friend"), ("CLOSE_FRIEND", "Close friend"),
     ("COLLEAGUE", "Colleague"), ("PROFESSIONAL", "Professional"), ("BUSINESS", "Business"), ("CLIENT", "Client"),
     ("MENTOR", "Mentor"), ("ACQUAINTANCE", "Acquaintance"), ("COMMUNITY", "Community"), ("SERVICE", "Service"),
     ("SERVICE_PROVIDER", "Service provider"), ("OTHER", "Other")]
)
BUSINESS_TYPES = _options(
    [("SOLE_PROPRIETORSHIP", "Sole proprietorship"), ("PARTNERSHIP", "Partnership"), ("LLC", "LLC"),
     ("CORPORATION", "Corporation"), ("S_CORPORATION", "S corporation"), ("NONPROFIT", "Nonprofit"),
     ("COOPERATIVE", "Cooperative"), ("GOVERNMENT", "Government"), ("OTHER", "Other")]
)


def _f(obj: ObjectName, name: str, column: str, type_: FieldType, label: str, description: str,
       **extra: Any) -> FieldSpec:
    return FieldSpec(object=obj, name=name, column=column, type=type_, label=label, description=description, **extra)


# The seed's tables, with Twenty-valid names. Labels and descriptions follow the seed.
BUILTIN_FIELDS: tuple[FieldSpec, ...] = (
    _f("person", "contactId", "contact_id", "TEXT", "Contact ID", "Canonical contact ID from BigQuery",
       is_unique=True, sync="push"),
    _f("person", "categoryCode", "category_code", "SELECT", "Category code", "Relationship category (A-H, X)",
       options=CATEGORY_CODES),
    _f("person", "subcategoryCode", "subcategory_code", "TEXT", "Subcategory code", "Full subcategory code"),
    _f("person", "relationshipCategory", "relationship_category", "SELECT", "Relationship category",
       "Relationship category (family, friend, etc.)", options=RELATIONSHIP_CATEGORIES),
    _f("person", "llmContext", "llm_context", "TEXT", "LLM context", "Rich LLM context (JSON string)", sync="push"),
    _f("person", "communicationStats", "communication_stats", "TEXT", "Communication stats",
       "Communication statistics (JSON string)", sync="push"),
    _f("person", "socialNetwork", "social_network", "TEXT", "Social network",
       "Social network context (JSON string)", sync="push"),
    _f("person", "aiInsights", "ai_insights", "TEXT", "AI insights", "AI insights (JSON string)", sync="push"),
    _f("person", "recommendations", "recommendations", "TEXT", "Recommendations",
       "Recommendations (JSON string)", sync="push"),
    _f("person", "syncMetadata", "sync_metadata", "TEXT", "Sync metadata", "Sync metadata (JSON string)",
       sync="push"),
    _f("company", "businessId", "business_id", "TEXT", "Business ID", "Canonical business ID from BigQuery",
       is_unique=True, sync="push"),
    _f("company", "industry", "industry", "TEXT", "Industry", "Business industry"),
    _f("company", "businessType", "business_type", "SELECT", "Business type", "Legal business type",
       options=BUSINESS_TYPES),
    _f("company", "llmContext", "llm_context", "TEXT", "LLM context", "Rich LLM context (JSON string)",
       sync="push"),
    _f("company", "businessData", "business_data", "TEXT", "Business data", "Business data (JSON string)",
       sync="push"),
    _f("company", "relationshipStats", "relationship_stats", "TEXT", "Relationship stats",
       "Relationship statistics (JSON string)", sync="push"),
    _f("company", "syncMetadata", "sync_metadata", "TEXT", "Sync metadata", "Sync metadata (JSON string)",
       sync="push"),
)


class CrmSchemaError(ValueError):
    """The CRM schema file (TRUTH_FORGE_CRM_SCHEMA_FILE) cannot be read or says something invalid."""


class CrmSchema:
    """The full set of fields truth-forge manages: the built-in ones plus any the user adds."""

    def __init__(self, fields: Iterable[FieldSpec]) -> None:
        self.fields = tuple(fields)
        seen: set[tuple[str, str]] = set()
        for spec in self.fields:
            for key in ((spec.object, spec.name), (spec.object, "column:" + spec.column)):
                if key in seen:
                    raise CrmSchemaError(f"CRM schema names {spec.object}.{key[1]} twice")
                seen.add(key)
        # Asked for several times per row by the mapping: sorted out once (the fields never change).
        self._by_object: dict[str, tuple[FieldSpec, ...]] = {}
        for spec in self.fields:
            self._by_object[spec.object] = (*self._by_object.get(spec.object, ()), spec)

    @classmethod
    def load(cls, extra_file: Path | None = None) -> CrmSchema:
        """The built-in fields, plus those in `extra_file` (JSON or TOML: `{"fields": [{...}, ...]}`)."""
        return cls([*BUILTIN_FIELDS, *(load_extra_fields(extra_file) if extra_file else [])])

    def for_object(self, obj: ObjectName) -> list[FieldSpec]:
        return list(self._by_object.get(obj, ()))

    def by_column(self, obj: ObjectName) -> dict[str, FieldSpec]:
        return {f.column: f for f in self.for_object(obj)}

    def by_name(self, obj: ObjectName) -> dict[str, FieldSpec]:
        return {f.name: f for f in self.for_object(obj)}


def load_extra_fields(path: Path) -> list[FieldSpec]:
    """User-defined fields from a JSON or TOML file, with a clear error naming the file and the field."""
    try:
        text = Path(path).read_text(encoding="utf-8")
        data = tomllib.loads(text) if str(path).endswith(".toml") else json.loads(text)
    except (OSError, ValueError) as exc:
        raise CrmSchemaError(f"Cannot read CRM schema file {path}: {exc}") from None
    entries = data.get("fields") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise CrmSchemaError(f"CRM schema file {path} must hold a list under 'fields'")
    specs = []
    for position, entry in enumerate(entries):
        try:
            specs.append(FieldSpec.model_validate(entry))
        except ValidationError as exc:
            reasons = "; ".join(
                f"{'.'.join(str(part) for part in err['loc']) or 'field'}: {err['msg']}" for err in exc.errors()
            )
            raise CrmSchemaError(f"CRM schema file {path}, field #{position + 1}: {reasons}") from None
    return specs


# -- setup and verification ---------------------------------------------------------------------------

_ALREADY_EXISTS_HINTS = ("NOT_AVAILABLE", "FIELD_ALREADY_EXISTS", "already used", "already exists")


def _compare(spec: FieldSpec, found: dict[str, Any]) -> list[str]:
    """What differs between our spec and a field the workspace has (empty when it is as we want it)."""
    problems = []
    if found.get("type") != spec.type:
        problems.append(f"type is {found.get('type')}, expected {spec.type}")
        return problems
    have = {o.get("value") for o in found.get("options") or []}
    missing = [o.value for o in spec.options if o.value not in have]
    if missing:
        problems.append("missing options " + ", ".join(missing))
    if spec.is_unique and not found.get("isUnique"):
        problems.append("is not unique, expected unique (it is the upsert key)")
    if found.get("isActive") is False:
        problems.append("is deactivated")
    return problems


def _objects_by_name(client: TwentyClient) -> dict[str, dict[str, Any]]:
    return {str(o.get("nameSingular")): o for o in client.metadata.list_objects()}


def _require_object(objects: dict[str, dict[str, Any]], name: str) -> dict[str, Any]:
    if name not in objects:
        raise TwentyConfigError(f"The workspace has no '{name}' object; is this a Twenty workspace?")
    return objects[name]


def verify_schema(client: TwentyClient, schema: CrmSchema) -> dict[str, Any]:
    """Compare the workspace with the schema. One read request; writes nothing."""
    objects = _objects_by_name(client)
    report: dict[str, Any] = {}
    for obj in ("person", "company"):
        fields = {f.get("name"): f for f in _require_object(objects, obj).get("fields") or []}
        present, missing, mismatched = [], [], []
        for spec in schema.for_object(obj):
            found = fields.get(spec.name)
            if found is None:
                missing.append(spec.name)
                continue
            problems = _compare(spec, found)
            if problems:
                mismatched.append({
                    "field": spec.name,
                    "problems": problems,
                    "expected": {"type": spec.type, "isUnique": spec.is_unique,
                                 "options": [o.value for o in spec.options]},
                    "found": {"type": found.get("type"), "isUnique": bool(found.get("isUnique")),
                              "options": [o.get("value") for o in found.get("options") or []]},
                })
            else:
                present.append(spec.name)
        report[obj] = {"present": present, "missing": missing, "mismatched": mismatched,
                       "complete": not missing and not mismatched}
    report["all_complete"] = all(report[o]["complete"] for o in ("person", "company"))
    return report


def setup_schema(client: TwentyClient, schema: CrmSchema) -> dict[str, Any]:
    """Create missing fields and SELECT options; leave conflicting fields alone and report them."""
    objects = _objects_by_name(client)
    created: list[str] = []
    options_added: dict[str, list[str]] = {}
    raced: list[str] = []
    errors: list[dict[str, Any]] = []
    for obj in ("person", "company"):
        target = _require_object(objects, obj)
        fields = {f.get("name"): f for f in target.get("fields") or []}
        for spec in schema.for_object(obj):
            found = fields.get(spec.name)
            if found is None:
                try:
                    client.metadata.create_field(spec.create_payload(target["id"]))
                    created.append(f"{obj}.{spec.name}")
                except TwentyRecordRejected as exc:
                    if exc.status == 409 or any(h in str(exc) for h in _ALREADY_EXISTS_HINTS):
                        raced.append(f"{obj}.{spec.name}")  # made by someone else meanwhile: re-read below
                    else:
                        # Keep going: one refused field should not hide what happens to the others.
                        errors.append({"field": f"{obj}.{spec.name}", "error": str(exc)})
                        log.error("Twenty refused to create %s.%s: %s", obj, spec.name, exc)
                continue
            if found.get("type") == spec.type and spec.options:
                have = found.get("options") or []
                have_values = {o.get("value") for o in have}
                new = [o for o in spec.options if o.value not in have_values]
                if new:
                    start = max((o.get("position", -1) for o in have), default=-1) + 1
                    try:
                        client.metadata.update_field(found["id"], {"options": [*have, *_option_payloads(new, start)]})
                        options_added[f"{obj}.{spec.name}"] = [o.value for o in new]
                    except TwentyRecordRejected as exc:
                        errors.append({"field": f"{obj}.{spec.name}", "error": str(exc)})
                        log.error("Twenty refused new options for %s.%s: %s", obj, spec.name, exc)
    if created or raced:
        log.info("Created %d custom fields in Twenty: %s", len(created), ", ".join(created) or "-")
    verification = verify_schema(client, schema)
    return {"created": created, "options_added": options_added, "already_existed_on_create": raced,
            "errors": errors, **verification, "all_complete": verification["all_complete"] and not errors}
