"""The record history and the conflicts log: appended by the sync, read by `history` and `conflicts`.

Why it exists: "who changed Jane's category, when, and how did it get here?" needs every change the
sync applied kept field by field, with both sides' times and the actor; and a conflict settled by
policy needs its three values kept, so a person can review it. Both tables are append-only: one
INSERT per batch (it reads no table, so on BigQuery it bills nothing), never an UPDATE or MERGE
(which would bill the whole table). The history is trimmed by day (`expire_history_daily`): a
DELETE filtered on its partitioning column bills only the expired partitions on BigQuery.

A mixin of `Warehouse`: it runs the same BigQuery-dialect SQL on both engines through `_run`.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from truth_forge.warehouse import queries as q
from truth_forge.warehouse.binds import Bind, RowSet, Scalar, plain_row
from truth_forge.warehouse.errors import HistoryNotKept, WarehouseQueryError
from truth_forge.warehouse.schema import BOOL, CRM_SYNC_CONFLICTS, CRM_SYNC_HISTORY, STRING, TIMESTAMP

HISTORY_COLUMNS = [(c.name, c.type) for c in CRM_SYNC_HISTORY.columns]
CONFLICT_COLUMNS = [(c.name, c.type) for c in CRM_SYNC_CONFLICTS.columns]
DEFAULT_RETENTION_DAYS = 365
# crm_sync_kv: the UTC day the history was last trimmed (the trim runs once a day at most).
_TRIMMED_ON = "history:trimmed-on"

_HISTORY_COLUMNS_SQL = ", ".join(f"h.{name} AS {name}" for name, _ in HISTORY_COLUMNS)
# By record: a constant filter on the clustering columns, so BigQuery reads that record's blocks only.
_HISTORY_BY_KEY = f"""SELECT {_HISTORY_COLUMNS_SQL} FROM {{crm_sync_history}} AS h
WHERE h.object_type = @object_type AND h.record_key = @record_key
ORDER BY h.applied_at DESC, h.changed_at DESC, h.field
LIMIT {{limit}}"""
# By Twenty id alone (a record the sync state no longer names): not pruned, read whole.
_HISTORY_BY_CRM_ID = f"""SELECT {_HISTORY_COLUMNS_SQL} FROM {{crm_sync_history}} AS h
WHERE h.crm_id = @crm_id AND (@object_type IS NULL OR h.object_type = @object_type)
ORDER BY h.applied_at DESC, h.changed_at DESC, h.field
LIMIT {{limit}}"""
_EXPIRE_HISTORY = "DELETE FROM {crm_sync_history} WHERE applied_at < @cutoff"

# A conflict with the review that settled it by hand, if any (a conflict is reviewed once).
_CONFLICTS = """SELECT c.conflict_id AS conflict_id, c.object_type AS object_type, c.record_key AS record_key,
  c.crm_id AS crm_id, c.field AS field, c.base_value AS base_value, c.warehouse_value AS warehouse_value,
  c.twenty_value AS twenty_value, c.winner AS winner, c.run_id AS run_id, c.occurred_at AS occurred_at,
  r.winner AS taken, r.chosen_value AS chosen_value, r.actor AS resolved_by, r.occurred_at AS resolved_at
FROM {crm_sync_conflicts} AS c
LEFT JOIN (SELECT r0.conflict_id AS conflict_id, r0.winner AS winner, r0.chosen_value AS chosen_value,
             r0.actor AS actor, r0.occurred_at AS occurred_at
           FROM {crm_sync_conflicts} AS r0 WHERE r0.kind = 'review') AS r
  ON r.conflict_id = c.conflict_id
WHERE c.kind = 'conflict' AND (NOT @open_only OR r.conflict_id IS NULL)
  AND (@conflict_id IS NULL OR STARTS_WITH(c.conflict_id, @conflict_id))
