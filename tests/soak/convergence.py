"""Do the warehouse and Twenty agree, record by record and field by field? A list of every way they don't.

Why it exists: "the sync converged" has to mean the same thing after a kill, a fault storm and a
load of hostile data. Both sides are read independently of the product code: the DuckDB file (or a
BigQuery dataset, through the official client) with plain SQL (not the warehouse's view), Twenty over plain HTTP (not truth-forge's client), and
compared with this module's own reading of how a value looks on each side:

* names: the warehouse's `canonical_name` with its whitespace collapsed, against first + last name;
* emails: lower-cased and trimmed, as Twenty stores them; the primary, then the additional ones in order;
* phones: digits of the E.164 number against calling code + national number;
* SELECT fields: the option value (`family friend` -> `FAMILY_FRIEND`);
* computed JSON fields: the JSON Twenty holds as text parses back to the warehouse's value;
* company link and website (origin lower-cased, `https://` added to a bare domain, trailing slashes dropped).

Beyond values: every live contact and business is in Twenty exactly once under its key, and the sync
state names that very record; no live Twenty record lacks a key or has one the warehouse does not have
alive; no two state rows share a Twenty id; no live record is left `failed`/`pending`; no error stays open.
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from tests.soak.harness import PlainTwenty

PERSON_JSON = ("llm_context", "communication_stats", "social_network", "ai_insights", "recommendations",
               "sync_metadata")
COMPANY_JSON = ("llm_context", "business_data", "relationship_stats", "sync_metadata")


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


@dataclass(frozen=True)
class Discrepancy:
    """One disagreement. `key` is the warehouse key when known; `crm_id` the Twenty id when known."""

    object_type: str  # person | company | run
    key: str | None
    crm_id: str | None
    field: str
    detail: str

    def __str__(self) -> str:
        who = f"{self.object_type} {self.key or '?'}" + (f" (Twenty {self.crm_id})" if self.crm_id else "")
        detail = self.detail if len(self.detail) <= 300 else self.detail[:297] + "..."
        return f"{who} {self.field}: {detail}"


# --- each side's reading of a value ------------------------------------------------------------


def norm_name(value: Any) -> str:
    return " ".join(str(value or "").split())


def twenty_name(name: Mapping[str, Any] | None) -> str:
    name = name or {}
    return norm_name(f"{name.get('firstName') or ''} {name.get('lastName') or ''}")


def norm_email(value: Any) -> str:
    return str(value or "").strip().lower()


def norm_emails(primary: Any, additional: Iterable[Any]) -> tuple[str, list[str]]:
    first = norm_email(primary)
    rest: list[str] = []
    for extra in additional:
        value = norm_email(extra)
        if value and value != first and value not in rest:
            rest.append(value)
    return first, rest


def digits(value: Any) -> str:
    return re.sub(r"\D", "", str(value or ""))


def twenty_phones(phones: Mapping[str, Any] | None) -> list[str]:
    phones = phones or {}
    found = []
    if phones.get("primaryPhoneNumber"):
        found.append(digits(phones.get("primaryPhoneCallingCode")) + digits(phones["primaryPhoneNumber"]))
    for extra in phones.get("additionalPhones") or []:
        found.append(digits(extra.get("callingCode")) + digits(extra.get("number")))
    return found


def norm_option(value: Any) -> str | None:
    if value is None or not str(value).strip():
        return None
    return re.sub(r"[^A-Z0-9]+", "_", str(value).strip().upper()).strip("_") or None


def norm_text(value: Any) -> str | None:
    return None if value in (None, "") else str(value)


def norm_url(value: Any) -> str:
    """Scheme and host lower-cased, `https://` before a bare domain, trailing slashes dropped."""
    text = str(value or "").strip()
    if not text:
        return ""
    if not re.match(r"^[a-zA-Z][a-zA-Z0-9+.\-]*:", text):
        text = "https://" + text
    match = re.match(r"^([a-zA-Z][a-zA-Z0-9+.\-]*://)([^/?#]*)(.*)$", text, re.DOTALL)
    if match:
        text = match.group(1).lower() + match.group(2).lower() + match.group(3)
    return text.rstrip("/")


def json_matches(warehouse_value: Any, twenty_value: Any) -> bool:
    """A computed field: Twenty holds the warehouse's JSON as text (a plain string as itself)."""
    if warehouse_value is None:
        return twenty_value in (None, "")
    if isinstance(warehouse_value, (dict, list)):
        try:
            return json.loads(twenty_value) == warehouse_value
        except (TypeError, ValueError):
            return False
    return twenty_value == str(warehouse_value)


# --- the warehouse, read with plain SQL --------------------------------------------------------


@dataclass
class WarehouseSide:
    contacts: dict[int, dict[str, Any]]  # every contact, deleted or not, with its identifiers and company
    businesses: dict[int, dict[str, Any]]
    state: dict[tuple[str, str], dict[str, Any]]  # (object_type, record_key) -> sync state row
    open_errors: list[dict[str, Any]]


