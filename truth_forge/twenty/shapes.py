"""Translate between the seed's friendly record dicts and Twenty's real record shapes.

The seed (and many users' scripts) speak in `{"name": "Jane Doe", "email": ..., "phone": ...,
"customFields": {"contact_id": ...}}`. Twenty wants `name: {firstName, lastName}`, whole `emails` /
`phones` / `domainName` composites, and custom fields as top-level camelCase keys. Composites are
always written whole: whether Twenty keeps the subfields a partial update leaves out is not settled.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from typing import Any

import phonenumbers

from truth_forge.core.json_text import CompactJson

FRIENDLY_KEYS = {"name", "email", "emails", "phone", "phones", "customFields", "domainName", "id"}


def snake_to_camel(name: str) -> str:
    """`contact_id` -> `contactId`; a name already in camelCase is returned as it is."""
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def camel_to_snake(name: str) -> str:
    """`contactId` -> `contact_id`."""
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()


def split_full_name(name: str | Mapping[str, Any] | None) -> dict[str, str]:
    """`"Jane van Doe"` -> `{"firstName": "Jane", "lastName": "van Doe"}` (split at the first space)."""
    if type(name) is not str and isinstance(name, Mapping):  # a plain string, most often: no ABC check
        return {"firstName": str(name.get("firstName") or ""), "lastName": str(name.get("lastName") or "")}
    first, _, last = " ".join(str(name or "").split()).partition(" ")
    return {"firstName": first, "lastName": last}


def join_full_name(name: Any) -> str:
    if type(name) is dict or isinstance(name, Mapping):  # a plain dict, most often: no ABC check
        return " ".join(p for p in (name.get("firstName"), name.get("lastName")) if p)
    return str(name or "")


# The rule Twenty's email validator applies (zod's `email()` in validate-email-value-or-throw.util.ts):
# ASCII only, no leading dot or double dots, a domain of dotted labels ending in 2+ letters.
_EMAIL = re.compile(
    r"^(?!\.)(?!.*\.\.)[A-Za-z0-9_'+\-.]*[A-Za-z0-9_+\-]@([A-Za-z0-9][A-Za-z0-9\-]*\.)+[A-Za-z]{2,}$"
)


def canonical_email(value: str | None) -> str | None:
    """An address as Twenty stores it (trimmed, lower-cased), or None when there is none."""
    text = (value or "").strip().lower()
    return text or None


def is_valid_email(value: str) -> bool:
    """Whether Twenty accepts this (already canonical) address."""
    return bool(_EMAIL.fullmatch(value))


def emails_value(primary: str | None, additional: Iterable[str] = ()) -> dict[str, Any]:
    """Twenty's EMAILS composite: lower-cased, trimmed, null for no primary (Twenty refuses "")."""
    main = canonical_email(primary)
    extra: list[str] = []
    for email in additional:
        text = canonical_email(email)
        if text and text != main and text not in extra:
            extra.append(text)
    return {"primaryEmail": main, "additionalEmails": extra}


def _parse_phone(number: str, default_region: str | None) -> phonenumbers.PhoneNumber:
    parsed = _read_plain_e164(number)
    if parsed is None:
        try:
            parsed = phonenumbers.parse(number, default_region)
        except phonenumbers.NumberParseException as exc:
            raise ValueError(
                f"Phone number {number!r} cannot be read: {exc}. Give it in international form (+<country code>...)"
            ) from None
    if not phonenumbers.is_possible_number(parsed):
        raise ValueError(f"Phone number {number!r} is not a possible number")
    return parsed


_PLAIN_E164 = re.compile(r"\+([1-9][0-9]{6,14})")


def _read_plain_e164(number: str) -> phonenumbers.PhoneNumber | None:
    """`phonenumbers.parse(number)` for the common case of a bare `+<digits>` number, in a fraction of
    its time (issue 22: parsing was a fifth of mapping a contact), or None where `parse` has work of
    its own to do and must be asked: anything but a plus and digits, a calling code it does not know,
    a national part with leading zeros (Italy's are kept), or one its region's national-prefix rule
    matches (`+44 020...`: parse may strip the 0). What is left is parse's own answer, field for
    field; tests/twenty/test_phone_fast_path.py holds it to that."""
    match = _PLAIN_E164.fullmatch(number)
    if match is None:
        return None
    digits = match.group(1)
    for size in (1, 2, 3):  # calling codes are prefix-free: the first known prefix is the code
        code = int(digits[:size])
        if code in phonenumbers.COUNTRY_CODE_TO_REGION_CODE:
            break
    else:
        return None
    national = digits[size:]
    prefix = _national_prefix(code)
    if national.startswith("0") or (prefix is not None and prefix.match(national)):
        return None
    return phonenumbers.PhoneNumber(country_code=code, national_number=int(national))


