"""The `Warehouse` interface: every operation a sync needs from the canonical store, set-based.

Why it exists: the sync talks to one interface whatever the engine. The operations are
implemented here once, on top of a handful of engine primitives (run a statement with bound
parameters, stream a result, open a transaction), so DuckDB and BigQuery run the same SQL
(`queries.py`) on the same tables (`schema.py`) and pass the same contract tests.

Row shapes (plain dicts, snake_case; JSON columns are Python objects; timestamps are aware UTC
datetimes):

* view row (`changed_rows`, `get_rows`), person: contact_id, canonical_name, primary_email,
  additional_emails (list), primary_phone, additional_phones (list), category_code,
  subcategory_code, relationship_category, llm_context, communication_stats, social_network,
  ai_insights, recommendations, sync_metadata, business_id, deleted_at, updated_at, row_hash;
  `changed_rows` adds crm_id, sync_status and synced_hash from the sync state (None if none).
  Company: business_id, business_name, website, industry, business_type, llm_context,
  business_data, relationship_stats, sync_metadata, deleted_at, updated_at, row_hash (+ the same 3).
* contact input (`upsert_contacts`): contact_id plus any of the person view fields (not
  row_hash) and updated_at. Fields left out of a batch are left untouched in the warehouse.
  primary_email/additional_emails and primary_phone/additional_phones come in pairs and replace
  that contact's emails/phones; business_id sets the primary business link (None clears it).
* business input (`upsert_businesses`): business_id plus any business column.
* sync state row: object_type ('person'|'company'), record_key (str), crm_id, warehouse_hash,
  crm_hash, crm_updated_at, last_synced_at, status ('synced'|'failed'|'pending'|'deleted'),
  attempts, last_error.
* error row: run_id, object_type, record_key, crm_id, operation, error_class, error_message,
  http_status, attempt, occurred_at (default now), error_id (default a new uuid), resolved_at.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import difflib
import json
import re
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from typing import Any, Literal, get_args

from truth_forge.warehouse import queries as q
from truth_forge.warehouse.accounting import Accounting, Statement
from truth_forge.warehouse.binds import Bind, KeySet, RowSet, Scalar, json_value, plain_row
from truth_forge.warehouse.detection import ChangeDetection, _view_row
from truth_forge.warehouse.errors import WarehouseConfigError, WarehouseDataError
from truth_forge.warehouse.history import RunHistory
from truth_forge.warehouse.pending_rows import PendingRows
from truth_forge.warehouse.record_history import RecordHistory
from truth_forge.warehouse.schema import (
    BOOL,
    BUSINESSES,
    CONTACTS,
    CRM_SYNC_ERRORS,
    INT64,
    JSON,
    KEY_COLUMN,
    STRING,
    TABLES,
    TIMESTAMP,
    TableNames,
)
from truth_forge.warehouse.state_journal import SyncStateJournal
from truth_forge.warehouse.validate import STRING_LIST, validate_rows

ObjectType = Literal["person", "company"]
OBJECT_TYPES: tuple[str, ...] = get_args(ObjectType)
MAX_ERROR_MESSAGE = 4000  # keep evidence, not megabytes of HTML error pages

CONTACT_FIELDS: dict[str, str] = {
    **{c.name: c.type for c in CONTACTS.columns},
    "primary_email": STRING,
    "additional_emails": STRING_LIST,
    "primary_phone": STRING,
    "additional_phones": STRING_LIST,
    "business_id": INT64,
}
BUSINESS_FIELDS: dict[str, str] = {c.name: c.type for c in BUSINESSES.columns}
ERROR_FIELDS: dict[str, str] = {c.name: c.type for c in CRM_SYNC_ERRORS.columns}




class Warehouse(ChangeDetection, SyncStateJournal, PendingRows, RunHistory, RecordHistory, ABC):
    """The canonical contacts store. Use as a context manager; see the module doc for row shapes."""

    # Whether CREATE TABLE carries the tables' clustering (BigQuery's DDL has it; DuckDB has none).
    clusters_tables = False
    # A handle for looking only (a dry run): the bookkeeping is read as it is, never folded or kept.
    read_only = False
    # Called by the engines before every statement `fenced()` names: the writer lease's proof that
    # it still holds the lease (truth_forge/core/lease.py), which raises LeaseLost when it does not.
    before_write: Callable[[], None] | None = None

    def __init__(self, tables: TableNames) -> None:
        self.tables = tables
        # Every statement sent, with what the engine says it cost (accounting.py).
        self.statements = Accounting()
        self._init_journal()
        self._init_pending()

    def _account(self, sql: str, binds: Sequence[Bind], **figures: Any) -> None:
        self.statements.add(Statement(sql, tuple(binds), **figures))

    # --- lifecycle -------------------------------------------------------------------------------

    def __enter__(self) -> Warehouse:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @abstractmethod
    def close(self) -> None:
        """Release the connection (DuckDB also checkpoints, so the file is compact and complete)."""

    def checkpoint(self) -> None:
        """Flush buffered writes to durable storage where the engine buffers them (DuckDB)."""

    def ensure_tables(self) -> None:
        """Create missing tables; check that existing (possibly user-owned) ones have our columns."""
        existing = self._existing_columns()
        self._check_renamed_tables_exist(existing)
        missing_tables: list[str] = []
        for table in TABLES.values():
            physical = self.tables[table.name]
            if physical not in existing:
                missing_tables.append(table.ddl("{" + table.name + "}", clustered=self.clusters_tables))
                continue
            missing = [c for c in table.column_names if c.lower() not in existing[physical]]
            if missing and table.name.startswith("crm_sync_"):
                # Our own bookkeeping from an older truth-forge: add the new (nullable) columns.
                by_name = {c.name: c for c in table.columns}
                self._run_ddl([f"ALTER TABLE {{{table.name}}} ADD COLUMN {c} {by_name[c].type}" for c in missing])
                continue
            if missing:
                raise WarehouseConfigError(
                    f"table {physical!r} (used as {table.name!r}) lacks columns {missing}; "
                    "add them, or map the name to another table in warehouse_tables"
                )
        if missing_tables:
            self._run_ddl(missing_tables)

    def _check_renamed_tables_exist(self, existing: Mapping[str, object]) -> None:
        """A rename of one of the user's own tables names a table the user has: one that is missing is a
        typo, and creating it would start an empty table (and pull the whole CRM into it). Only in a
        warehouse with no tables at all (a new one, made by `init` or `--create`) are renamed tables created."""
        missing = [(logical, self.tables[logical]) for logical in TABLES
                   if not logical.startswith("crm_sync_") and self.tables[logical] != logical
                   and self.tables[logical] not in existing]
        if not missing:
            return
        present = self._table_names()
        if not present:
            return
        problems = []
        for logical, physical in missing:
            close = difflib.get_close_matches(physical, present, n=1)
            problems.append(f"{logical!r} to {physical!r}, which does not exist"
                            + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise WarehouseConfigError(
            "TRUTH_FORGE_WAREHOUSE_TABLES renames " + "; ".join(problems) + ". Fix the name or remove the rename: "
            "truth-forge creates only its own crm_sync_* tables in a warehouse that has tables, never one of yours")

    def _table_names(self) -> list[str]:
        """Every table in the warehouse's database or dataset, whoever made it."""
        return sorted(self._existing_columns())

    def _run_ddl(self, statements: Sequence[str]) -> None:
        """Run parameter-free DDL statements (an engine may send them as one script)."""
        for statement in statements:
            self._run(statement, ())

    def table_bytes(self, table: str) -> int | None:
        """A table's logical size in bytes where the engine bills by it (BigQuery), else None."""
        return None

    def count_rows(self, table: str) -> int:
        """Rows in a table, by logical name (e.g. 'contacts')."""
        if table not in TABLES:
            raise WarehouseConfigError(f"unknown table {table!r}; known: {sorted(TABLES)}")
        rows, _ = self._run(f"SELECT COUNT(*) AS n FROM {{{table}}}", (), fetch=True)
        return int(rows[0]["n"])

    # --- canonical rows ------------------------------------------------------------------------

    def get_rows(self, object_type: ObjectType, keys: Iterable[int], *, narrow: bool = False) -> list[dict[str, Any]]:
        """The current view rows (with row_hash) for the given contact_ids / business_ids, with
        pulled values still waiting to land laid over them (pending_rows.py). `narrow`: without the
        JSON columns and the hash (most of a contact's bytes, which BigQuery bills per column read)."""
        keys = list(keys)
        with self.holding_pending():  # no landing between the read and the overlay
            return self._overlaid(object_type, self._table_rows(object_type, keys, narrow=narrow),
                                  lambda: self.get_rows(object_type, keys, narrow=narrow))

    def _table_rows(self, object_type: str, keys: Iterable[int], *, narrow: bool = False) -> list[dict[str, Any]]:
        """The view rows as the tables hold them (`narrow`: without the JSON columns and the hash)."""
        select = q.narrow_select if narrow else q.view_select
        rows = [_view_row(r) for r in self._by_stamps(object_type, keys, select)]  # type: ignore[arg-type]
        return sorted(rows, key=lambda r: r[KEY_COLUMN[object_type]])

    def row_hashes(self, object_type: ObjectType, keys: Iterable[int]) -> dict[int, str]:
        """The current row hash of each given key that exists (to record after merging CRM edits)."""
        keys = list(keys)
        with self.holding_pending():  # no landing between the read and the overlay
            rows = [{KEY_COLUMN[object_type]: int(r["record_key"]), "row_hash": r["row_hash"],
                     "updated_at": plain_row(r)["updated_at"]}
                    for r in self._by_stamps(object_type, keys, q.hash_select)]
            overlaid = self._overlaid(object_type, rows, lambda: [
                {KEY_COLUMN[object_type]: k, "row_hash": h} for k, h in self.row_hashes(object_type, keys).items()])
        return {int(r[KEY_COLUMN[object_type]]): r["row_hash"] for r in overlaid}

    def _by_stamps(self, object_type: ObjectType, keys: Iterable[int],
                   select: Callable[[str, q.Scope], str]) -> list[dict[str, Any]]:
        """Rows of given keys, found the way BigQuery can prune: the wide tables are clustered by
        updated_at, so their stamps are read first (two narrow columns) and the rows then by key and
        stamp. Rows no writer stamped are read by key alone."""
        _check_object_type(object_type)
        key_list = _int_keys(object_type, keys)
        if not key_list:
            return []
        found, _ = self._run(q.stamps_select(object_type, "keys"), (KeySet("keys", INT64, key_list),), fetch=True)
        stamped = sorted(int(r["k"]) for r in found if r["stamp"] is not None)
        rest = {int(r["k"]) for r in found if r["stamp"] is None}
        rows: list[dict[str, Any]] = []
        if stamped:
            stamps = sorted({plain_row(r)["stamp"] for r in found if r["stamp"] is not None})
            rows, _ = self._run(select(object_type, "stamped"), (
                KeySet("keys", INT64, stamped), KeySet("stamps", TIMESTAMP, stamps)), fetch=True)
            # A row another writer stamped again in between is not at its old stamp: read it by key.
            key = "record_key" if rows and "record_key" in rows[0] else KEY_COLUMN[object_type]
            rest |= set(stamped) - {int(r[key]) for r in rows}
        if rest:
            got, _ = self._run(select(object_type, "keys"), (KeySet("keys", INT64, sorted(rest)),), fetch=True)
            rows += got
        return rows

    # --- canonical writes ------------------------------------------------------------------------

    def upsert_contacts(self, rows: Iterable[Mapping[str, Any]]) -> int:
        """Insert or update contacts, their emails/phones and primary business link, set-based.

        Returns the number of distinct contacts written. A bad row raises WarehouseDataError
        before anything is written.
        """
        clean, fields = self._validated("person", rows)
        if not clean:
            return 0
        columns = [(c.name, c.type) for c in CONTACTS.columns if c.name in fields]
        keys = KeySet("batch", INT64, [r["contact_id"] for r in clean])
        kinds = [k for k, f in (("email", "primary_email"), ("phone", "primary_phone")) if f in fields]
        with self._atomic():
            self._run(
                q.upsert_merge("contacts", ("contact_id",), columns, touch_updated_at=True),
                (RowSet("rows", columns, clean),),
            )
            if kinds:
                self._run(
                    q.identifiers_merge(kinds),
                    (RowSet("ids", _IDENTIFIER_COLUMNS, _identifier_rows(clean, kinds)), keys),
                )
            if "business_id" in fields:
                links = [
                    {"contact_id": r["contact_id"], "business_id": r["business_id"]}
                    for r in clean
                    if r["business_id"] is not None
                ]
                self._run(
                    q.PRIMARY_LINK_MERGE,
                    (RowSet("links", [("contact_id", INT64), ("business_id", INT64)], links), keys),
                )
        return len(clean)

    def upsert_businesses(self, rows: Iterable[Mapping[str, Any]]) -> int:
        """Insert or update businesses (only the fields the batch carries); returns rows written."""
        clean, fields = self._validated("company", rows)
        if not clean:
            return 0
        columns = [(c.name, c.type) for c in BUSINESSES.columns if c.name in fields]
        self._run(
            q.upsert_merge("businesses", ("business_id",), columns, touch_updated_at=True),
            (RowSet("rows", columns, clean),),
        )
        return len(clean)

    def insert_new_rows(self, object_type: str, rows: Sequence[Mapping[str, Any]]) -> int:
        """Insert rows whose keys the tables do not hold yet (records created in Twenty, under keys
        this sync allocated): INSERTs only, which on BigQuery read no table, so bill nothing."""
        clean, fields = self._validated(object_type, rows)
        if not clean:
            return 0
        table = "contacts" if object_type == "person" else "businesses"
        spec = CONTACTS if object_type == "person" else BUSINESSES
        columns = [(c.name, c.type) for c in spec.columns if c.name in fields and c.name != "updated_at"]
        kinds = [k for k, f in (("email", "primary_email"), ("phone", "primary_phone")) if f in fields]
        links = [{"contact_id": r["contact_id"], "business_id": r["business_id"]}
                 for r in clean if r.get("business_id") is not None]
        with self._atomic():
            self._run(q.insert_rows(table, columns), (RowSet("rows", columns, clean),))
            if object_type == "person" and kinds:
                self._run(q.insert_rows("contact_identifiers", _IDENTIFIER_COLUMNS, source="ids"),
                          (RowSet("ids", _IDENTIFIER_COLUMNS, _identifier_rows(clean, kinds)),))
            if object_type == "person" and links:
                link_columns = [("contact_id", INT64), ("business_id", INT64), ("is_primary", BOOL)]
                self._run(q.insert_rows("contact_businesses", link_columns, source="links"),
                          (RowSet("links", link_columns, [{**link, "is_primary": True} for link in links]),))
        return len(clean)

    @staticmethod
    def _validated(object_type: str, rows: Iterable[Mapping[str, Any]]) -> tuple[list[dict[str, Any]], tuple[str, ...]]:
        """The rows checked and normalised for a write (WarehouseDataError names a bad one)."""
        if object_type == "person":
            return validate_rows("contacts", rows, CONTACT_FIELDS, "contact_id", required_together=[
                ("primary_email", "additional_emails"), ("primary_phone", "additional_phones")])
        return validate_rows("businesses", rows, BUSINESS_FIELDS, "business_id")

    def soft_delete(
        self, object_type: ObjectType, keys: Iterable[int], deleted_at: dt.datetime | None = None, *,
        pulled: bool = False,
    ) -> int:
        """Set deleted_at on rows not yet deleted; returns how many were newly deleted. Deletions
        `pulled` from Twenty land as other pulled values do (staged first where the store stages)."""
        _check_object_type(object_type)
        key_list = _int_keys(object_type, keys)
        if not key_list:
            return 0
        table, key = ("contacts", "contact_id") if object_type == "person" else ("businesses", "business_id")
        if pulled and self.stage_pulled_rows:
            current = {int(r[key]): r for r in self.get_rows(object_type, key_list, narrow=True)}
            when = deleted_at or dt.datetime.now(dt.UTC)
            rows = [{key: k, "deleted_at": when} for k, r in current.items() if r.get("deleted_at") is None]
            self.land_pulled(object_type, rows, current)
            return len(rows)
        ts = _timestamp_param("deleted_at", deleted_at)
        _, affected = self._run(
            q.soft_delete_update(table, key), (KeySet("keys", INT64, key_list), Scalar("deleted_at", TIMESTAMP, ts))
        )
        return int(affected or 0)

    def allocate_ids(self, object_type: ObjectType, count: int) -> list[int]:
        """Reserve `count` new contact_ids / business_ids (for records created in the CRM).

        Ids come from a sequence in crm_sync_kv that never goes below the table's largest id, so
        two calls in a row never hand out the same id, even before either is inserted. On BigQuery
        two *concurrent* callers could race (no transaction there); run one sync per warehouse.
        """
        _check_object_type(object_type)
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError(f"count must be a non-negative int, got {count!r}")
        if count == 0:
            return []
        table, key = ("contacts", "contact_id") if object_type == "person" else ("businesses", "business_id")
        seq = f"seq:{key}"
        with self._atomic():
            self._run(q.allocate_merge(table, key, seq, count), ())
            rows, _ = self._run(q.kv_select(seq), (), fetch=True)
        last = int(rows[0]["value"])
        return list(range(last - count + 1, last + 1))

    # --- sync state ------------------------------------------------------------------------------

    def linked_records(self, object_type: ObjectType, *, batch_size: int = 1000) -> Iterator[list[tuple[str, str]]]:
        """(record_key, crm_id) of every record the state says is live in Twenty, in batches."""
        _check_object_type(object_type)
        self.fold_journal(force=True)  # read from the state table alone
        sql = ("SELECT t.record_key AS record_key, t.crm_id AS crm_id FROM {crm_sync_state} AS t "
               "WHERE t.object_type = @object_type AND t.crm_id IS NOT NULL AND t.status != 'deleted' "
               "ORDER BY t.record_key")
        for batch in self._stream(sql, (Scalar("object_type", STRING, object_type),), batch_size):
            yield [(r["record_key"], r["crm_id"]) for r in batch]

    def get_watermark(self, name: str) -> str | None:
        """A named watermark (e.g. the pull's last seen updatedAt per object), or None."""
        return self._kv_get(f"watermark:{name}")

    def set_watermark(self, name: str, value: str) -> None:
        if not isinstance(value, str):
            raise WarehouseDataError("crm_sync_kv", None, f"watermark {name!r} must be a string, got {value!r}")
        self._kv_set(f"watermark:{name}", value)

    def get_bookkeeping(self, key: str) -> str | None:
        """A value truth-forge keeps for itself in crm_sync_kv (e.g. which errors an alert announced)."""
        return self._kv_get(key)

    def set_bookkeeping(self, key: str, value: str) -> None:
        self._kv_set(key, value)

    # --- the writer lease (see truth_forge/core/lease.py) --------------------------------------------

    def claim_lease(self, name: str, owner: str, ttl: dt.timedelta) -> dict[str, Any]:
        """Take the lease `name` for `ttl` if it is free, expired or already `owner`'s.

        Returns the lease row as it is afterwards (owner, acquired_at, expires_at, expired): the
        caller holds the lease exactly when the row names it as owner.
        """
        binds = (Scalar("name", STRING, name), Scalar("owner", STRING, owner))
        self._run(q.LEASE_ENSURE_ROW, binds[:1])
        self._run(q.lease_claim(_positive_ms(ttl)), binds)
        return self.read_lease(name) or {"name": name, "owner": None}

    def renew_lease(self, name: str, owner: str, ttl: dt.timedelta, token: int) -> bool:
        """Move the expiry `ttl` past now; False when the grant `token` is no longer `owner`'s."""
        _, affected = self._run(
            q.lease_renew(_positive_ms(ttl)),
            (Scalar("name", STRING, name), Scalar("owner", STRING, owner), Scalar("token", INT64, token)),
        )
        return bool(affected)

    def release_lease(self, name: str, owner: str) -> bool:
        """Free the lease if `owner` holds it; False when someone else had taken it over."""
        _, affected = self._run(q.LEASE_RELEASE, (Scalar("name", STRING, name), Scalar("owner", STRING, owner)))
        return bool(affected)

    def read_lease(self, name: str) -> dict[str, Any] | None:
        """The lease row (owner None when free), or None when it was never claimed."""
        rows, _ = self._run(q.LEASE_SELECT, (Scalar("name", STRING, name),), fetch=True)
        return _plain_row(rows[0]) if rows else None

    def for_another_thread(self) -> Warehouse:
        """A handle on the same store that another thread may use while this one works.

        The default is this object (a client that is safe to share); an engine whose connection
        is not shareable returns a second connection to the same store.
        """
        return self

    # --- runs and errors -------------------------------------------------------------------------

    def start_run(self, run_id: str | None = None, started_at: dt.datetime | None = None) -> str:
        """Append a run row with status 'running'; returns its run_id."""
        run_id = run_id or uuid.uuid4().hex
        self._run(
            "INSERT INTO {crm_sync_runs} (run_id, started_at, finished_at, status, counts) "
            "VALUES (@run_id, COALESCE(@started_at, CURRENT_TIMESTAMP()), NULL, 'running', NULL)",
            (Scalar("run_id", STRING, run_id), Scalar("started_at", TIMESTAMP, _timestamp_param("started_at", started_at))),
        )
        return run_id

    def finish_run(
        self,
        run_id: str,
        status: str,
        counts: Mapping[str, Any] | None = None,
        finished_at: dt.datetime | None = None,
    ) -> None:
        """Close a run with its final status and counts (any JSON-serialisable mapping)."""
        try:
            counts_text = json.dumps(dict(counts or {}), sort_keys=True, separators=(",", ":"))
        except (TypeError, ValueError) as exc:
            raise WarehouseDataError("crm_sync_runs", None, f"counts must be JSON-serialisable: {exc}") from exc
        self._run(
            "UPDATE {crm_sync_runs} AS t SET finished_at = COALESCE(@finished_at, CURRENT_TIMESTAMP()), "
            "status = @status, counts = PARSE_JSON(@counts) WHERE t.run_id = @run_id",
            (
                Scalar("run_id", STRING, run_id),
                Scalar("status", STRING, status),
                Scalar("counts", STRING, counts_text),
                Scalar("finished_at", TIMESTAMP, _timestamp_param("finished_at", finished_at)),
            ),
        )

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        rows, _ = self._run(
            "SELECT t.run_id AS run_id, t.started_at AS started_at, t.finished_at AS finished_at, "
            "t.status AS status, TO_JSON_STRING(t.counts) AS counts FROM {crm_sync_runs} AS t WHERE t.run_id = @run_id",
            (Scalar("run_id", STRING, run_id),),
            fetch=True,
        )
        if not rows:
            return None
        row = _plain_row(rows[0])
        row["counts"] = _json_value(row["counts"]) or {}
        return row

    def record_errors(self, rows: Iterable[Mapping[str, Any]]) -> int:
        """Append error rows (one INSERT per call); returns how many were written."""
        prepared = []
        for row in rows:
            # Every column present (None when not given), so rows of one batch may carry different fields.
            row = {**{c: None for c in ERROR_FIELDS}, **row}
            row["error_id"] = row["error_id"] or uuid.uuid4().hex
            row["occurred_at"] = row["occurred_at"] or dt.datetime.now(dt.UTC)
            if isinstance(row.get("error_message"), str):
                row["error_message"] = row["error_message"][:MAX_ERROR_MESSAGE]
            prepared.append(row)
        clean, fields = validate_rows("crm_sync_errors", prepared, ERROR_FIELDS, "error_id")
        if not clean:
            return 0
        columns = [(c.name, c.type) for c in CRM_SYNC_ERRORS.columns if c.name in fields]
        names = ", ".join(n for n, _ in columns)
        self._run(
            f"INSERT INTO {{crm_sync_errors}} ({names}) {q.source_select('rows', columns)}",
            (RowSet("rows", columns, clean),),
        )
        self._errors_opened(clean)
        return len(clean)

    def close_settled_errors(self, *, run_id: str, run_succeeded: bool) -> int:
        """Close the errors whose record this run saved clean (as its folds found them: the journal is
        folded first), the older rows its own errors supersede, and (after a run that succeeded) the
        run-level errors of other runs; returns how many closed."""
        self.fold_journal()
        # What is open, by record: only those records' keys and ids are looked up in what the folds
        # found clean (a first sync settles every record clean); nothing open, nothing to send.
        open_rows, _ = self._run(q.OPEN_ERROR_RECORDS, (), fetch=True)
        if not open_rows:
            return 0
        keys, ids = self.settled_since_forget(
            {name: [r["record_key"] for r in open_rows if r["object_type"] == name and r["record_key"] is not None]
             for name in ("person", "company")},
            [r["crm_id"] for r in open_rows if r["record_key"] is None and r["crm_id"] is not None])
        _, affected = self._run(q.CLOSE_SETTLED_ERRORS, (
            KeySet("clean_person", STRING, sorted(keys["person"])),
            KeySet("clean_company", STRING, sorted(keys["company"])),
            KeySet("clean_ids", STRING, sorted(ids)),
            Scalar("run_id", STRING, run_id),
            Scalar("run_succeeded", BOOL, run_succeeded),
        ))
        return int(affected or 0)

    def open_errors(self, object_type: ObjectType | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        """Unresolved errors, oldest first."""
        if object_type is not None:
            _check_object_type(object_type)
        cols = ", ".join(f"t.{c} AS {c}" for c in CRM_SYNC_ERRORS.column_names)
        rows, _ = self._run(
            f"SELECT {cols} FROM {{crm_sync_errors}} AS t WHERE t.resolved_at IS NULL "
            "AND (@object_type IS NULL OR t.object_type = @object_type) "
            f"ORDER BY t.occurred_at, t.error_id LIMIT {int(limit)}",
            (Scalar("object_type", STRING, object_type),),
            fetch=True,
        )
        return [_plain_row(r) for r in rows]

    def resolve_errors(
        self, object_type: ObjectType, record_keys: Iterable[str | int], resolved_at: dt.datetime | None = None
    ) -> int:
        """Mark the open errors of these records resolved (they synced since); returns how many."""
        _check_object_type(object_type)
        keys = sorted({str(k) for k in record_keys})
        if not keys:
            return 0
        _, affected = self._run(
            "UPDATE {crm_sync_errors} AS t SET resolved_at = COALESCE(@resolved_at, CURRENT_TIMESTAMP()) "
            "WHERE t.object_type = @object_type AND t.record_key IN {keys_keys} AND t.resolved_at IS NULL",
            (
                Scalar("object_type", STRING, object_type),
                KeySet("keys", STRING, keys),
                Scalar("resolved_at", TIMESTAMP, _timestamp_param("resolved_at", resolved_at)),
            ),
        )
        return int(affected or 0)

    # --- engine primitives -----------------------------------------------------------------------

    @abstractmethod
    def _existing_columns(self) -> dict[str, set[str]]:
        """Physical table name -> lower-cased column names, for the tables that exist."""

    @abstractmethod
    def _run(self, template: str, binds: Sequence[Bind], *, fetch: bool = False) -> tuple[list[dict[str, Any]], int | None]:
        """Run one statement; return (rows if fetch else [], affected row count if DML)."""

    @abstractmethod
    def _stream(self, template: str, binds: Sequence[Bind], batch_size: int) -> Generator[list[dict[str, Any]], None, None]:
        """Run a query and yield its rows in batches, never holding the whole result in Python."""

    @abstractmethod
    def _atomic(self) -> contextlib.AbstractContextManager[None]:
        """All-or-nothing where the engine can (DuckDB); statements in order where not (BigQuery)."""


# --- helpers -------------------------------------------------------------------------------------


_IDENTIFIER_COLUMNS = [("contact_id", INT64), ("kind", STRING), ("value", STRING), ("is_primary", BOOL), ("position", INT64)]


def _identifier_rows(rows: Sequence[Mapping[str, Any]], kinds: Sequence[str]) -> list[dict[str, Any]]:
    """Flatten primary + additional values into identifier rows, primary first, duplicates dropped."""
    out: list[dict[str, Any]] = []
    for row in rows:
        for kind in kinds:
            primary = row[f"primary_{kind}"] or None  # Twenty sends "" for "no primary"
            seen: set[str] = set()
            values = ([(primary, True)] if primary else []) + [(v, False) for v in row[f"additional_{kind}s"]]
            for position, (value, is_primary) in enumerate(values):
                if value in seen:
                    continue
                seen.add(value)
                out.append(
                    {"contact_id": row["contact_id"], "kind": kind, "value": value, "is_primary": is_primary, "position": position}
                )
    return out


def positive_range_rows(value: object) -> int:
    """A valid `change_range_rows` (a whole number >= 1), or WarehouseConfigError."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise WarehouseConfigError(f"change_range_rows {value!r}: expected a whole number >= 1")
    return value


def _check_object_type(object_type: str) -> None:
    if object_type not in OBJECT_TYPES:
        raise ValueError(f"object_type must be one of {OBJECT_TYPES}, got {object_type!r}")


def _int_keys(object_type: str, keys: Iterable[int]) -> list[int]:
    out = []
    for k in keys:
        if isinstance(k, bool) or not isinstance(k, int):
            raise WarehouseDataError(
                "contacts" if object_type == "person" else "businesses", None, f"keys must be ints, got {k!r}"
            )
        out.append(k)
    return sorted(set(out))


# What the writer lease fences: every statement that writes, except the lease's own and the run's own
# log (its crm_sync_runs row and its appended error rows), which say how a run that lost the lease ended.
_WRITES = re.compile(r"^\s*(INSERT|UPDATE|MERGE|DELETE)\b", re.IGNORECASE)
_UNFENCED = re.compile(r"^\s*(MERGE\s+\{crm_sync_leases\}|UPDATE\s+\{crm_sync_leases\}|UPDATE\s+\{crm_sync_runs\}"
                       r"|INSERT\s+INTO\s+\{crm_sync_runs\}|INSERT\s+INTO\s+\{crm_sync_errors\})", re.IGNORECASE)


def fenced(template: str) -> bool:
    """Whether a statement (its template) must wait for `Warehouse.before_write`."""
    return bool(_WRITES.match(template)) and not _UNFENCED.match(template)


def _positive_ms(span: dt.timedelta) -> int:
    ms = int(span.total_seconds() * 1000)
    if ms <= 0:
        raise ValueError(f"a lease lasts a positive time, not {span}")
    return ms


def _timestamp_param(name: str, value: dt.datetime | None) -> dt.datetime | None:
    if value is None:
        return None
    if not isinstance(value, dt.datetime) or value.tzinfo is None:
        raise WarehouseDataError(name, None, f"expects a timezone-aware datetime, got {value!r}")
    return value.astimezone(dt.UTC)


_json_value = json_value
_plain_row = plain_row


__all__ = ["Warehouse", "ObjectType", "Scalar", "KeySet", "RowSet", "Bind", "JSON"]
