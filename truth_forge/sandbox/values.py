"""What the server does to incoming field values before it stores them.

Twenty checks and rewrites values on the way in (emails validated and lower-cased, link URLs
validated and their origins normalised, phones parsed with libphonenumber, SELECT values
checked against options, unknown keys rejected, composite subfields rewritten whole). A client
that only ever talks to a lenient fake would never learn about those rewrites, so they live
here, written from Twenty's validators and transformers (see docs/twenty-facts.md). Rules that
changed between Twenty versions follow the active `Behaviour` profile.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import date
from typing import Any

import phonenumbers

from truth_forge.sandbox.clock import format_ms, parse_iso_ms
from truth_forge.sandbox.errors import ApiError, bad_request, unknown_field
from truth_forge.sandbox.metadata import (
    ACTOR_SOURCES,
    COMPOSITE_TYPES,
    FieldDef,
    ObjectDef,
    composite_default,
)
from truth_forge.sandbox.profiles import Behaviour

# Fields the server maintains itself; a client value for them is not stored.
SERVER_MAINTAINED = frozenset({"updatedAt", "updatedBy"})

_URL_PARTS = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.\-]*://)?([^/?#]*)(.*)$", re.DOTALL)
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_RATING = re.compile(r"^RATING_[1-5]$")
# The newest email validator uses zod's default `z.email()` pattern: ASCII only, no leading
# dot or "..", a dotted domain with a 2+ letter TLD.
_EMAIL = re.compile(r"^(?!\.)(?!.*\.\.)([A-Za-z0-9_'+\-.]*)[A-Za-z0-9_+-]@"
                    r"([A-Za-z0-9][A-Za-z0-9\-]*\.)+[A-Za-z]{2,}$")
# The older one passed zod's loose Unicode pattern: one "@", no spaces or '"', length limits.
_UNICODE_EMAIL = re.compile(r'^[^\s@"]{1,64}@[^\s@]{1,255}$')
# twenty-shared `isValidUrl`: optional http(s) scheme, a dotted host, an IPv4 or localhost,
# optional port, path and query; case-insensitive. `acme.example` passes, `javascript:...` and
# `not a url` do not.
_VALID_URL = re.compile(
    r"^(https?://)?((([a-z0-9-]+\.)+[a-z]{2,})|(\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3})|(localhost))"
    r"(:\d+)?(/\S*)?(\?\S*)?$", re.IGNORECASE)
INVALID_URL_MESSAGE = "The URL of the link is not valid"


def invalid_value(f: FieldDef, value: Any) -> ApiError:
    return bad_request(f'Invalid value {json.dumps(value)} for field "{f.name}"')


def node_inspect(value: Any) -> str:
    """How Node's util.inspect prints a value inside Twenty's messages ('text' for strings)."""
    if isinstance(value, str):
        for quote in ("'", '"', "`"):
            if quote not in value:
                return f"{quote}{value}{quote}"
        return "'" + value.replace("'", "\\'") + "'"
    if isinstance(value, bool):
        return "true" if value else "false"
    return "null" if value is None else json.dumps(value)


def is_uuid(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


# --------------------------------------------------------------------------------------------
# Defaults for a new record


def record_defaults(obj: ObjectDef) -> dict[str, Any]:
    """Every stored key of a fresh record, before the client's values are applied."""
    out: dict[str, Any] = {}
    for f in obj.fields.values():
        if f.type == "RELATION":
            if f.join_column:
                out[f.join_column] = None
            continue
        if f.name in ("id", "createdAt", "updatedAt", "createdBy", "updatedBy", "position"):
            continue
        if f.is_composite and f.default_value is None:
            # A custom composite field without a default: every subfield null.
            out[f.name] = {sub: None for sub in COMPOSITE_TYPES[f.type]}
        else:
            out[f.name] = composite_default(f.type, f.default_value)
    return out


# --------------------------------------------------------------------------------------------
# Input normalisation