@functools.lru_cache(maxsize=512)
def _national_prefix(code: int) -> re.Pattern[str] | None:
    """The national-prefix pattern `parse` tries on numbers of this calling code (its main region's)."""
    metadata = phonenumbers.PhoneMetadata.metadata_for_region_or_calling_code(
        code, phonenumbers.region_code_for_country_code(code))
    pattern = metadata.national_prefix_for_parsing if metadata is not None else None
    return re.compile(pattern) if pattern else None


# Parsed phones remembered (a switchboard number shared by many contacts, a row mapped again by a
# retry): parsing is the dearest part of mapping a row. Bounded, so memory stays flat in N.
PHONE_MEMO = 8192


def phone_parts(number: str, default_region: str | None = None) -> dict[str, str]:
    """`+33 6 12 34 56 78` -> national number, ISO country code and calling code, as Twenty stores them."""
    national, country, calling = _phone_parts(number, default_region)
    return {"number": national, "countryCode": country, "callingCode": calling}  # a fresh dict: callers own it


@functools.lru_cache(maxsize=PHONE_MEMO)
def _phone_parts(number: str, default_region: str | None) -> tuple[str, str, str]:
    parsed = _parse_phone(number, default_region)  # a ValueError is not remembered: it is raised each time
    region = phonenumbers.region_code_for_number(parsed) or ""
    return (phonenumbers.national_significant_number(parsed),
            # Non-geographic numbers (+800 ...) have region "001", which Twenty refuses as a country code.
            region if _COUNTRY.fullmatch(region) and region != "ZZ" else "",
            f"+{parsed.country_code}")


_COUNTRY = re.compile(r"[A-Z]{2}")


def phones_value(
    primary: str | None, additional: Iterable[str] = (), *, default_region: str | None = None
) -> dict[str, Any]:
    number, country, calling = _phone_parts(primary, default_region) if primary else ("", "", "")
    return {
        "primaryPhoneNumber": number,
        "primaryPhoneCountryCode": country,
        "primaryPhoneCallingCode": calling,
        "additionalPhones": [phone_parts(p, default_region) for p in additional if p and p != primary],
    }


_NOT_DIGITS = re.compile(r"\D")  # compiled once: every view of a person reads its phones back


def phone_to_e164(number: str | None, calling_code: str | None) -> str | None:
    """Twenty's national number + calling code back to one E.164 string."""
    if not number:
        return None
    if number.startswith("+"):
        return number
    digits = _digits_only(number)
    code = _digits_only(calling_code or "")
    return f"+{code}{digits}" if code else digits


def _digits_only(text: str) -> str:
    """`_NOT_DIGITS.sub("", text)`; text that is ASCII digits already (a "+" before them at most: as
    Twenty and the push store numbers and calling codes) is sliced, not searched."""
    rest = text[1:] if text.startswith("+") else text
    return rest if rest.isascii() and rest.isdigit() else _NOT_DIGITS.sub("", text)


def phones_to_list(phones: Mapping[str, Any] | None) -> list[str]:
    if not phones:
        return []
    found = [phone_to_e164(phones.get("primaryPhoneNumber"), phones.get("primaryPhoneCallingCode"))]
    for extra in phones.get("additionalPhones") or []:
        found.append(phone_to_e164(extra.get("number"), extra.get("callingCode")))
    return [p for p in found if p]


def link_url(url: str | None) -> str | None:
    """A website as Twenty takes it: trimmed, with a scheme (the seed passes bare "acme.com"), or None."""
    text = (url or "").strip()
    if text and "://" not in text:
        text = "https://" + text
    return text or None


# What a link must look like for truth-forge to send it: an http(s) URL with a dotted host (or
# localhost) and no spaces. Twenty refuses others ("The URL of the link is not valid").
_LINK = re.compile(r"^https?://(localhost|[^\s/?#.:@]+(\.[^\s/?#.:@]+)+)(:\d{1,5})?([/?#]\S*)?$", re.IGNORECASE)