ORDER BY c.occurred_at DESC, c.conflict_id
LIMIT {limit}"""


class RecordHistory:
    """Appends to and reads crm_sync_history and crm_sync_conflicts."""

    if TYPE_CHECKING:  # provided by Warehouse and its other parts
        read_only: bool

        def _run(self, template: str, binds: Sequence[Bind], *, fetch: bool = False) -> tuple[list[dict[str, Any]], int | None]:
            raise NotImplementedError

        def get_watermark(self, name: str) -> str | None:
            raise NotImplementedError

        def set_watermark(self, name: str, value: str) -> None:
            raise NotImplementedError

        def _existing_columns(self) -> dict[str, set[str]]:
            raise NotImplementedError

        tables: Any

    # Days of history kept (0: forever); the factory sets it from TRUTH_FORGE_HISTORY_RETENTION_DAYS.
    history_retention_days = DEFAULT_RETENTION_DAYS

    # --- history ---------------------------------------------------------------------------------

    def append_history(self, rows: Iterable[Mapping[str, Any]]) -> int:
        """Append history rows (one INSERT, whatever their number); `applied_at` defaults to now."""
        now = dt.datetime.now(dt.UTC)
        prepared = [{**{name: None for name, _ in HISTORY_COLUMNS}, **row} for row in rows]
        for row in prepared:
            row["applied_at"] = row["applied_at"] or now
        if not prepared:
            return 0
        self._run(*q.insert_select("{crm_sync_history}", HISTORY_COLUMNS, prepared))
        return len(prepared)

    def history_of(self, object_type: str | None, *, record_key: str | int | None = None,
                   crm_id: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
        """One record's history rows, newest applied first: by its key (with its object type), or by
        its Twenty id."""
        if record_key is not None:
            if object_type is None:
                raise ValueError("a record key needs its object type")
            rows = self._read("crm_sync_history", _HISTORY_BY_KEY.replace("{limit}", str(_bounded(limit))),
                              (Scalar("object_type", STRING, object_type), Scalar("record_key", STRING, str(record_key))))
        elif crm_id is not None:
            rows = self._read("crm_sync_history", _HISTORY_BY_CRM_ID.replace("{limit}", str(_bounded(limit))),
                              (Scalar("object_type", STRING, object_type), Scalar("crm_id", STRING, crm_id)))
        else:
            raise ValueError("name the record: its key or its Twenty id")
        return [plain_row(r) for r in rows]

    def expire_history(self, days: int, *, now: dt.datetime | None = None) -> int:
        """Delete the history applied before the UTC day `days` days ago (whole days, so on BigQuery
        the DELETE covers whole partitions and bills only those); returns the rows deleted."""
        today = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC).date()
        cutoff = dt.datetime.combine(today - dt.timedelta(days=days), dt.time(), dt.UTC)
        _, affected = self._run(_EXPIRE_HISTORY, (Scalar("cutoff", TIMESTAMP, cutoff),))
        return int(affected or 0)

    def expire_history_daily(self, *, now: dt.datetime | None = None) -> int | None:
        """`expire_history` with the retention setting, at most once a UTC day (None: not due, kept
        forever, or a read-only handle)."""
        days = self.history_retention_days
        if self.read_only or not days:
            return None
        today = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC).date().isoformat()
        if self.get_watermark(_TRIMMED_ON) == today:
            return None
        deleted = self.expire_history(days, now=now)
        self.set_watermark(_TRIMMED_ON, today)
        return deleted

    # --- conflicts -------------------------------------------------------------------------------

    def append_conflicts(self, rows: Iterable[Mapping[str, Any]]) -> list[str]:
        """Append conflict or review rows (one INSERT); returns their conflict ids (new ones for
        conflicts given without)."""
        now = dt.datetime.now(dt.UTC)
        prepared = [{**{name: None for name, _ in CONFLICT_COLUMNS}, **row} for row in rows]
        for row in prepared:
            row["conflict_id"] = row["conflict_id"] or uuid.uuid4().hex
            row["kind"] = row["kind"] or "conflict"
            row["occurred_at"] = row["occurred_at"] or now
        if prepared:
            names = ", ".join(name for name, _ in CONFLICT_COLUMNS)
            self._run(f"INSERT INTO {{crm_sync_conflicts}} ({names}) {q.source_select('rows', CONFLICT_COLUMNS)}",
                      (RowSet("rows", CONFLICT_COLUMNS, prepared),))
        return [row["conflict_id"] for row in prepared]

    def conflicts(self, *, open_only: bool = False, conflict_id: str | None = None,
                  limit: int = 200) -> list[dict[str, Any]]:
        """Conflicts newest first, each with its review (`taken`, `chosen_value`, `resolved_by`,
        `resolved_at`: None while nobody reviewed it). `conflict_id`: the id or a start of it."""
        rows = self._read("crm_sync_conflicts", _CONFLICTS.replace("{limit}", str(_bounded(limit))),
                          (Scalar("open_only", BOOL, open_only), Scalar("conflict_id", STRING, conflict_id)))
        return [plain_row(r) for r in rows]

    def _read(self, table: str, template: str, binds: Sequence[Bind]) -> list[dict[str, Any]]:
        """A read of one of these tables; HistoryNotKept where the table does not exist (a warehouse
        an older truth-forge made, opened read-only: nothing created it yet)."""
        try:
            rows, _ = self._run(template, binds, fetch=True)
        except WarehouseQueryError:
            if self.tables[table] not in self._existing_columns():
                raise HistoryNotKept(f"this warehouse keeps no {table} yet: the next `truth-forge sync` (by this "
                                     f"version) creates it, and records from then on") from None
            raise
        return rows


def _bounded(limit: int) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"limit must be a positive int, got {limit!r}")
    return min(limit, 100_000)