def normalize_input(obj: ObjectDef, data: Any, rules: Behaviour) -> dict[str, Any]:
    """Check a create/update body and return {stored key: normalised value} (partial)."""
    if not isinstance(data, dict):
        raise bad_request("Request body should be a JSON object")
    joins = obj.join_columns()
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key in joins:
            if value is not None and not is_uuid(value):
                raise invalid_value(joins[key], value)
            out[key] = value
            continue
        f = obj.field(key)
        if f is None:
            raise unknown_field(obj.name_singular, key)
        if key in SERVER_MAINTAINED:
            continue
        if f.type == "RELATION":
            out.update(_relation_input(obj, f, value))
            continue
        if key == "createdBy":
            out[key] = _actor_input(f, value)
            continue
        out[key] = normalize_field_value(f, value, rules)
    return out


def _relation_input(obj: ObjectDef, f: FieldDef, value: Any) -> dict[str, Any]:
    """Nested `connect` / `disconnect` on a many-to-one relation; one-to-many is read-only."""
    if not f.join_column:
        raise bad_request(f'Field "{f.name}" of object {obj.name_singular} is a one-to-many '
                          "relation and cannot be written")
    if isinstance(value, dict) and set(value) == {"connect"}:
        where = value["connect"].get("where") if isinstance(value["connect"], dict) else None
        target_id = where.get("id") if isinstance(where, dict) else None
        if not is_uuid(target_id):
            raise invalid_value(f, value)
        return {f.join_column: target_id}
    if isinstance(value, dict) and value == {"disconnect": True}:
        return {f.join_column: None}
    raise invalid_value(f, value)


