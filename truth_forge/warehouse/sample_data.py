"""Synthetic but realistic contacts and businesses, generated inside the warehouse engine.

Why it exists: demos, tests and benchmarks need a warehouse with data shaped like the real one
(names, E.164 phones of real numbering plans, category codes A-H and X with subcategories, nested
JSON context) at any size up to millions of rows. The rows are produced by set-based SQL in the
BigQuery dialect (so it runs on both engines) from the row number and the seed: no Python loop per
row, and the same seed gives the same data on every engine. Pseudo-randomness is integer
arithmetic modulo the prime 2^31-1 (MD5/FARM_FINGERPRINT differ between engines).
"""

from __future__ import annotations

import time
import unicodedata
from dataclasses import dataclass

from truth_forge.warehouse.base import Scalar, Warehouse
from truth_forge.warehouse.errors import WarehouseConfigError
from truth_forge.warehouse.schema import INT64

P = 2147483647  # 2^31 - 1: products of two values below it fit in INT64
CHUNK_ROWS = 250_000  # rows per INSERT: bounds engine memory and GENERATE_ARRAY's size

FIRST_NAMES = [
    "Olivia", "Liam", "Emma", "Noah", "Amelia", "Oliver", "Sophia", "Elijah", "Mia", "James",
    "Isabella", "Lucas", "Ava", "Mateo", "Charlotte", "Ethan", "Aisha", "Kenji", "Priya", "Diego",
    "Fatima", "Lukas", "Chloé", "Jonas", "Ingrid", "Tomás", "Yuki", "Omar", "Zoe", "Hannah",
    "Samuel", "Leila", "Marco", "Nora", "Felix", "Amara", "Ravi", "Elena", "Hugo", "Maya",
]
LAST_NAMES = [
    "Smith", "Johnson", "Garcia", "Müller", "Martin", "Rossi", "Nguyen", "Kim", "Patel", "Okafor",
    "Silva", "Schmidt", "Dubois", "Kowalski", "Tanaka", "Hernández", "Brown", "Wilson", "Andersson", "Costa",
    "Novak", "Ivanova", "Haddad", "O'Brien", "Fischer", "Moreau", "Sato", "Singh", "Lopez", "Walker",
]
EMAIL_DOMAINS = ["example.com", "example.org", "example.net", "mail.example.com"]
# (category_code, subcategory_code, relationship_category); repeated entries weight the draw.
CATEGORIES = [
    ("A", "A1_IMMEDIATE_FAMILY", "FAMILY"), ("A", "A2_EXTENDED_FAMILY", "FAMILY"),
    ("B", "B1_BEST_FRIENDS", "FRIEND"), ("B", "B2_CLOSE_FRIENDS", "FRIEND"), ("B", "B3_FRIENDS", "FRIEND"),
    ("C", "C1_CURRENT_COLLEAGUES", "COLLEAGUE"), ("C", "C1_CURRENT_COLLEAGUES", "COLLEAGUE"),
    ("C", "C2_FORMER_COLLEAGUES", "COLLEAGUE"),
    ("D", "D1_CLIENTS", "BUSINESS"), ("D", "D2_VENDORS", "BUSINESS"), ("D", "D3_PARTNERS", "BUSINESS"),
    ("E", "E1_MENTORS", "MENTOR"), ("E", "E2_MENTEES", "MENTOR"),
    ("F", "F1_NEIGHBORS", "COMMUNITY"), ("F", "F2_CLUBS", "COMMUNITY"),
    ("G", "G1_SERVICE_PROVIDERS", "SERVICE"), ("G", "G2_HEALTHCARE", "SERVICE"),
    ("H", "H1_ACQUAINTANCES", "ACQUAINTANCE"), ("H", "H1_ACQUAINTANCES", "ACQUAINTANCE"),
    ("X", "X1_UNCATEGORIZED", "OTHER"),
]
US_AREA_CODES = ["212", "310", "312", "415", "512", "617", "646", "206", "303", "404", "713", "305"]
INTERESTS = ["hiking", "jazz", "startups", "cooking", "chess", "climbing", "film", "gardening", "ai", "travel"]
CHANNELS = ["email", "sms", "call", "whatsapp", "meeting"]
ACTIONS = ["check_in", "send_intro", "share_article", "schedule_call", "birthday_message"]
ROLES = ["Founder", "Engineer", "Manager", "Director", "Consultant", "Advisor", "Sales", "Designer"]
BIZ_PREFIX = ["Northwind", "Blue Harbor", "Cedar", "Lumen", "Atlas", "Silverline", "Kestrel", "Quarry", "Nimbus", "Orchard"]
BIZ_SUFFIX = ["Analytics", "Labs", "Foods", "Logistics", "Health", "Studio", "Partners", "Energy", "Robotics", "Legal"]
INDUSTRIES = ["Software", "Healthcare", "Finance", "Retail", "Manufacturing", "Education", "Energy", "Media", "Legal", "Hospitality"]
BUSINESS_TYPES = ["LLC", "CORPORATION", "PARTNERSHIP", "SOLE_PROPRIETORSHIP", "NONPROFIT"]

