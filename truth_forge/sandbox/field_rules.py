"""Validation of custom field definitions (POST/PATCH /rest/metadata/fields).

Twenty refuses field names and SELECT options that our schema code could easily get wrong
(snake_case names, lower-case option values, commas in labels, unquoted defaults). These rules
are restated here from the reference (§4.2) so the sandbox refuses the same inputs with the
same error codes.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from truth_forge.sandbox.errors import ApiError
from truth_forge.sandbox.metadata import COMPOSITE_TYPES, ObjectDef

MAX_NAME_LENGTH = 63
_NAME = re.compile(r"^[a-z][a-zA-Z0-9]*$")
_OPTION_VALUE = re.compile(r"^[A-Z][A-Z0-9]*(_[A-Z0-9]+)*$")
OPTION_COLORS = frozenset(
    {"red", "ruby", "crimson", "tomato", "orange", "amber", "yellow", "lime", "grass", "green",
     "jade", "mint", "turquoise", "cyan", "sky", "blue", "iris", "violet", "purple", "plum",
     "pink", "bronze", "gold", "brown", "gray"}
)
_RESERVED_PAIRS = (
    "approvedAccessDomain", "appToken", "billingCustomer", "billingEntitlement", "billingMeter",
    "billingProduct", "billingSubscription", "billingSubscriptionItem", "featureFlag", "job",
    "keyValuePair", "pageLayout", "pageLayoutTab", "pageLayoutWidget", "twoFactorMethod", "user",
    "userWorkspace", "workspace", "role", "userWorkspaceRole", "plan", "event", "field", "link",
)
RESERVED_NAMES = frozenset(
    [n for base in _RESERVED_PAIRS for n in (base, base + "s")]
    + ["currency", "currencies", "fullNames", "address", "addresses", "type", "types", "object",
       "objects", "index", "relation", "relations", "aggregate", "connect", "create",
       "disconnect", "search", "searches"]
)
# Types a custom field may be created with in the sandbox (relations are not modelled).
CREATABLE_TYPES = frozenset(
    {"TEXT", "NUMBER", "NUMERIC", "BOOLEAN", "DATE", "DATE_TIME", "SELECT", "MULTI_SELECT",
     "RAW_JSON", "ARRAY", "UUID", "RATING", "LINKS", "EMAILS", "PHONES", "FULL_NAME", "ADDRESS",
     "CURRENCY", "RICH_TEXT"}
)

# lodash `words` for ASCII letters and digits (its unicode-word branch, which splits on case
# changes and digit runs); enough for names that already match `^[a-z][a-zA-Z0-9]*$`.
_LODASH_WORD = re.compile(
    r"[A-Z]?[a-z]+(?=[^A-Za-z0-9]|[A-Z]|$)"
    r"|[A-Z]+(?=[^A-Za-z0-9]|[A-Z][a-z]|$)"
    r"|[A-Z]?[a-z]+"
    r"|[A-Z]+"
    r"|\d*(?:1ST|2ND|3RD|(?![123])\dTH)(?=\b|[a-z_])"
    r"|\d*(?:1st|2nd|3rd|(?![123])\dth)(?=\b|[A-Z_])"
    r"|\d+"
)


def lodash_camel_case(text: str) -> str:
    words = _LODASH_WORD.findall(text.replace("'", ""))
    out = []
    for i, word in enumerate(words):
        lower = word.lower()
        out.append(lower if i == 0 else lower[:1].upper() + lower[1:])
    return "".join(out)


class FieldErrors:
    """Collects failures for one field, then raises Twenty's METADATA_VALIDATION_ERROR body."""

    def __init__(self, operation: str, name: Any) -> None:
        self.operation = operation
        self.name = name
        self.errors: list[dict[str, Any]] = []

    def add(self, code: str, message: str, value: Any = None) -> None:
        self.errors.append({"code": code, "message": message, "value": value,
                            "userFriendlyMessage": message})

    def raise_if_any(self) -> None:
        if not self.errors:
            return
        count = len(self.errors)
        body = {
            "statusCode": 400,
            "error": "METADATA_VALIDATION_ERROR",
            "message": f"Validation failed for {count} error(s) on field metadata",
            "errors": {"fieldMetadata": [{
                "type": self.operation,
                "flatEntityMinimalInformation": {"name": self.name},
                "errors": self.errors,
            }]},
            "summary": {"totalErrors": count, "fieldMetadata": 1},
        }
        raise ApiError(400, "METADATA_VALIDATION_ERROR",
                       [e["message"] for e in self.errors], body=body)


def taken_names(obj: ObjectDef, ignore: str | None = None) -> set[str]:
    """Names a new field may not use: fields, join columns, composite column names."""
    names: set[str] = set()
    for f in obj.fields.values():
        if f.name == ignore:
            continue
        names.add(f.name)
        if f.join_column:
            names.add(f.join_column)
        for sub in COMPOSITE_TYPES.get(f.type, {}):
            names.add(f.name + sub[0].upper() + sub[1:])
    return names