def _rows(con: duckdb.DuckDBPyConnection, sql: str) -> list[dict[str, Any]]:
    cursor = con.execute(sql)
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row)) for row in cursor.fetchall()]


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def read_warehouse(db_path: Path) -> WarehouseSide:
    con = duckdb.connect(str(db_path), read_only=True)
    try:
        return read_tables(lambda sql: _rows(con, sql))
    finally:
        con.close()


def read_tables(rows: Callable[[str], list[dict[str, Any]]]) -> WarehouseSide:
    """The warehouse's tables through `rows` (plain SQL in, rows as dicts out), whatever the engine."""
    contacts = {r["contact_id"]: r for r in rows("SELECT * FROM contacts")}
    for c in contacts.values():
        c.update(primary_email=None, additional_emails=[], primary_phone=None, additional_phones=[],
                 business_id=None, **{k: _json(c[k]) for k in PERSON_JSON})
    # NULL positions last on every engine (BigQuery sorts NULLs first, DuckDB last).
    for i in rows("SELECT contact_id, kind, value, is_primary FROM contact_identifiers "
                  "ORDER BY contact_id, kind, position IS NULL, position, value"):
        c = contacts.get(i["contact_id"])
        if c is not None and i["kind"] in ("email", "phone"):
            if i["is_primary"]:
                c[f"primary_{i['kind']}"] = i["value"]
            else:
                c[f"additional_{i['kind']}s"].append(i["value"])
    for link in rows("SELECT contact_id, MIN(business_id) AS business_id FROM contact_businesses "
                     "WHERE is_primary GROUP BY contact_id"):
        if link["contact_id"] in contacts:
            contacts[link["contact_id"]]["business_id"] = link["business_id"]
    businesses = {r["business_id"]: {**r, **{k: _json(r[k]) for k in COMPANY_JSON}}
                  for r in rows("SELECT * FROM businesses")}
    state = {(r["object_type"], r["record_key"]): r for r in rows("SELECT * FROM crm_sync_state")}
    # Entries not folded into the state yet (on BigQuery the journal is folded only now and then),
    # laid over it field by field as the sync reads it; entries up to the folded mark are in it.
    kv = {r["key"]: r["value"] for r in rows("SELECT key, value FROM crm_sync_kv")}
    folded = int(kv.get("journal-folded-upto") or 0)
    for entry in rows("SELECT * FROM crm_sync_journal ORDER BY seq"):
        if entry["seq"] > folded:
            key = (entry["object_type"], entry["record_key"])
            laid = state.setdefault(key, {"object_type": key[0], "record_key": key[1]})
            laid.update({f: entry[f] for f in entry["fields"].strip(",").split(",") if f})
    errors = rows("SELECT * FROM crm_sync_errors WHERE resolved_at IS NULL ORDER BY occurred_at")
    return WarehouseSide(contacts, businesses, state, errors)


# --- the comparison ----------------------------------------------------------------------------


def person_differences(contact: Mapping[str, Any], person: Mapping[str, Any],
                       company_key: Mapping[str, str]) -> list[tuple[str, Any, Any]]:
    """(field, warehouse value, Twenty value) for each field on which a contact and its person differ."""
    out = []
    if norm_name(contact["canonical_name"]) != twenty_name(person.get("name")):
        out.append(("name", contact["canonical_name"], person.get("name")))
    emails = person.get("emails") or {}
    want = norm_emails(contact["primary_email"], contact["additional_emails"])
    have = (emails.get("primaryEmail") or "", list(emails.get("additionalEmails") or []))
    if want != have:
        out.append(("emails", want, have))
    want_phones = [digits(p) for p in [contact["primary_phone"], *contact["additional_phones"]] if p]
    if want_phones != twenty_phones(person.get("phones")):
        out.append(("phones", want_phones, person.get("phones")))
    for column in ("category_code", "relationship_category"):
        if norm_option(contact[column]) != person.get(_camel(column)):
            out.append((column, contact[column], person.get(_camel(column))))
    if norm_text(contact["subcategory_code"]) != norm_text(person.get("subcategoryCode")):
        out.append(("subcategory_code", contact["subcategory_code"], person.get("subcategoryCode")))
    for column in PERSON_JSON:
        if not json_matches(contact[column], person.get(_camel(column))):
            out.append((column, contact[column], person.get(_camel(column))))
    linked = company_key.get(person.get("companyId") or "")
    if str(contact["business_id"] or "") != (linked or ""):
        out.append(("company", contact["business_id"], linked))
    return out