# Multipliers giving each field its own draw from the row's mixed value.
_MULT = [16807, 48271, 69621, 39373, 950706376, 742938285, 1583458089, 397204094, 630360016, 1343714438,
         784588716, 1177365393, 2027812854, 1229036813, 1836015163, 520332806]


def _arr(values: list[str]) -> str:
    return "[" + ", ".join("'" + v.replace("'", "\\'") + "'" for v in values) + "]"


def _pick(values: list[str], draw: str) -> str:
    # ORDINAL, not OFFSET: sqlglot 30.30 drops the +1 when it transpiles OFFSET(<column expr>) to DuckDB.
    return f"{_arr(values)}[ORDINAL(MOD({draw}, {len(values)}) + 1)]"


def _mixed_rows(start: str, stop: str, salt: int) -> str:
    """CTEs `g0..g2` ending in `g(id, f0..f15)`: per row, 16 pseudo-random ints in [0, 2^31-1)."""
    draws = ", ".join(f"MOD(x * {m}, {P}) AS f{i}" for i, m in enumerate(_MULT))
    return f"""g0 AS (
  SELECT id, MOD(id * 1103515245 + CAST(@seed AS INT64) * 2654435 + {salt}, {P}) AS x
  FROM UNNEST(GENERATE_ARRAY({start}, {stop})) AS id
),
g1 AS (SELECT g0.id AS id, MOD(g0.x * g0.x + 1013904223, {P}) AS x FROM g0),
g2 AS (SELECT g1.id AS id, MOD(g1.x * g1.x + 362436069, {P}) AS x FROM g1),
g AS (SELECT g2.id AS id, {draws} FROM g2)"""


def _contact_ctes() -> str:
    cat_i = f"MOD(g.f2, {len(CATEGORIES)})"
    return _mixed_rows("@start", "@stop", 17) + f""",
p AS (
  SELECT g.*, {_pick(FIRST_NAMES, 'g.f0')} AS first_name, {_pick(LAST_NAMES, 'g.f1')} AS last_name,
    {cat_i} AS cat_i, {_pick(EMAIL_DOMAINS, 'g.f3')} AS domain
  FROM g
)"""


def _phone(draw_country: str, d1: str, d2: str) -> str:
    # Mobile/geographic ranges that libphonenumber accepts as valid for US, GB, DE and FR.
    return f"""CASE MOD({draw_country}, 4)
      WHEN 0 THEN CONCAT('+1', {_pick(US_AREA_CODES, d1)}, CAST(200 + MOD({d2}, 800) AS STRING),
                         LPAD(CAST(MOD({d1}, 10000) AS STRING), 4, '0'))
      WHEN 1 THEN CONCAT('+447', {_pick(["4", "5", "8"], d1)}, LPAD(CAST(MOD({d2}, 100000000) AS STRING), 8, '0'))
      WHEN 2 THEN CONCAT('+49', {_pick(["151", "152", "157", "176"], d2)}, LPAD(CAST(MOD({d1}, 100000000) AS STRING), 8, '0'))
      ELSE CONCAT('+336', {_pick(["1", "2", "4", "5", "6", "7", "8"], d1)}, LPAD(CAST(MOD({d2}, 10000000) AS STRING), 7, '0'))
    END"""