def _actor_input(f: FieldDef, value: Any) -> dict[str, Any] | None:
    """A client's createdBy: kept whole when it names someone, else only its `source` is used
    (the server fills in the caller; see RecordService._created_by)."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise invalid_value(f, value)
    for sub in value:
        if sub not in COMPOSITE_TYPES["ACTOR"]:
            raise bad_request(f'Invalid subfield {sub} for actor field "{f.name}"')
    source = value.get("source")
    if source is not None and source not in ACTOR_SOURCES:
        raise invalid_value(f, source)
    name, member, context = value.get("name"), value.get("workspaceMemberId"), value.get("context")
    if (name is not None and not isinstance(name, str)) or (member is not None and not is_uuid(member)) \
            or (context is not None and not isinstance(context, dict)):
        raise invalid_value(f, value)
    return {k: v for k, v in value.items() if v is not None}


def normalize_field_value(f: FieldDef, value: Any, rules: Behaviour) -> Any:
    if f.is_composite:
        return _composite(f, value, rules)
    return _scalar(f, f.type, value, rules)


def _scalar(f: FieldDef, type_: str, value: Any, rules: Behaviour) -> Any:
    if type_ == "TEXT" and value == "" and rules.empty_text_to_null:
        return None  # transform-text-field: '' is the null-equivalent of a text column
    if value is None:
        if type_ == "TEXT" and not f.is_nullable:
            return ""
        if not f.is_nullable and type_ not in ("TEXT",):
            raise bad_request(f'Field "{f.name}" cannot be null')
        return None
    if type_ in ("TEXT",):
        if not isinstance(value, str):
            raise invalid_value(f, value)
        return value
    if type_ in ("NUMBER", "POSITION"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise invalid_value(f, value)
        return value
    if type_ == "NUMERIC":
        return _numeric(f, value)
    if type_ == "BOOLEAN":
        if not isinstance(value, bool):
            raise invalid_value(f, value)
        return value
    if type_ == "DATE_TIME":
        ms = parse_iso_ms(value) if isinstance(value, str) else None
        if ms is None:
            raise invalid_value(f, value)
        return format_ms(ms)
    if type_ == "DATE":
        if not isinstance(value, str):
            raise invalid_value(f, value)
        day = value[:10]
        try:
            date.fromisoformat(day)
        except ValueError:
            raise invalid_value(f, value) from None
        if not (_DATE.match(value) or parse_iso_ms(value) is not None):
            raise invalid_value(f, value)
        return day
    if type_ == "UUID":
        if not is_uuid(value):
            raise invalid_value(f, value)
        return str(value).lower()
    if type_ == "SELECT":
        if not isinstance(value, str) or value not in f.option_values:
            raise bad_request(f'Invalid value {json.dumps(value)} for field "{f.name}": '
                              f"expected one of {', '.join(f.option_values)}")
        return value
    if type_ == "MULTI_SELECT":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise invalid_value(f, value)
        bad = [v for v in value if v not in f.option_values]
        if bad:
            raise bad_request(f'Invalid value {json.dumps(bad[0])} for field "{f.name}": '
                              f"expected values among {', '.join(f.option_values)}")
        return value
    if type_ == "RATING":
        allowed = f.option_values or [f"RATING_{i}" for i in range(1, 6)]
        if not isinstance(value, str) or value not in allowed or not _RATING.match(value):
            raise invalid_value(f, value)
        return value
    if type_ == "ARRAY":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise invalid_value(f, value)
        return value
    if type_ == "FILES":
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise invalid_value(f, value)
        return value
    if type_ == "RAW_JSON":
        return value
    raise bad_request(f'Field "{f.name}" of type {type_} cannot be written')


def _numeric(f: FieldDef, value: Any) -> int | float:
    if isinstance(value, bool):
        raise invalid_value(f, value)
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            raise invalid_value(f, value) from None
        return int(number) if number.is_integer() else number
    raise invalid_value(f, value)


def _composite(f: FieldDef, value: Any, rules: Behaviour) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise invalid_value(f, value)
    shape = COMPOSITE_TYPES[f.type]
    for sub in value:
        if sub not in shape:
            raise bad_request(f'Invalid subfield {sub} for {f.type.lower()} field "{f.name}"')
    if f.type == "EMAILS":
        return _emails(f, value, rules)
    if f.type == "LINKS":
        return _links(f, value)
    if f.type == "PHONES":
        return transform_phones(f, value)
    out: dict[str, Any] = {}
    for sub, sub_value in value.items():
        sub_type = shape[sub]
        if sub_value is None:
            out[sub] = None
        elif sub_type == "TEXT":
            if not isinstance(sub_value, str):
                raise invalid_value(f, value)
            empty_is_null = f.type == "FULL_NAME" and rules.empty_text_to_null
            out[sub] = None if sub_value == "" and empty_is_null else sub_value
        elif sub_type == "NUMERIC":
            out[sub] = _numeric(f, sub_value)
        else:
            out[sub] = sub_value
    return out


def _json_list(f: FieldDef, value: Any) -> list[Any] | None:
    # Twenty also accepts these array subfields as a JSON string.
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise invalid_value(f, value) from None
    if not isinstance(value, list):
        raise invalid_value(f, value)
    return value


def _emails(f: FieldDef, value: dict[str, Any], rules: Behaviour) -> dict[str, Any]:
    """validate-email(s)-...-or-throw + transform-emails-value.

    The primary email is always written (null when omitted or empty); additionalEmails only
    when sent (null when empty).
    """
    primary = value.get("primaryEmail")
    out: dict[str, Any] = {
        "primaryEmail": _checked_email(primary, f"{f.name}.primaryEmail", rules) or None}
    if "additionalEmails" in value:
        extra = value["additionalEmails"]
        label = f"{f.name}.additionalEmails"
        if isinstance(extra, str) and not extra.lstrip().startswith("["):
            extra = [extra]  # a single address given as a string
        extra = _json_list(f, extra) if not isinstance(extra, list) else extra
        if extra is not None and not all(isinstance(e, str) for e in extra):
            raise bad_request(f'Invalid value {node_inspect(value["additionalEmails"])} for '
                              f'field "{label} - Array values need to be string"')
        cleaned = [_checked_email(e, label, rules) for e in extra or []]
        out["additionalEmails"] = cleaned or None
    return out


def _checked_email(value: Any, label: str, rules: Behaviour) -> str | None:
    """One address as Twenty stores it, or its 400 (`Invalid string value ... for email field`)."""
    if value is None:
        return None
    refused = bad_request(f'Invalid string value {node_inspect(value)} for email field "{label}"')
    if not isinstance(value, str):
        raise refused
    if rules.email_check == "strict":
        # Newer servers: no mixed case and no "" (an empty string is not an address).
        if value != value.lower() or not _EMAIL.match(value.strip()):
            raise refused
        return value.strip()
    canonical = value.strip().lower()
    if canonical and not _UNICODE_EMAIL.match(canonical):
        raise refused
    return canonical


def normalize_url(url: str) -> str:
    """Lower-case the URL's origin and drop one trailing slash (transform-links-value)."""
    text = url.strip()
    if not text:
        return text
    match = _URL_PARTS.match(text)
    if match is None:
        return text
    scheme, host, rest = match.groups()
    result = (scheme or "").lower() + host.lower() + rest
    return result[:-1] if result.endswith("/") else result