def is_valid_link(url: str) -> bool:
    return bool(_LINK.fullmatch(url))


def link_value(url: str | None) -> dict[str, Any]:
    return {"primaryLinkUrl": link_url(url), "primaryLinkLabel": None, "secondaryLinks": []}


# json.dumps(value, sort_keys=True, separators=(",", ":"), default=str), six JSON columns a row.
TEXT_JSON = CompactJson(sort_keys=True, ensure_ascii=True, default=str)


def text_value(value: Any) -> Any:
    """TEXT fields hold the seed's JSON columns as strings; dicts and lists are serialised here."""
    if isinstance(value, (dict, list)):
        return TEXT_JSON.encode(value)
    return value


def custom_fields_to_twenty(custom: Mapping[str, Any] | None) -> dict[str, Any]:
    """Rename custom fields to Twenty's names; values must already be in Twenty's form."""
    return {snake_to_camel(k): v for k, v in (custom or {}).items()}


def _passthrough(friendly: Mapping[str, Any]) -> dict[str, Any]:
    # Anything that is not a friendly key is assumed to be in Twenty's own form already (jobTitle, ...).
    return {k: v for k, v in friendly.items() if k not in FRIENDLY_KEYS}


def person_to_twenty(friendly: Mapping[str, Any], *, default_region: str | None = None) -> dict[str, Any]:
    """A friendly person dict (or a Twenty-shaped one) -> a Twenty person body."""
    body = _passthrough(friendly)
    if "name" in friendly:
        body["name"] = split_full_name(friendly["name"])
    if "email" in friendly or "emails" in friendly:
        emails = friendly.get("emails")
        if isinstance(emails, Mapping):  # already Twenty-shaped
            body["emails"] = emails_value(emails.get("primaryEmail"), emails.get("additionalEmails") or [])
        else:
            listed = list(emails or [])
            primary = friendly.get("email") or (listed[0] if listed else None)
            body["emails"] = emails_value(primary, listed)
    if "phone" in friendly or "phones" in friendly:
        phones = friendly.get("phones")
        if isinstance(phones, Mapping):
            body["phones"] = dict(phones)
        else:
            listed = list(phones or [])
            primary = friendly.get("phone") or (listed[0] if listed else None)
            body["phones"] = phones_value(primary, listed, default_region=default_region)
    body.update(custom_fields_to_twenty(friendly.get("customFields")))
    return body


def company_to_twenty(friendly: Mapping[str, Any]) -> dict[str, Any]:
    """A friendly company dict -> a Twenty company body (`domainName` as a URL string is accepted)."""
    body = _passthrough(friendly)
    if "name" in friendly:
        body["name"] = str(friendly["name"] or "")
    if "domainName" in friendly:
        domain = friendly["domainName"]
        body["domainName"] = dict(domain) if isinstance(domain, Mapping) else link_value(domain)
    body.update(custom_fields_to_twenty(friendly.get("customFields")))
    return body


def _custom_from_twenty(record: Mapping[str, Any], custom_field_names: Iterable[str]) -> dict[str, Any]:
    return {camel_to_snake(name): record.get(name) for name in custom_field_names if name in record}


def person_from_twenty(record: Mapping[str, Any], custom_field_names: Iterable[str] = ()) -> dict[str, Any]:
    """A Twenty person -> the friendly form, with `raw` holding the record as Twenty sent it."""
    emails = record.get("emails") or {}
    email_list = [e for e in [emails.get("primaryEmail"), *(emails.get("additionalEmails") or [])] if e]
    phone_list = phones_to_list(record.get("phones"))
    return {
        "id": record.get("id"),
        "name": join_full_name(record.get("name")),
        "email": email_list[0] if email_list else None,
        "emails": email_list,
        "phone": phone_list[0] if phone_list else None,
        "phones": phone_list,
        "customFields": _custom_from_twenty(record, custom_field_names),
        "raw": dict(record),
    }


def company_from_twenty(record: Mapping[str, Any], custom_field_names: Iterable[str] = ()) -> dict[str, Any]:
    domain = record.get("domainName")
    return {
        "id": record.get("id"),
        "name": record.get("name"),
        "domainName": (domain.get("primaryLinkUrl") if isinstance(domain, Mapping) else domain) or None,
        "customFields": _custom_from_twenty(record, custom_field_names),
        "raw": dict(record),
    }