def contacts_insert() -> str:
    cats, subs, rels = ([c[i] for c in CATEGORIES] for i in range(3))
    return f"""INSERT INTO {{contacts}} (contact_id, canonical_name, category_code, subcategory_code,
  relationship_category, llm_context, communication_stats, social_network, ai_insights, recommendations,
  sync_metadata, updated_at, deleted_at)
WITH {_contact_ctes()}
SELECT p.id AS contact_id, CONCAT(p.first_name, ' ', p.last_name) AS canonical_name,
  {_arr(cats)}[ORDINAL(p.cat_i + 1)] AS category_code, {_arr(subs)}[ORDINAL(p.cat_i + 1)] AS subcategory_code,
  {_arr(rels)}[ORDINAL(p.cat_i + 1)] AS relationship_category,
  TO_JSON(STRUCT(
    CONCAT(p.first_name, ' is a ', LOWER({_arr(rels)}[ORDINAL(p.cat_i + 1)]), ' who likes ',
           {_pick(INTERESTS, 'p.f4')}) AS summary,
    [{_pick(INTERESTS, 'p.f4')}, {_pick(INTERESTS, 'p.f5')}] AS interests,
    ROUND(MOD(p.f6, 1000) / 1000, 3) AS confidence)) AS llm_context,
  TO_JSON(STRUCT(
    MOD(p.f7, 5000) AS total_messages,
    FORMAT_TIMESTAMP('%Y-%m-%d', TIMESTAMP_SUB(TIMESTAMP '2026-01-01 00:00:00+00', INTERVAL MOD(p.f8, 1500) DAY)) AS last_contacted,
    [STRUCT({_pick(CHANNELS, 'p.f9')} AS channel, MOD(p.f10, 400) AS count),
     STRUCT({_pick(CHANNELS, 'p.f11')} AS channel, MOD(p.f12, 100) AS count)] AS channels)) AS communication_stats,
  TO_JSON(STRUCT(MOD(p.f13, 250) AS mutual_connections,
    [CONCAT('cluster_', CAST(MOD(p.f14, 40) AS STRING))] AS clusters)) AS social_network,
  TO_JSON(STRUCT(ROUND(MOD(p.f15, 2001) / 1000 - 1, 3) AS sentiment,
    MOD(p.f3, 101) AS engagement_score)) AS ai_insights,
  TO_JSON([STRUCT({_pick(ACTIONS, 'p.f5')} AS action, 1 + MOD(p.f6, 3) AS priority)]) AS recommendations,
  NULL AS sync_metadata,
  TIMESTAMP_SUB(TIMESTAMP '2026-01-01 00:00:00+00', INTERVAL MOD(p.f8, 31536000) SECOND) AS updated_at,
  CAST(NULL AS TIMESTAMP) AS deleted_at
FROM p"""


def _ascii(expr: str) -> str:
    """Accents folded away in SQL: email handles are ASCII, as Twenty's email validator requires."""
    accented = sorted({c for name in FIRST_NAMES + LAST_NAMES for c in name.lower() if ord(c) > 127})
    for char in accented:
        plain = unicodedata.normalize("NFKD", char).encode("ascii", "ignore").decode()
        expr = f"REPLACE({expr}, '{char}', '{plain}')"
    return expr


def identifiers_insert() -> str:
    handle = _ascii("LOWER(CONCAT(p.first_name, '.', p.last_name, '.', CAST(p.id AS STRING)))")
    return f"""INSERT INTO {{contact_identifiers}} (contact_id, kind, value, is_primary, position, updated_at)
WITH {_contact_ctes()}
SELECT p.id AS contact_id, 'email' AS kind, CONCAT({handle}, '@', p.domain) AS value, TRUE AS is_primary,
  0 AS position, TIMESTAMP '2026-01-01 00:00:00+00' AS updated_at FROM p
UNION ALL
SELECT p.id AS contact_id, 'email' AS kind, CONCAT({handle}, '@work.example.com') AS value, FALSE AS is_primary,
  1 AS position, TIMESTAMP '2026-01-01 00:00:00+00' AS updated_at FROM p WHERE MOD(p.f9, 10) < 3
UNION ALL
SELECT p.id AS contact_id, 'phone' AS kind, {_phone('p.f10', 'p.f11', 'p.f12')} AS value, TRUE AS is_primary,
  0 AS position, TIMESTAMP '2026-01-01 00:00:00+00' AS updated_at FROM p WHERE MOD(p.f13, 100) < 85
UNION ALL
SELECT p.id AS contact_id, 'phone' AS kind, {_phone('p.f14', 'p.f15', 'p.f7')} AS value, FALSE AS is_primary,
  1 AS position, TIMESTAMP '2026-01-01 00:00:00+00' AS updated_at FROM p
  WHERE MOD(p.f13, 100) < 85 AND MOD(p.f0, 10) = 0"""


