"""Every SQL statement of the warehouse, written once in the BigQuery dialect.

Why it exists: one text per operation serves both engines (BigQuery runs it as is, DuckDB runs the
sqlglot transpilation), so the two backends cannot drift apart. The statements follow the rules
that keep them valid on real BigQuery and on bqemulator: explicit column lists (no INSERT ROW),
aliased STRUCT and UNNEST fields, timestamps formatted explicitly inside hashes, no FARM_FINGERPRINT,
and MERGE sources de-duplicated (in `validate.py`) before they are sent.

Placeholders, filled by `Warehouse._render`:
  {contacts}, {crm_sync_state}, ...  the table references (renamable)
  {rows_NAME}                         a batch of rows: `UNNEST(@NAME)` on BigQuery, an Arrow view on DuckDB
  {keys_NAME}                         a key set for `x IN {keys_NAME}`: `UNNEST(@NAME)` / `(SELECT ...)`
  @NAME                               a scalar query parameter
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any, Literal

from truth_forge.warehouse.binds import Bind, RowSet, Scalar
from truth_forge.warehouse.schema import (
    BUSINESS_JSON_COLUMNS,
    CONTACT_JSON_COLUMNS,
    CRM_SYNC_STATE,
    INT64,
    JSON,
    STRING,
    TIMESTAMP,
)

# The sync state's columns other than its key (what a journal entry may set).
STATE_VALUE_COLUMNS = tuple(c for c in CRM_SYNC_STATE.column_names if c not in ("object_type", "record_key"))

TS_FORMAT = "%Y-%m-%dT%H:%M:%SZ"

# The CRM-facing view: what a sync pushes, and therefore what the row hash covers.
CONTACT_VIEW_COLUMNS: tuple[str, ...] = (
    "contact_id",
    "canonical_name",
    "primary_email",
    "additional_emails",
    "primary_phone",
    "additional_phones",
    "category_code",
    "subcategory_code",
    "relationship_category",
    *CONTACT_JSON_COLUMNS,
    "business_id",
    "deleted_at",
)
BUSINESS_VIEW_COLUMNS: tuple[str, ...] = (
    "business_id",
    "business_name",
    "website",
    "industry",
    "business_type",
    *BUSINESS_JSON_COLUMNS,
    "deleted_at",
)
VIEW_JSON_COLUMNS = frozenset(CONTACT_JSON_COLUMNS) | frozenset(BUSINESS_JSON_COLUMNS)
# The view columns without the JSON ones: what `narrow_select` reads (the JSON is most of a row's bytes).
NARROW_VIEW_COLUMNS: dict[str, tuple[str, ...]] = {
    "person": tuple(c for c in CONTACT_VIEW_COLUMNS if c not in VIEW_JSON_COLUMNS),
    "company": tuple(c for c in BUSINESS_VIEW_COLUMNS if c not in VIEW_JSON_COLUMNS),
}
VIEW_LIST_COLUMNS = frozenset({"additional_emails", "additional_phones"})


def _hash_expr(alias: str, columns: Sequence[str]) -> str:
    # Explicit STRUCT aliases (bqemulator drops unaliased names) and an explicit timestamp format
    # (engines print timestamps differently) keep the hash stable within and across engines.
    fields = ", ".join(
        f"FORMAT_TIMESTAMP('{TS_FORMAT}', {alias}.{c}) AS {c}" if c == "deleted_at" else f"{alias}.{c} AS {c}"
        for c in columns
    )
    return f"TO_HEX(MD5(TO_JSON_STRING(STRUCT({fields}))))"


def _output_columns(alias: str, columns: Sequence[str]) -> str:
    # JSON leaves the engine as text on both engines, parsed once in Python: engines and emulators
    # disagree on how they type JSON results, text they all agree on.
    return ", ".join(
        f"TO_JSON_STRING({alias}.{c}) AS {c}" if c in VIEW_JSON_COLUMNS else f"{alias}.{c} AS {c}"
        for c in columns
    )


# Which rows a view reads: every row, the keys of a key set ({keys_keys}), one key range
# (@range_lo <= key <= @range_hi, both bounds inclusive INT64 parameters), or rows found by their
# `updated_at`, the wide tables' first clustering column, which a constant filter prunes on
# (warehouse/detection.py): "stamped", keys whose rows carry one of the stamps {keys_stamps};
# "candidates", keys whose rows were stamped at or after @since, or carry one of the older stamps.
Scope = Literal["all", "keys", "range", "stamped", "candidates"]


def _key_filter(column: str, scope: Scope) -> str:
    if scope in ("keys", "stamped", "candidates"):
        return f"{column} IN {{keys_keys}}"
    if scope == "range":
        return f"{column} BETWEEN @range_lo AND @range_hi"
    return ""


def _wide_rows(table: str, alias: str, key: str, scope: Scope) -> str:
    """The FROM of a wide table (contacts, businesses) for a scope. Candidates are read in two
    scans, each with a constant filter on updated_at: the recent rows by a range (the blocks of the
    last minutes), the few older ones (retried, or changed through another table) by their stamps."""
    if scope == "all":
        return f"{{{table}}} AS {alias}"
    if scope == "candidates":
        return (f"(SELECT w1.* FROM {{{table}}} AS w1 WHERE w1.{key} IN {{keys_keys}} AND w1.updated_at >= @since\n"
                f"   UNION ALL SELECT w2.* FROM {{{table}}} AS w2 WHERE w2.{key} IN {{keys_keys}}\n"
                f"     AND w2.updated_at IN {{keys_stamps}} AND w2.updated_at < @since) AS {alias}")
    stamp = f" AND {alias}.updated_at IN {{keys_stamps}}" if scope == "stamped" else ""
    return f"{{{table}}} AS {alias} WHERE {_key_filter(f'{alias}.{key}', scope)}{stamp}"


def contact_view_ctes(scope: Scope = "all", *, with_json: bool = True) -> str:
    """CTEs ending in `h`: one row per contact, CRM-facing columns, `updated_at` and `row_hash`;
    without the JSON columns and the hash (which covers them) unless `with_json`.

    Every table is filtered by the scope on its own (not only through the join), so a key range
    reads the identifiers and links of that range alone: the aggregation stays range-sized.
    """
    contacts = _wide_rows("contacts", "c0", "contact_id", scope)
    and_i = f"AND {_key_filter('i.contact_id', scope)}" if scope != "all" else ""
    and_l = f"AND {_key_filter('l.contact_id', scope)}" if scope != "all" else ""
    jsons = CONTACT_JSON_COLUMNS if with_json else ()
    json_cols = "".join(f" c.{c} AS {c}," for c in jsons)
    hashed = f"v.*, {_hash_expr('v', CONTACT_VIEW_COLUMNS)} AS row_hash" if with_json else "v.*"
    return f"""
