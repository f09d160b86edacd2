"""The warehouse tables, defined once as Python data and rendered as BigQuery DDL.

Why it exists: both engines must hold exactly the same tables. The DDL is written in the BigQuery
dialect from this single spec; the DuckDB backend transpiles it with sqlglot, so a column added
here appears in both engines and in the row validation (`validate.py`) at once.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from truth_forge.warehouse.errors import WarehouseConfigError

# BigQuery type names; DuckDB's follow from sqlglot (INT64->BIGINT, JSON->JSON, TIMESTAMP->TIMESTAMPTZ).
INT64 = "INT64"
STRING = "STRING"
BOOL = "BOOL"
TIMESTAMP = "TIMESTAMP"
JSON = "JSON"


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    required: bool = False


@dataclass(frozen=True)
class Table:
    """One table: its logical name (what code says) and columns; the physical name is configurable."""

    name: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    doc: str = ""
    # BigQuery clustering (first column first): what the sync's constant filters prune on. Set on
    # create, and on existing tables through the API (`BigQueryWarehouse.ensure_layout`).
    cluster_by: tuple[str, ...] = ()
    # BigQuery partitioning (an expression of one column, `DATE(applied_at)`): a filter on it bills
    # only the partitions it names, so an append-only log can be trimmed by day. Set on create only.
    partition_by: str = ""
    column_types: dict[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "column_types", {c.name: c.type for c in self.columns})

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def ddl(self, ref: str, *, clustered: bool = False) -> str:
        """`CREATE TABLE IF NOT EXISTS` in the BigQuery dialect, for the table reference `ref`
        (with its `PARTITION BY` and `CLUSTER BY` when `clustered`: BigQuery's DDL; DuckDB has no
        such clauses)."""
        cols = ",\n  ".join(
            f"{c.name} {c.type}{' NOT NULL' if c.required else ''}" for c in self.columns
        )
        partition = f"\nPARTITION BY {self.partition_by}" if clustered and self.partition_by else ""
        cluster = f"\nCLUSTER BY {', '.join(self.cluster_by)}" if clustered and self.cluster_by else ""
        return f"CREATE TABLE IF NOT EXISTS {ref} (\n  {cols}\n){partition}{cluster}"


def _cols(*spec: tuple[str, str] | tuple[str, str, bool]) -> tuple[Column, ...]:
    return tuple(Column(*s) for s in spec)


# The key column of each synced object's wide table (contacts, businesses).
KEY_COLUMN = {"person": "contact_id", "company": "business_id"}

CONTACT_JSON_COLUMNS = (
    "llm_context",
    "communication_stats",
    "social_network",
    "ai_insights",
    "recommendations",
    "sync_metadata",
)
BUSINESS_JSON_COLUMNS = ("llm_context", "business_data", "relationship_stats", "sync_metadata")

CONTACTS = Table(
    "contacts",
    _cols(
        ("contact_id", INT64, True),
        ("canonical_name", STRING),
        ("category_code", STRING),
        ("subcategory_code", STRING),
        ("relationship_category", STRING),
        *((c, JSON) for c in CONTACT_JSON_COLUMNS),
        ("updated_at", TIMESTAMP),
        ("deleted_at", TIMESTAMP),
    ),
    key=("contact_id",),
    doc="one row per person; deleted_at set = soft-deleted",
    # Change detection filters on updated_at; the rows a run must read are the recently changed
    # ones, so clustering by time keeps them in few blocks (key lookups prune on the second column
    # only together with a time filter: see warehouse/detection.py).
    cluster_by=("updated_at", "contact_id"),
)
CONTACT_IDENTIFIERS = Table(
    "contact_identifiers",
    _cols(
        ("contact_id", INT64, True),
        ("kind", STRING, True),  # 'email' | 'phone'
        ("value", STRING, True),
        ("is_primary", BOOL, True),
        ("position", INT64),  # order of the additional values, as the user gave them
        ("updated_at", TIMESTAMP),
    ),
    key=("contact_id", "kind", "value"),
    doc="emails and phones; one primary per contact and kind",
    cluster_by=("contact_id",),  # all of a contact's identifiers are read together, by key
)
BUSINESSES = Table(
    "businesses",
    _cols(
        ("business_id", INT64, True),
        ("business_name", STRING),
        ("website", STRING),
        ("industry", STRING),
        ("business_type", STRING),
        *((c, JSON) for c in BUSINESS_JSON_COLUMNS),
        ("updated_at", TIMESTAMP),
        ("deleted_at", TIMESTAMP),
    ),
    key=("business_id",),
    cluster_by=("updated_at", "business_id"),
)
CONTACT_BUSINESSES = Table(
    "contact_businesses",
    _cols(
        ("contact_id", INT64, True),
        ("business_id", INT64, True),
        ("role", STRING),
        ("is_primary", BOOL),  # the link shown as the person's company
        ("updated_at", TIMESTAMP),
    ),
    key=("contact_id", "business_id"),
    cluster_by=("contact_id",),
)
CRM_SYNC_STATE = Table(
    "crm_sync_state",
    _cols(
        ("object_type", STRING, True),  # 'person' | 'company'
        ("record_key", STRING, True),  # contact_id / business_id as text
        ("crm_id", STRING),
        ("warehouse_hash", STRING),  # row hash last pushed or merged
        ("crm_hash", STRING),  # hash of the CRM-side values last seen (computed by the sync)
        ("crm_updated_at", TIMESTAMP),
        ("last_synced_at", TIMESTAMP),
        ("status", STRING),  # 'synced' | 'failed' | 'pending' | 'deleted'
        ("attempts", INT64),
        ("last_error", STRING),
        # The merge base: every synced field's value as both sides last agreed on it (views.py).
        ("base", JSON),
    ),
    key=("object_type", "record_key"),
    cluster_by=("object_type", "record_key"),  # read by constant key lists, never whole
)
# What each write request stored, appended at once (INSERT only: on BigQuery a MERGE or UPDATE bills
# the whole target table); folded into crm_sync_state between phases and by the next run after a
# kill (warehouse/journal.py). One row per record and request; `fields` names the state columns the
# entry sets (the others are left as they are), `seq` orders entries across runs.
CRM_SYNC_JOURNAL = Table(
    "crm_sync_journal",
    _cols(
        ("seq", INT64, True),
        ("run_id", STRING),
        ("fields", STRING, True),
        *((c.name, c.type, c.required) for c in CRM_SYNC_STATE.columns),
    ),
    key=("seq", "object_type", "record_key"),
    doc="append-only sync-state changes not yet folded into crm_sync_state",
    cluster_by=("object_type", "record_key"),
)
# Values pulled from Twenty on BigQuery, appended at once and landed in contacts/businesses (one
# MERGE per table) once a run or interval (warehouse/pending_rows.py): a MERGE bills its whole
# target, an INSERT bills nothing. `payload` holds the fields to write and the warehouse values the
# merge saw, so landing them late never overwrites a warehouse edit made in between.
CRM_SYNC_PENDING = Table(
    "crm_sync_pending",
    _cols(
        ("batch_id", STRING, True),
        ("position", INT64, True),
        ("object_type", STRING, True),
        ("record_key", INT64, True),
        ("staged_at", TIMESTAMP, True),
        ("payload", STRING, True),
    ),
    key=("batch_id", "position"),
    doc="pulled values waiting to land in contacts/businesses",
    cluster_by=("object_type", "record_key"),
)
CRM_SYNC_RUNS = Table(
    "crm_sync_runs",
    _cols(
        ("run_id", STRING, True),
        ("started_at", TIMESTAMP),
        ("finished_at", TIMESTAMP),
        ("status", STRING),  # 'running' | 'succeeded' | 'failed' | anything the sync chooses
        ("counts", JSON),
    ),
    key=("run_id",),
)
CRM_SYNC_ERRORS = Table(
    "crm_sync_errors",
    _cols(
        ("error_id", STRING, True),
        ("run_id", STRING),
        ("object_type", STRING),
        ("record_key", STRING),
        ("crm_id", STRING),
        ("operation", STRING),
        ("error_class", STRING),
        ("error_message", STRING),
        ("http_status", INT64),
        ("attempt", INT64),
        ("occurred_at", TIMESTAMP),
        ("resolved_at", TIMESTAMP),
    ),
    key=("error_id",),
    cluster_by=("object_type", "record_key"),
)
# Every change the sync applied, either way: one row per record and field, appended (INSERT only: on
# BigQuery an UPDATE or MERGE bills the whole table), partitioned by the day it was applied so the
# retention DELETE bills only the expired days, clustered by record for `history contact 42`.
# Values are JSON text (push-only fields as the digests the merge compares: see sync/views.py).
CRM_SYNC_HISTORY = Table(
    "crm_sync_history",
    _cols(
        ("object_type", STRING, True),  # 'person' | 'company'
        ("record_key", STRING),  # contact_id / business_id as text
        ("crm_id", STRING),
        ("field", STRING, True),  # a warehouse column, or '(created)' / '(deleted)' / '(sent whole)'
        ("old_value", STRING),  # JSON text
        ("new_value", STRING),  # JSON text
        ("side", STRING, True),  # where the change was made: 'warehouse' | 'twenty'
        ("actor", STRING),  # Twenty's updatedBy name (or source), 'warehouse', or who resolved a conflict
        ("changed_at", TIMESTAMP),  # when it happened on that side
        ("applied_at", TIMESTAMP, True),  # when it reached the other side
        ("run_id", STRING),
        ("via", STRING, True),  # 'sync' | 'webhook' | 'resolve' | 'landing'
    ),
    key=("object_type", "record_key", "field", "applied_at"),
    doc="append-only log of the changes the sync applied, field by field",
    cluster_by=("object_type", "record_key"),
    partition_by="DATE(applied_at)",
)
# Conflicts as the merge saw them (base / warehouse / Twenty values, who won by policy), and a
# person's review of one: rows of kind 'review' naming the conflict_id. Append-only, as the history.
CRM_SYNC_CONFLICTS = Table(
    "crm_sync_conflicts",
    _cols(
        ("conflict_id", STRING, True),
        ("kind", STRING, True),  # 'conflict' | 'review'
        ("object_type", STRING, True),
        ("record_key", STRING),
        ("crm_id", STRING),
        ("field", STRING),
        ("base_value", STRING),  # JSON text
        ("warehouse_value", STRING),
        ("twenty_value", STRING),
        ("winner", STRING),  # conflict: 'warehouse' | 'twenty' (the policy); review: what was taken
        ("chosen_value", STRING),  # review: the value applied (JSON text)
        ("actor", STRING),  # review: who resolved it
        ("run_id", STRING),
        ("occurred_at", TIMESTAMP, True),
    ),
    key=("conflict_id", "kind", "occurred_at"),
    doc="field conflicts settled by policy, and people's reviews of them",
    cluster_by=("object_type", "record_key"),
)
CRM_SYNC_KV = Table(
    "crm_sync_kv",
    _cols(("key", STRING, True), ("value", STRING), ("updated_at", TIMESTAMP)),
    key=("key",),
    doc="watermarks and id sequences",
)
CRM_SYNC_LEASES = Table(
    "crm_sync_leases",
    _cols(
        ("name", STRING, True),  # what is leased: 'writer' (the right to write this warehouse)
        ("owner", STRING),  # who holds it (NULL: free); see truth_forge/core/lease.py
        ("acquired_at", TIMESTAMP),
        ("expires_at", TIMESTAMP),  # the engine's clock; an expired lease may be taken over
        ("updated_at", TIMESTAMP),
        ("token", INT64),  # the fencing token: grows with every grant, so a paused holder's renewal fails
        ("renewed_at", TIMESTAMP),  # the holder's heartbeat (engine's clock), set by every claim and renewal
    ),
    key=("name",),
    doc="one writer per warehouse: a lease claimed by a conditional UPDATE, fenced by a growing token",
)

TABLES: dict[str, Table] = {
    t.name: t
    for t in (
        CONTACTS,
        CONTACT_IDENTIFIERS,
        BUSINESSES,
        CONTACT_BUSINESSES,
        CRM_SYNC_STATE,
        CRM_SYNC_JOURNAL,
        CRM_SYNC_PENDING,
        CRM_SYNC_RUNS,
        CRM_SYNC_ERRORS,
        CRM_SYNC_HISTORY,
        CRM_SYNC_CONFLICTS,
        CRM_SYNC_KV,
        CRM_SYNC_LEASES,
    )
}

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


@dataclass(frozen=True)
class TableNames:
    """Logical table name -> physical name; renames come from `Settings.warehouse_tables`."""

    renames: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.renames) - set(TABLES))
        if unknown:
            raise WarehouseConfigError(
                f"warehouse_tables renames unknown tables {unknown}; known: {sorted(TABLES)}"
            )
        for logical, physical in self.renames.items():
            # Names are spliced into SQL, so only plain identifiers are allowed.
            if not isinstance(physical, str) or not _IDENT.match(physical):
                raise WarehouseConfigError(
                    f"warehouse_tables: {logical!r} -> {physical!r} is not a plain table name "
                    "(letters, digits, underscores; not starting with a digit)"
                )
        physical_names = [self[name] for name in TABLES]
        if len(set(physical_names)) != len(physical_names):
            raise WarehouseConfigError(f"warehouse_tables maps two tables to one name: {physical_names}")

    def __getitem__(self, logical: str) -> str:
        return self.renames.get(logical, logical)