def _links(f: FieldDef, value: dict[str, Any]) -> dict[str, Any]:
    """Type checks and origin normalisation of the subfields sent; `finish_links` completes
    the value once the stored one is known (merge, promotion, URL check)."""
    out: dict[str, Any] = {}
    for key in ("primaryLinkUrl", "primaryLinkLabel"):
        if key in value:
            text = value[key]
            if text is not None and not isinstance(text, str):
                raise invalid_value(f, value)
            out[key] = normalize_url(text) if key == "primaryLinkUrl" and text else text
    if "secondaryLinks" in value:
        links = _json_list(f, value["secondaryLinks"])
        if links is not None:
            cleaned = []
            for link in links:
                if not isinstance(link, dict) or set(link) - {"url", "label"}:
                    raise invalid_value(f, value)
                url = link.get("url")
                if url is not None and not isinstance(url, str):
                    raise invalid_value(f, value)
                cleaned.append({"url": normalize_url(url) if url else url,
                                "label": link.get("label")})
            links = cleaned
        out["secondaryLinks"] = links
    return out


def finish_links(stored: dict[str, Any] | None, change: dict[str, Any],
                 rules: Behaviour) -> dict[str, Any]:
    """remove-empty-links + transform-links-value on the value about to be written.

    Newer servers merge a partial update into the stored value first; older ones rewrote the
    whole composite from what was sent. Empty links are dropped, the first remaining link
    becomes the primary one, and every remaining URL must pass `isValidUrl`.
    """
    empty = {"primaryLinkUrl": None, "primaryLinkLabel": None, "secondaryLinks": None}
    base = {**empty, **(stored or {})} if rules.links_update_merges else empty
    merged = {**base, **change}
    candidates = []
    if merged.get("primaryLinkUrl"):
        candidates.append({"url": merged["primaryLinkUrl"], "label": merged["primaryLinkLabel"]})
    candidates += [link for link in merged.get("secondaryLinks") or [] if link.get("url")]
    for link in candidates:
        if not _VALID_URL.match(link["url"]):
            raise bad_request(INVALID_URL_MESSAGE)
    first = candidates[0] if candidates else {"url": None, "label": None}
    return {"primaryLinkUrl": first["url"], "primaryLinkLabel": first["label"],
            "secondaryLinks": [{"url": link["url"], "label": link.get("label")}
                               for link in candidates[1:]]}


# --------------------------------------------------------------------------------------------
# Phones (transform-phones-value.util.ts, re-expressed with the `phonenumbers` package)