c AS (
  SELECT c0.contact_id AS contact_id, c0.canonical_name AS canonical_name,
    c0.category_code AS category_code, c0.subcategory_code AS subcategory_code,
    c0.relationship_category AS relationship_category,{"".join(f" c0.{c} AS {c}," for c in jsons)}
    c0.updated_at AS updated_at, c0.deleted_at AS deleted_at,
    COUNT(*) OVER (PARTITION BY c0.contact_id) AS copies
  FROM {contacts}
),
ids AS (
  SELECT i.contact_id AS contact_id,
    MAX(IF(i.kind = 'email' AND i.is_primary, i.value, NULL)) AS primary_email,
    ARRAY_AGG(IF(i.kind = 'email' AND NOT i.is_primary, i.value, NULL) IGNORE NULLS
              ORDER BY i.position, i.value) AS additional_emails,
    MAX(IF(i.kind = 'phone' AND i.is_primary, i.value, NULL)) AS primary_phone,
    ARRAY_AGG(IF(i.kind = 'phone' AND NOT i.is_primary, i.value, NULL) IGNORE NULLS
              ORDER BY i.position, i.value) AS additional_phones
  FROM {{contact_identifiers}} AS i
  WHERE i.kind IN ('email', 'phone') {and_i}
  GROUP BY i.contact_id
),
biz AS (
  SELECT l.contact_id AS contact_id, MIN(l.business_id) AS business_id
  FROM {{contact_businesses}} AS l
  WHERE l.is_primary {and_l}
  GROUP BY l.contact_id
),
v AS (
  SELECT c.contact_id AS contact_id, c.canonical_name AS canonical_name,
    ids.primary_email AS primary_email, ids.additional_emails AS additional_emails,
    ids.primary_phone AS primary_phone, ids.additional_phones AS additional_phones,
    c.category_code AS category_code, c.subcategory_code AS subcategory_code,
    c.relationship_category AS relationship_category,{json_cols}
    biz.business_id AS business_id, c.deleted_at AS deleted_at, c.updated_at AS updated_at, c.copies AS copies
  FROM c
  LEFT JOIN ids ON ids.contact_id = c.contact_id
  LEFT JOIN biz ON biz.contact_id = c.contact_id
),
h AS (
  SELECT {hashed} FROM v
)"""


def business_view_ctes(scope: Scope = "all", *, with_json: bool = True) -> str:
    """CTEs ending in `h`: one row per business, CRM-facing columns, `updated_at` and `row_hash`;
    without the JSON columns and the hash unless `with_json`."""
    businesses = _wide_rows("businesses", "b", "business_id", scope)
    cols = ", ".join(f"b.{c} AS {c}" for c in BUSINESS_VIEW_COLUMNS if with_json or c not in BUSINESS_JSON_COLUMNS)
    hashed = f"v.*, {_hash_expr('v', BUSINESS_VIEW_COLUMNS)} AS row_hash" if with_json else "v.*"
    return f"""