def company_differences(business: Mapping[str, Any], company: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    out = []
    if (business["business_name"] or "") != (company.get("name") or ""):
        out.append(("business_name", business["business_name"], company.get("name")))
    domain = company.get("domainName") or {}
    if norm_url(business["website"]) != norm_url(domain.get("primaryLinkUrl")):
        out.append(("website", business["website"], domain.get("primaryLinkUrl")))
    if norm_text(business["industry"]) != norm_text(company.get("industry")):
        out.append(("industry", business["industry"], company.get("industry")))
    if norm_option(business["business_type"]) != company.get("businessType"):
        out.append(("business_type", business["business_type"], company.get("businessType")))
    for column in COMPANY_JSON:
        if not json_matches(business[column], company.get(_camel(column))):
            out.append((column, business[column], company.get(_camel(column))))
    return out


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


class _Pairing:
    """Matches the live rows of one object type with the live Twenty records carrying their key."""

    def __init__(self, object_type: str, key_field: str, rows: Mapping[int, Mapping[str, Any]],
                 records: Sequence[Mapping[str, Any]], state: Mapping[tuple[str, str], Mapping[str, Any]],
                 found: list[Discrepancy]) -> None:
        self.object_type, self.found = object_type, found
        self.live = {str(k): r for k, r in rows.items() if r["deleted_at"] is None}
        by_key: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
        for record in records:
            key = str(record.get(key_field) or "")
            if not key:
                self.add(None, record["id"], key_field, "live in Twenty with no key (never written back?)")
            else:
                by_key[key].append(record)
        self.pairs: list[tuple[str, Mapping[str, Any], Mapping[str, Any]]] = []
        for key, matches in by_key.items():
            if len(matches) > 1:
                self.add(key, None, "duplicate", f"{len(matches)} live Twenty records: {[m['id'] for m in matches]}")
            if key not in self.live:
                gone = "deleted in" if key.lstrip("-").isdigit() and int(key) in rows else "missing from"
                self.add(key, matches[0]["id"], "exists", f"live in Twenty, {gone} the warehouse")
        for key, row in self.live.items():
            matches = by_key.get(key, [])
            if not matches:
                self.add(key, None, "exists", "live in the warehouse, not in Twenty")
                continue
            record = matches[0]
            self.pairs.append((key, row, record))
            status = state.get((object_type, key), {})
            if status.get("crm_id") != record["id"]:
                self.add(key, record["id"], "sync_state", f"names Twenty id {status.get('crm_id')!r}")
            if status.get("status") != "synced":
                self.add(key, record["id"], "sync_state", f"status {status.get('status')!r}, not 'synced'")
        crm_ids = Counter(s["crm_id"] for (obj, _), s in state.items() if obj == object_type and s.get("crm_id"))
        for crm_id, n in crm_ids.items():
            if n > 1:
                keys = sorted(k for (obj, k), s in state.items() if obj == object_type and s.get("crm_id") == crm_id)
                self.add(None, crm_id, "duplicate", f"{n} warehouse rows claim this Twenty record: {keys}")

    def add(self, key: str | None, crm_id: str | None, field: str, detail: str) -> None:
        self.found.append(Discrepancy(self.object_type, key, crm_id, field, detail))


def compare(side: WarehouseSide, people: Sequence[Mapping[str, Any]],
            companies: Sequence[Mapping[str, Any]]) -> list[Discrepancy]:
    found: list[Discrepancy] = []
    company_pairs = _Pairing("company", "businessId", side.businesses, companies, side.state, found)
    for key, business, company in company_pairs.pairs:
        for field, want, have in company_differences(business, company):
            company_pairs.add(key, company["id"], field, f"warehouse {_short(want)} != Twenty {_short(have)}")
    company_key = {c["id"]: str(c.get("businessId") or "") for c in companies}
    person_pairs = _Pairing("person", "contactId", side.contacts, people, side.state, found)
    for key, contact, person in person_pairs.pairs:
        if contact["business_id"] is not None and str(contact["business_id"]) not in company_pairs.live:
            contact = {**contact, "business_id": None}  # a deleted company: Twenty shows no link
        for field, want, have in person_differences(contact, person, company_key):
            person_pairs.add(key, person["id"], field, f"warehouse {_short(want)} != Twenty {_short(have)}")
    for error in side.open_errors:
        found.append(Discrepancy(error["object_type"] or "run", error["record_key"], error["crm_id"], "open_error",
                                 f"{error['operation']}: {error['error_message']}"))
    return found


def check_convergence(db_path: Path, twenty: PlainTwenty, *, live_people: int | None = None,
                      live_companies: int | None = None) -> list[Discrepancy]:
    """Every discrepancy between the DuckDB warehouse at `db_path` and Twenty; [] means converged.

    `live_people` / `live_companies`: how many live records the caller's own bookkeeping expects (catches
    a record copied twice under two keys, which key-by-key pairing alone would take for two records).
    """
    return check_side(read_warehouse(db_path), twenty, live_people=live_people, live_companies=live_companies)


def check_side(side: WarehouseSide, twenty: PlainTwenty, *, live_people: int | None = None,
               live_companies: int | None = None) -> list[Discrepancy]:
    """`check_convergence` for a warehouse already read (`read_tables`, e.g. from BigQuery)."""
    people, companies = twenty.records("people"), twenty.records("companies")
    found = compare(side, people, companies)
    for object_type, expected, have in (("person", live_people, people), ("company", live_companies, companies)):
        if expected is not None and len(have) != expected:
            found.append(Discrepancy(object_type, None, None, "count", f"{len(have)} live in Twenty, expected {expected}"))
    return found


def summarize(found: Sequence[Discrepancy], limit: int = 25) -> str:
    lines = [str(d) for d in found[:limit]]
    if len(found) > limit:
        lines.append(f"... and {len(found) - limit} more")
    return "\n".join(lines)