def links_insert() -> str:
    return f"""INSERT INTO {{contact_businesses}} (contact_id, business_id, role, is_primary, updated_at)
WITH {_contact_ctes()}
SELECT p.id AS contact_id, 1 + MOD(p.f4, @businesses) AS business_id, {_pick(ROLES, 'p.f6')} AS role,
  TRUE AS is_primary, TIMESTAMP '2026-01-01 00:00:00+00' AS updated_at
FROM p WHERE MOD(p.f5, 10) < 6"""


def businesses_insert() -> str:
    prefix, suffix = _pick(BIZ_PREFIX, "g.f0"), _pick(BIZ_SUFFIX, "g.f1")
    return f"""INSERT INTO {{businesses}} (business_id, business_name, website, industry, business_type, llm_context,
  business_data, relationship_stats, sync_metadata, updated_at, deleted_at)
WITH {_mixed_rows("@start", "@stop", 91)}
SELECT g.id AS business_id, CONCAT({prefix}, ' ', {suffix}) AS business_name,
  CONCAT('https://', LOWER(REPLACE(CONCAT({prefix}, {suffix}), ' ', '')), CAST(g.id AS STRING), '.example.com') AS website,
  {_pick(INDUSTRIES, 'g.f2')} AS industry, {_pick(BUSINESS_TYPES, 'g.f3')} AS business_type,
  TO_JSON(STRUCT(CONCAT({prefix}, ' works in ', LOWER({_pick(INDUSTRIES, 'g.f2')})) AS summary)) AS llm_context,
  TO_JSON(STRUCT(10 + MOD(g.f4, 5000) AS employees, 1950 + MOD(g.f5, 75) AS founded_year,
    {_pick(["<1M", "1M-10M", "10M-100M", ">100M"], 'g.f6')} AS revenue_band)) AS business_data,
  TO_JSON(STRUCT(MOD(g.f7, 50) AS contacts, ROUND(MOD(g.f8, 1000) / 1000, 3) AS strength)) AS relationship_stats,
  NULL AS sync_metadata,
  TIMESTAMP_SUB(TIMESTAMP '2026-01-01 00:00:00+00', INTERVAL MOD(g.f9, 31536000) SECOND) AS updated_at,
  CAST(NULL AS TIMESTAMP) AS deleted_at
FROM g"""


@dataclass(frozen=True)
class SampleDataReport:
    contacts: int
    businesses: int
    identifiers: int
    links: int
    seconds: float


def generate_sample_data(
    warehouse: Warehouse, contacts: int, businesses: int, seed: int = 42, *, replace: bool = False
) -> SampleDataReport:
    """Fill the warehouse with `contacts` contacts (ids 1..N) and `businesses` businesses (1..M).

    Refuses to touch a warehouse that already holds contacts or businesses unless `replace`,
    which first empties the four data tables (never the sync bookkeeping).
    """
    for name, value in (("contacts", contacts), ("businesses", businesses), ("seed", seed)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be a non-negative int, got {value!r}")
    data_tables = ("contacts", "contact_identifiers", "contact_businesses", "businesses")
    started = time.perf_counter()
    if warehouse.count_rows("contacts") or warehouse.count_rows("businesses"):
        if not replace:
            raise WarehouseConfigError(
                "the warehouse already holds contacts or businesses; sample data is only written to an "
                "empty warehouse (pass replace=True / --replace to empty the data tables first)"
            )
        for table in data_tables:
            warehouse._run(f"DELETE FROM {{{table}}} WHERE TRUE", ())
    seed_p = Scalar("seed", INT64, seed % P)
    for start in range(1, businesses + 1, CHUNK_ROWS):
        stop = min(start + CHUNK_ROWS - 1, businesses)
        warehouse._run(businesses_insert(), (seed_p, Scalar("start", INT64, start), Scalar("stop", INT64, stop)))
    for start in range(1, contacts + 1, CHUNK_ROWS):
        stop = min(start + CHUNK_ROWS - 1, contacts)
        chunk = (seed_p, Scalar("start", INT64, start), Scalar("stop", INT64, stop))
        warehouse._run(contacts_insert(), chunk)
        warehouse._run(identifiers_insert(), chunk)
        if businesses:
            warehouse._run(links_insert(), (*chunk, Scalar("businesses", INT64, businesses)))
    warehouse.checkpoint()
    return SampleDataReport(
        contacts=warehouse.count_rows("contacts"),
        businesses=warehouse.count_rows("businesses"),
        identifiers=warehouse.count_rows("contact_identifiers"),
        links=warehouse.count_rows("contact_businesses"),
        seconds=round(time.perf_counter() - started, 3),
    )