def transform_phones(f: FieldDef, value: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    primary_keys = ("primaryPhoneNumber", "primaryPhoneCountryCode", "primaryPhoneCallingCode")
    for key in primary_keys:
        if value.get(key) is not None and not isinstance(value.get(key), str):
            raise invalid_value(f, value)
    if any(k in value for k in primary_keys):
        number, country, calling = _validate_phone(
            value.get("primaryPhoneNumber"), value.get("primaryPhoneCountryCode"),
            value.get("primaryPhoneCallingCode"),
        )
        # Only keys the client sent (or that were inferred) are written, as removeUndefinedFields.
        for key, result in zip(primary_keys, (number, country, calling)):
            if key in value or result is not None:
                out[key] = result
    # Omitted or empty additionalPhones are written as null (transform-phones-value).
    out["additionalPhones"] = None
    for phone in _json_list(f, value.get("additionalPhones")) or []:
        if not isinstance(phone, dict) or set(phone) - {"number", "countryCode", "callingCode"}:
            raise invalid_value(f, value)
        number, country, calling = _validate_phone(
            phone.get("number"), phone.get("countryCode"), phone.get("callingCode"))
        out["additionalPhones"] = (out["additionalPhones"] or []) + [
            {"number": number, "countryCode": country, "callingCode": calling}]
    return out


def _validate_phone(
    number: str | None, country: str | None, calling: str | None
) -> tuple[str | None, str | None, str | None]:
    if country and country not in phonenumbers.SUPPORTED_REGIONS:
        raise bad_request(f"Invalid country code {country}")
    calling_digits: int | None = None
    if calling:
        digits = calling.replace("+", "")
        regions = phonenumbers.region_codes_for_country_code(int(digits)) if digits.isdigit() \
            else ()
        regions = tuple(r for r in regions if r != "001")
        if not regions:
            raise bad_request(f"Invalid calling code {calling}")
        if country and country not in regions:
            raise bad_request("Provided country code and calling code are conflicting")
        calling_digits = int(digits)
    if not number:
        return number, country, calling
    default_region = country
    if default_region is None and calling_digits is not None:
        default_region = phonenumbers.region_code_for_country_code(calling_digits)
    try:
        parsed = phonenumbers.parse(number, default_region)
    except phonenumbers.NumberParseException:
        raise bad_request(f"Provided phone number is invalid {number}") from None
    inferred_country = phonenumbers.region_code_for_number(parsed)
    if inferred_country and country and inferred_country != country:
        raise bad_request("Provided and inferred country code are conflicting")
    if calling_digits is not None and parsed.country_code != calling_digits:
        raise bad_request("Provided and inferred calling code are conflicting")
    final_calling = calling if calling is not None else f"+{parsed.country_code}"
    final_country = country if country is not None else inferred_country
    return phonenumbers.national_significant_number(parsed), final_country, final_calling


# --------------------------------------------------------------------------------------------


def merge_values(record: dict[str, Any], changes: dict[str, Any], obj: ObjectDef,
                 rules: Behaviour, *, fresh: bool = False) -> dict[str, Any]:
    """Apply normalised changes to a stored record (or to a new record's defaults).

    A composite keeps the subfields its change leaves out (the transformers above already
    wrote the ones Twenty rewrites, e.g. an omitted primaryEmail as null); LINKS are completed
    by `finish_links` (against the stored value on an update, from nothing when `fresh`).
    """
    out = dict(record)
    for key, value in changes.items():
        f = obj.field(key)
        if f is not None and f.is_composite and value is None:
            # A composite is columns in Postgres: "null" means every subfield null.
            out[key] = {sub: None for sub in COMPOSITE_TYPES[f.type]}
        elif f is not None and f.type == "LINKS" and isinstance(value, dict):
            stored = out.get(key) if isinstance(out.get(key), dict) and not fresh else None
            out[key] = finish_links(stored, value, rules)
        elif f is not None and f.is_composite and isinstance(value, dict):
            base: dict[str, Any] = out[key] if isinstance(out.get(key), dict) else {
                sub: None for sub in COMPOSITE_TYPES[f.type]}
            out[key] = {**base, **value}
        else:
            out[key] = value
    return out