v AS (
  SELECT {cols}, b.updated_at AS updated_at, COUNT(*) OVER (PARTITION BY b.business_id) AS copies
  FROM {businesses}
),
h AS (
  SELECT {hashed} FROM v
)"""


def view_select(object_type: str, scope: Scope) -> str:
    """The CRM-facing rows of a scope (`candidates`: given keys found by their stamps)."""
    ctes, cols, key = _view_parts(object_type, scope)
    return (f"WITH {ctes}\nSELECT {_output_columns('h', cols)}, h.updated_at AS updated_at, h.row_hash AS row_hash, "
            f"h.copies AS copies FROM h ORDER BY h.{key}")


def narrow_select(object_type: str, scope: Scope) -> str:
    """The CRM-facing rows of a scope without their JSON columns and hash: the values Twenty edits,
    for a reader that needs no more (the JSON is most of a contact's bytes)."""
    if object_type == "person":
        ctes, key = contact_view_ctes(scope, with_json=False), "contact_id"
    else:
        ctes, key = business_view_ctes(scope, with_json=False), "business_id"
    return (f"WITH {ctes}\nSELECT {_output_columns('h', NARROW_VIEW_COLUMNS[object_type])}, h.updated_at AS updated_at, h.copies AS copies "
            f"FROM h ORDER BY h.{key}")


def hash_select(object_type: str, scope: Scope) -> str:
    ctes, _cols, key = _view_parts(object_type, scope)
    return f"WITH {ctes}\nSELECT h.{key} AS record_key, h.row_hash AS row_hash, h.updated_at AS updated_at FROM h"


def journal_fields(where: str, columns: Sequence[str] = STATE_VALUE_COLUMNS, alias: str = "j",
                   having: str = "") -> str:
    """Per key, each field's value from the latest journal entry that set it, and whether any did
    (`set_<field>`), over the entries `where` keeps (a condition on `alias`); `having` keeps keys."""
    picks = []
    for c in columns:
        at = f"IF(STRPOS({alias}.fields, ',{c},') > 0, {alias}.seq, NULL)"
        picks.append(f"MAX_BY(STRUCT({alias}.{c} AS v), {at}).v AS {c}")
        picks.append(f"MAX({at}) IS NOT NULL AS set_{c}")
    return (f"SELECT {alias}.object_type AS object_type, {alias}.record_key AS record_key, {', '.join(picks)}\n"
            f"FROM {{crm_sync_journal}} AS {alias} WHERE {where} "
            f"GROUP BY {alias}.object_type, {alias}.record_key{f' HAVING {having}' if having else ''}")


def state_with_journal(state_where: str, journal_where: str, columns: Sequence[str]) -> str:
    """The state of some records as it is now: the state table's rows (`state_where`, on alias `s1`)
    with the journal's entries not folded yet (seq > @folded, and `journal_where` on alias `j1`)
    laid over them field by field. Columns: record_key and `columns` (JSON ones as JSON)."""
    picks = ", ".join(f"IF(jx.set_{c} IS TRUE, jx.{c}, sx.{c}) AS {c}" for c in columns)
    return f"""SELECT COALESCE(sx.record_key, jx.record_key) AS record_key, {picks}
  FROM (SELECT s1.record_key AS record_key, {', '.join(f's1.{c} AS {c}' for c in columns)}
        FROM {{crm_sync_state}} AS s1 WHERE {state_where}) AS sx
  FULL OUTER JOIN ({journal_fields(f"j1.seq > @folded AND {journal_where}", columns, "j1")}) AS jx
  ON jx.record_key = sx.record_key"""



def changed_select(object_type: str, scope: Scope = "range") -> str:
    """Rows whose hash differs from the recorded one, that have no state yet, or whose push failed,
    in key order; with the default scope, only those of one key range (@range_lo..@range_hi).

    A soft-deleted row that was never synced is skipped: there is nothing in the CRM to delete.
    The sync state is cut to the same range before the join (record_key is the key as text), so
    the join's build side is range-sized too.
    """
    ctes, cols, key = _view_parts(object_type, scope)
    state_range = (f"AND {_key_filter('SAFE_CAST(s0.record_key AS INT64)', scope)}" if scope == "range"
                   # By the key as stored (text): a constant filter on the clustering column.
                   else "AND s0.record_key IN {keys_skeys}" if scope == "candidates" else "")
    # Candidates carry their whole state (read by key: a few blocks); the audit, reading the whole
    # state table, leaves the merge base out (the widest column, and most rows it reads are unchanged).
    columns = STATE_CARRIED if scope == "candidates" else tuple(c for c in STATE_CARRIED if c != "base")
    state_cols = ", ".join(f"TO_JSON_STRING(s0.{c}) AS {c}" if c == "base" else f"s0.{c} AS {c}" for c in columns)
    state_source = f"{{crm_sync_state}} AS s0\n  WHERE s0.object_type = @object_type {state_range}"
    company_source = "{crm_sync_state} AS c1 WHERE c1.object_type = 'company'"
    if scope == "candidates":
        # The state as it is now: the journal's entries not folded yet laid over the table's rows
        # (on BigQuery the journal is folded only now and then: warehouse/state_journal.py).
        by_key = "{0}.object_type = @object_type AND {0}.record_key IN {{keys_skeys}}"
        now = state_with_journal(by_key.format("s1"), by_key.format("j1"), columns)
        state_source = f"({now}) AS s0"
        companies = state_with_journal("s1.object_type = 'company'", "j1.object_type = 'company'", ("crm_id", "status"))
        company_source = f"({companies}) AS c1"
    carried = ", ".join(f"s.{c} AS state_{c}" for c in columns)
    # A person carries its company's Twenty id too (the push links by it): the company part of the
    # state, three narrow columns, read once with the candidates instead of once per batch.
    company_cte = company_cols = company_join = ""
    if object_type == "person":
        company_cte = f""",
cs AS (
  SELECT c1.record_key AS record_key, c1.crm_id AS crm_id, c1.status AS status
  FROM {company_source}
)"""
        company_cols = (",\n  cs.record_key AS company_state_key, cs.crm_id AS company_crm_id, "
                        "cs.status AS company_status")
        company_join = "\nLEFT JOIN cs ON cs.record_key = CAST(h.business_id AS STRING)"
    return f"""WITH {ctes},
s AS (
  SELECT s0.record_key AS record_key, {state_cols}
  FROM {state_source}
){company_cte}
SELECT {_output_columns('h', cols)}, h.updated_at AS updated_at, h.row_hash AS row_hash, h.copies AS copies,
  s.crm_id AS crm_id, s.status AS sync_status, s.warehouse_hash AS synced_hash,
  s.record_key AS state_record_key, {carried}{company_cols}
FROM h
LEFT JOIN s ON s.record_key = CAST(h.{key} AS STRING){company_join}
WHERE (s.record_key IS NULL AND h.deleted_at IS NULL)
   OR (s.record_key IS NOT NULL AND (
        s.warehouse_hash IS NULL OR s.warehouse_hash != h.row_hash
        OR s.status IN ('failed', 'pending')))
ORDER BY h.{key}"""


# The sync state a change-detection row carries along (`state_<name>`), so that the push reads
# no state for the rows detection hands it (warehouse/state_journal.py keeps them).
STATE_CARRIED = ("crm_id", "warehouse_hash", "crm_hash", "crm_updated_at", "last_synced_at", "status",
                 "attempts", "last_error", "base")


def candidate_keys_select(object_type: str) -> str:
    """Keys whose narrow tables changed since @since: a person's emails, phones and company links
    (their contacts row may be older). Reads each table's key and updated_at columns."""
    if object_type != "person":
        return ""
    return """SELECT i.contact_id AS k FROM {contact_identifiers} AS i WHERE i.updated_at >= @since
UNION DISTINCT
SELECT l.contact_id AS k FROM {contact_businesses} AS l WHERE l.updated_at >= @since"""


def stamps_select(object_type: str, by: Literal["since", "keys"]) -> str:
    """(key, updated_at) of the wide rows changed since @since (a pruned read, the table being
    clustered by updated_at), or of given keys (their stamps, to find their rows pruned later)."""
    table, key = ("contacts", "contact_id") if object_type == "person" else ("businesses", "business_id")
    where = "w.updated_at >= @since" if by == "since" else f"w.{key} IN {{keys_keys}}"
    return f"SELECT w.{key} AS k, w.updated_at AS stamp FROM {{{table}}} AS w WHERE {where}"


def range_bounds_select(object_type: str) -> str:
    """Every @range_rows-th key in key order: the upper bounds of ranges of @range_rows rows.

    Reads the key column alone (8 bytes a row), so sizing the ranges costs a sort of the keys,
    not of the rows; the rows after the last bound form the last range.
    """
    table, key = ("contacts", "contact_id") if object_type == "person" else ("businesses", "business_id")
    return f"""SELECT r.k AS k FROM (
  SELECT x.{key} AS k, ROW_NUMBER() OVER (ORDER BY x.{key}) AS rn FROM {{{table}}} AS x
) AS r
WHERE MOD(r.rn, @range_rows) = 0
ORDER BY r.k"""


def _view_parts(object_type: str, scope: Scope) -> tuple[str, tuple[str, ...], str]:
    if object_type == "person":
        return contact_view_ctes(scope), CONTACT_VIEW_COLUMNS, "contact_id"
    return business_view_ctes(scope), BUSINESS_VIEW_COLUMNS, "business_id"


def source_select(source: str, columns: Sequence[tuple[str, str]]) -> str:
    """`SELECT r.a AS a, ... FROM {rows_source} AS r`, JSON arriving as text and parsed in SQL."""
    cols = ", ".join(
        f"PARSE_JSON(r.{name}) AS {name}" if type_ == "JSON" else f"r.{name} AS {name}"
        for name, type_ in columns
    )
    return f"SELECT {cols} FROM {{rows_{source}}} AS r"


def insert_select(table: str, columns: Sequence[tuple[str, str]], rows: Sequence[Mapping[str, Any]], *,
                  never_shared: Collection[str] = ()) -> tuple[str, tuple[Bind, ...]]:
    """`INSERT INTO table (columns...)` of these rows (at least one), as `source_select` reads them,
    and its binds. A text, integer or timestamp column that every row holds the same value in (a
    push's object type, status, run id, the time its answer was taken in) is bound once as a
    parameter instead of a list with a copy per row: DuckDB converts each value of a list parameter
    and unnests each list, which is most of what a save of a push's request costs (a timestamp the
    most). The same rows are stored. `never_shared`: columns that differ row by row (keys), not
    worth the look."""
    first = rows[0]
    shared = {n for n, t in columns
              if t in (STRING, INT64, TIMESTAMP) and n not in never_shared and _one_value(first[n], n, rows)}
    if len(shared) == len(columns):
        shared.discard(columns[0][0])  # one list at least: the rows' count is the lists' length
    listed = [(n, t) for n, t in columns if n not in shared]
    picks = [f"@{_SHARED}{n} AS {n}" if n in shared else f"PARSE_JSON(r.{n}) AS {n}" if t == JSON else f"r.{n} AS {n}"
             for n, t in columns]
    sql = (f"INSERT INTO {table} ({', '.join(n for n, _ in columns)}) SELECT {', '.join(picks)} "
           "FROM {rows_rows} AS r")
    return sql, (RowSet("rows", listed, rows), *(Scalar(_SHARED + n, t, first[n]) for n, t in columns if n in shared))


_SHARED = "shared_"  # the parameter names of the values an INSERT's rows share


def _one_value(value: Any, name: str, rows: Sequence[Mapping[str, Any]]) -> bool:
    """Whether every row holds `value` in `name`, of the same type (True is not 1, 0 is not None)."""
    kind = type(value)
    return all(r[name] == value and type(r[name]) is kind for r in rows)


def upsert_merge(
    table: str,
    key: Sequence[str],
    columns: Sequence[tuple[str, str]],
    *,
    touch_updated_at: bool,
    source: str = "rows",
) -> str:
    """MERGE a batch into `table` on `key`, updating only the given columns.

    `updated_at` is set to now unless the batch gives it, so the table says when a row last changed.
    """
    names = [n for n, _ in columns]
    non_key = [n for n in names if n not in key]
    sets = [f"{n} = s.{n}" for n in non_key]
    ins_cols, ins_vals = list(names), [f"s.{n}" for n in names]
    if touch_updated_at and "updated_at" not in names:
        sets.append("updated_at = CURRENT_TIMESTAMP()")
        ins_cols.append("updated_at")
        ins_vals.append("CURRENT_TIMESTAMP()")
    on = " AND ".join(f"t.{k} = s.{k}" for k in key)
    matched = f"WHEN MATCHED THEN UPDATE SET {', '.join(sets)}\n" if sets else ""
    return f"""MERGE {{{table}}} AS t
USING ({source_select(source, columns)}) AS s
ON {on}
{matched}WHEN NOT MATCHED THEN INSERT ({", ".join(ins_cols)}) VALUES ({", ".join(ins_vals)})"""


def insert_rows(table: str, columns: Sequence[tuple[str, str]], *, source: str = "rows") -> str:
    """INSERT a batch as new rows of `table`, stamped now (no MERGE: nothing to match, no table read)."""
    names = [n for n, _ in columns]
    return (f"INSERT INTO {{{table}}} ({', '.join(names)}, updated_at) "
            f"SELECT {', '.join(f's.{n}' for n in names)}, CURRENT_TIMESTAMP() FROM ({source_select(source, columns)}) AS s")


def identifiers_merge(kinds: Sequence[str]) -> str:
    """Replace the given kinds (email and/or phone) of the batch's contacts with the source rows."""
    kind_list = ", ".join(f"'{k}'" for k in kinds)  # from a fixed vocabulary, never user input
    columns = [("contact_id", "INT64"), ("kind", "STRING"), ("value", "STRING"), ("is_primary", "BOOL"), ("position", "INT64")]
    return f"""MERGE {{contact_identifiers}} AS t
USING ({source_select("ids", columns)}) AS s
ON t.contact_id = s.contact_id AND t.kind = s.kind AND t.value = s.value
WHEN MATCHED THEN UPDATE SET is_primary = s.is_primary, position = s.position, updated_at = CURRENT_TIMESTAMP()
WHEN NOT MATCHED THEN INSERT (contact_id, kind, value, is_primary, position, updated_at)
  VALUES (s.contact_id, s.kind, s.value, s.is_primary, s.position, CURRENT_TIMESTAMP())
WHEN NOT MATCHED BY SOURCE AND t.kind IN ({kind_list}) AND t.contact_id IN {{keys_batch}} THEN DELETE"""


# The person's company: the given link becomes primary; a former primary link is kept but demoted,
# so nothing the warehouse knew about past relationships is lost.
PRIMARY_LINK_MERGE = f"""MERGE {{contact_businesses}} AS t
USING ({source_select("links", [("contact_id", "INT64"), ("business_id", "INT64")])}) AS s
ON t.contact_id = s.contact_id AND t.business_id = s.business_id
WHEN MATCHED THEN UPDATE SET is_primary = TRUE, updated_at = CURRENT_TIMESTAMP()
WHEN NOT MATCHED THEN INSERT (contact_id, business_id, role, is_primary, updated_at)
  VALUES (s.contact_id, s.business_id, NULL, TRUE, CURRENT_TIMESTAMP())
WHEN NOT MATCHED BY SOURCE AND t.is_primary AND t.contact_id IN {{keys_batch}}
  THEN UPDATE SET is_primary = FALSE, updated_at = CURRENT_TIMESTAMP()"""


def soft_delete_update(table: str, key: str) -> str:
    return f"""UPDATE {{{table}}} AS t
SET deleted_at = COALESCE(@deleted_at, CURRENT_TIMESTAMP()), updated_at = CURRENT_TIMESTAMP()
WHERE t.{key} IN {{keys_keys}} AND t.deleted_at IS NULL"""


# Ids handed out for CRM-created records stay below this (2**53: exact in every JSON reader). A
# warehouse id above it (9223372036854775807, say) is left alone: counting on from it would overflow.
ALLOCATION_CEILING = 2**53


def allocate_merge(table: str, key: str, seq_name: str, count: int) -> str:
    """Advance the id sequence past both its last value and the table's largest id below the ceiling.

    `count` is a validated int, inlined so the statement can run inside a parameter-free script.
    """
    return f"""MERGE {{crm_sync_kv}} AS t
USING (SELECT '{seq_name}' AS key,
              (SELECT COALESCE(MAX(x.{key}), 0) FROM {{{table}}} AS x
               WHERE x.{key} < {ALLOCATION_CEILING}) AS max_id) AS s
ON t.key = s.key
WHEN MATCHED THEN UPDATE SET
  value = CAST(GREATEST(COALESCE(SAFE_CAST(t.value AS INT64), 0), s.max_id) + {int(count)} AS STRING),
  updated_at = CURRENT_TIMESTAMP()
WHEN NOT MATCHED THEN INSERT (key, value, updated_at)
  VALUES (s.key, CAST(s.max_id + {int(count)} AS STRING), CURRENT_TIMESTAMP())"""


def kv_select(seq_name: str) -> str:
    return f"SELECT t.value AS value FROM {{crm_sync_kv}} AS t WHERE t.key = '{seq_name}'"


# The records with open errors (by key, or by Twenty id alone).
OPEN_ERROR_RECORDS = """SELECT DISTINCT e.object_type AS object_type, e.record_key AS record_key, e.crm_id AS crm_id
FROM {crm_sync_errors} AS e WHERE e.resolved_at IS NULL"""

# An open error closes once its record is saved clean (synced or deleted, no error) by this run
# (matched by key, or by Twenty id for pull errors that never got a key; the keys come from the
# run's folded journal and its direct saves, state_journal.py); a run-level error (no key, no Twenty id) closes with a
# later run that succeeded; an error seen again is superseded by this run's newer row (one open row
# per record and operation; the older rows stay as its history). No clock decides: an error stamped
# by a clock that ran ahead closes like any other. One statement per run, reading the errors table
# once; a killed run's closings are done by the next one.
CLOSE_SETTLED_ERRORS = """UPDATE {crm_sync_errors} AS e
SET resolved_at = CURRENT_TIMESTAMP()
WHERE e.resolved_at IS NULL AND (
  (e.object_type = 'person' AND e.record_key IN {keys_clean_person})
  OR (e.object_type = 'company' AND e.record_key IN {keys_clean_company})
  OR (e.record_key IS NULL AND e.crm_id IN {keys_clean_ids})
  OR (e.record_key IS NULL AND e.crm_id IS NULL AND @run_succeeded AND COALESCE(e.run_id, '') != @run_id)
  OR (COALESCE(e.record_key, e.crm_id) IS NOT NULL AND EXISTS (
        SELECT 1 FROM {crm_sync_errors} AS n
        WHERE n.run_id = @run_id AND n.object_type = e.object_type AND n.operation = e.operation
          AND COALESCE(n.record_key, CONCAT('crm:', n.crm_id)) = COALESCE(e.record_key, CONCAT('crm:', e.crm_id))
          AND (COALESCE(e.run_id, '') != @run_id OR n.occurred_at > e.occurred_at))))"""


# --- the writer lease (truth_forge/core/lease.py) -------------------------------------------------------
# The row is created once by an insert-only MERGE (a duplicate from a race is harmless: every
# statement below treats all rows of a name alike). Claiming is one conditional UPDATE, so of two
# writers racing for a free or expired lease only one sees its owner in the row afterwards. Times
# come from the engine's clock, never from the callers', so two machines cannot disagree on expiry.
# Every grant (a claim that is not the holder re-claiming its live lease) moves `token` on, and a
# renewal must name the token it holds: a holder paused past its expiry, whose lease was granted to
# another meanwhile, can no longer renew, and so can no longer write (the fence in core/lease.py).

LEASE_ENSURE_ROW = """MERGE {crm_sync_leases} AS t
USING (SELECT @name AS name) AS s
ON t.name = s.name
WHEN NOT MATCHED THEN INSERT (name, owner, acquired_at, expires_at, updated_at, token, renewed_at)
  VALUES (s.name, NULL, NULL, NULL, CURRENT_TIMESTAMP(), 0, NULL)"""


def lease_claim(ttl_ms: int) -> str:
    """Take the lease when it is free, expired or already ours; `ttl_ms` is a validated int."""
    return f"""UPDATE {{crm_sync_leases}} AS t
SET owner = @owner,
  acquired_at = IF(t.owner = @owner AND t.expires_at > CURRENT_TIMESTAMP(), t.acquired_at, CURRENT_TIMESTAMP()),
  token = IF(t.owner = @owner AND t.expires_at > CURRENT_TIMESTAMP(), t.token, COALESCE(t.token, 0) + 1),
  expires_at = TIMESTAMP_ADD(CURRENT_TIMESTAMP(), INTERVAL {int(ttl_ms)} MILLISECOND),
  renewed_at = CURRENT_TIMESTAMP(),
  updated_at = CURRENT_TIMESTAMP()
WHERE t.name = @name
  AND (t.owner IS NULL OR t.owner = @owner OR t.expires_at IS NULL OR t.expires_at <= CURRENT_TIMESTAMP())"""


def lease_renew(ttl_ms: int) -> str:
    """Push the expiry on while the grant `@token` is still the lease's (expired but not granted to
    anyone since counts as ours: nobody can have written meanwhile)."""
    return f"""UPDATE {{crm_sync_leases}} AS t
SET expires_at = TIMESTAMP_ADD(CURRENT_TIMESTAMP(), INTERVAL {int(ttl_ms)} MILLISECOND),
  renewed_at = CURRENT_TIMESTAMP(),
  updated_at = CURRENT_TIMESTAMP()
WHERE t.name = @name AND t.owner = @owner AND t.token = @token"""


LEASE_RELEASE = """UPDATE {crm_sync_leases} AS t
SET owner = NULL, expires_at = NULL, updated_at = CURRENT_TIMESTAMP()
WHERE t.name = @name AND t.owner = @owner"""

LEASE_SELECT = """SELECT t.name AS name, t.owner AS owner, t.acquired_at AS acquired_at, t.expires_at AS expires_at,
  t.expires_at <= CURRENT_TIMESTAMP() AS expired, t.token AS token, t.renewed_at AS renewed_at
FROM {crm_sync_leases} AS t WHERE t.name = @name
ORDER BY t.updated_at DESC"""