def check_name(errors: FieldErrors, name: Any, obj: ObjectDef, ignore: str | None = None) -> None:
    if not isinstance(name, str) or len(name) < 1:
        errors.add("INVALID_FIELD_INPUT", "Name is too short: it must be at least 1 character",
                   name)
        return
    if len(name) > MAX_NAME_LENGTH:
        errors.add("INVALID_FIELD_INPUT",
                   f"Name is too long: it exceeds the {MAX_NAME_LENGTH} characters limit", name)
    if not _NAME.match(name) or lodash_camel_case(name) != name:
        errors.add("INVALID_FIELD_INPUT", f'Name "{name}" should be in camelCase', name)
    if name in RESERVED_NAMES:
        errors.add("RESERVED_KEYWORD", f'Name "{name}" is reserved', name)
    elif name in taken_names(obj, ignore):
        errors.add("NOT_AVAILABLE",
                   f'Name "{name}" is not available as it is already used by another field',
                   name)


def check_options(errors: FieldErrors, type_: str, options: Any) -> list[dict[str, Any]] | None:
    """Validate SELECT/MULTI_SELECT options; returns them with ids and positions filled in."""
    if type_ not in ("SELECT", "MULTI_SELECT"):
        return options if isinstance(options, list) else None
    if not isinstance(options, list) or not options:
        errors.add("INVALID_FIELD_INPUT", "Options are required for enum fields", options)
        return None
    cleaned: list[dict[str, Any]] = []
    for index, option in enumerate(options):
        if not isinstance(option, dict):
            errors.add("INVALID_FIELD_INPUT", "Option must be an object", option)
            continue
        value, label = option.get("value"), option.get("label")
        color, position = option.get("color"), option.get("position", index)
        option_id = option.get("id") or str(uuid.uuid4())
        if (not isinstance(value, str) or not 1 <= len(value) <= MAX_NAME_LENGTH
                or not _OPTION_VALUE.match(value)):
            errors.add("INVALID_FIELD_INPUT",
                       f'Value must be in UPPER_CASE and follow snake_case "{value}"', value)
        if not isinstance(label, str) or not label.strip() or len(label) > MAX_NAME_LENGTH:
            errors.add("INVALID_FIELD_INPUT", f'Option label "{label}" is invalid: it must be '
                       f"1-{MAX_NAME_LENGTH} characters and not blank", label)
        elif "," in label:
            errors.add("INVALID_FIELD_INPUT", f'Label must not contain a comma "{label}"', label)
        if color not in OPTION_COLORS:
            errors.add("INVALID_FIELD_INPUT", f'Invalid option color "{color}"', color)
        if isinstance(position, bool) or not isinstance(position, (int, float)):
            errors.add("INVALID_FIELD_INPUT", f'Option position "{position}" must be a number',
                       position)
        try:
            uuid.UUID(str(option_id))
        except ValueError:
            errors.add("INVALID_FIELD_INPUT", f'Option id "{option_id}" must be a UUID',
                       option_id)
        cleaned.append({"id": option_id, "value": value, "label": label, "color": color,
                        "position": position})
    for key in ("value", "id", "position"):
        seen = [o[key] for o in cleaned]
        dupes = sorted({repr(v) for v in seen if seen.count(v) > 1})
        if dupes:
            errors.add("INVALID_FIELD_INPUT", f"Duplicate option {key}s: {', '.join(dupes)}",
                       dupes)
    return cleaned


def check_default(errors: FieldErrors, type_: str, default: Any,
                  options: list[dict[str, Any]] | None, is_unique: bool) -> None:
    if default is None:
        return
    if is_unique:
        errors.add("INVALID_FIELD_INPUT", "Unique fields cannot have a default value", default)
    values = [o.get("value") for o in (options or [])]
    if type_ == "SELECT":
        if not _is_quoted(default) or default[1:-1] not in values:
            errors.add("INVALID_FIELD_INPUT",
                       f"Default value {default!r} must be a quoted option value, e.g. "
                       f"\"'{values[0] if values else 'VALUE'}'\"", default)
    elif type_ == "MULTI_SELECT":
        if (not isinstance(default, list) or not default
                or not all(_is_quoted(v) and v[1:-1] in values for v in default)
                or len(set(default)) != len(default)):
            errors.add("INVALID_FIELD_INPUT",
                       "Default value must be a non-empty array of unique quoted option values",
                       default)
    elif type_ == "TEXT":
        if not _is_quoted(default):
            errors.add("INVALID_FIELD_INPUT", "Default value of a TEXT field must be a quoted "
                       "string, e.g. \"'text'\"", default)
    elif type_ == "BOOLEAN":
        if not isinstance(default, bool):
            errors.add("INVALID_FIELD_INPUT", "Default value must be a boolean", default)
    elif type_ in ("NUMBER", "NUMERIC"):
        if isinstance(default, bool) or not isinstance(default, (int, float)):
            errors.add("INVALID_FIELD_INPUT", "Default value must be a number", default)


def _is_quoted(value: Any) -> bool:
    return isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == "'"


def check_label(errors: FieldErrors, label: Any) -> None:
    if not isinstance(label, str) or not label.strip():
        errors.add("INVALID_FIELD_INPUT", "Label is required and must not be blank", label)
    elif len(label) > MAX_NAME_LENGTH:
        errors.add("INVALID_FIELD_INPUT",
                   f"Label is too long: it exceeds the {MAX_NAME_LENGTH} characters limit", label)
