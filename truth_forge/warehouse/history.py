"""What the sync did and what is still failing, read back from its bookkeeping tables.

Why it exists: `truth-forge status`, `runs` and `errors` and the alerts answer "what ran last, what
is still broken, since when" without anyone writing SQL. An error's lifecycle is derived from its
rows (one per failed attempt, per record): first seen, last seen, attempts, and resolved once every
row of it is closed (`close_settled_errors` closes them when the record, or for a run-level error
the next successful run, goes through). No extra columns are needed, so older warehouses answer too.

An error seen again supersedes its older row (which closes), so an open error has one open row and
its older, closed ones still count as attempts.

A mixin of `Warehouse`: it runs the same BigQuery-dialect SQL on both engines through `_run`.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from truth_forge.warehouse.binds import Scalar, plain_row
from truth_forge.warehouse.schema import BOOL, STRING, TIMESTAMP

# One "error" as a person sees it: one record's failures in one operation, or, for run-level errors
# (no record named), one kind of failure. Every failed attempt is a row; the group is its lifecycle.
_ERROR_GROUPS = """SELECT e.object_type AS object_type, e.record_key AS record_key, e.crm_id AS crm_id,
  e.operation AS operation,
  IF(e.record_key IS NULL AND e.crm_id IS NULL, e.error_class, NULL) AS run_level_class,
  COUNT(*) AS attempts, MIN(e.occurred_at) AS first_seen, MAX(e.occurred_at) AS last_seen,
  COUNTIF(e.resolved_at IS NULL) AS open_rows, MAX(e.resolved_at) AS resolved_at,
  MAX_BY(e.error_class, e.occurred_at) AS error_class, MAX_BY(e.error_message, e.occurred_at) AS error_message,
  MAX_BY(e.http_status, e.occurred_at) AS http_status, MAX_BY(e.run_id, e.occurred_at) AS last_run_id
FROM {crm_sync_errors} AS e
GROUP BY object_type, record_key, crm_id, operation, run_level_class
HAVING (NOT @open_only OR COUNTIF(e.resolved_at IS NULL) > 0)
  AND (@run_id IS NULL OR COUNTIF(STARTS_WITH(e.run_id, @run_id)) > 0)
ORDER BY last_seen DESC, operation, object_type, record_key, crm_id
LIMIT {limit}"""

_OPEN_ERROR_KINDS = """SELECT g.operation AS operation, g.object_type AS object_type, g.error_class AS error_class,
  COUNT(*) AS open_errors, SUM(g.attempts) AS attempts, MIN(g.first_seen) AS first_seen, MAX(g.last_seen) AS last_seen
FROM (SELECT e.object_type AS object_type, e.operation AS operation, MAX_BY(e.error_class, e.occurred_at) AS error_class,
        COUNT(*) AS attempts, MIN(e.occurred_at) AS first_seen, MAX(e.occurred_at) AS last_seen
      FROM {crm_sync_errors} AS e
      GROUP BY e.object_type, e.record_key, e.crm_id, e.operation,
        IF(e.record_key IS NULL AND e.crm_id IS NULL, e.error_class, NULL)
      HAVING COUNTIF(e.resolved_at IS NULL) > 0) AS g
GROUP BY g.operation, g.object_type, g.error_class
ORDER BY open_errors DESC, operation, object_type, error_class"""

_RUNS = """SELECT r.run_id AS run_id, r.started_at AS started_at, r.finished_at AS finished_at, r.status AS status,
  TO_JSON_STRING(r.counts) AS counts
FROM {crm_sync_runs} AS r ORDER BY r.started_at DESC, r.run_id LIMIT {limit}"""

# A constant filter on a small table, run once per run (not per batch): cheap on both engines.
_CLOSE_STALE_RUNS = """UPDATE {crm_sync_runs} AS t SET finished_at = CURRENT_TIMESTAMP(), status = 'aborted',
  counts = PARSE_JSON(@counts)
WHERE t.status = 'running' AND t.started_at < @before"""

# The state as folded, counting the journal's entries not folded yet (state_journal.py).
_STATE_COUNTS = """WITH j AS (
  SELECT j0.object_type AS object_type, j0.record_key AS record_key,
    MAX_BY(STRUCT(j0.status AS v), IF(STRPOS(j0.fields, ',status,') > 0, j0.seq, NULL)).v AS status,
    MAX(IF(STRPOS(j0.fields, ',status,') > 0, j0.seq, NULL)) IS NOT NULL AS set_status
  FROM {crm_sync_journal} AS j0 GROUP BY j0.object_type, j0.record_key)
SELECT u.object_type AS object_type, u.status AS status, COUNT(*) AS n FROM (
  SELECT COALESCE(s.object_type, j.object_type) AS object_type, IF(j.set_status, j.status, s.status) AS status
  FROM {crm_sync_state} AS s FULL OUTER JOIN j ON s.object_type = j.object_type AND s.record_key = j.record_key
) AS u GROUP BY u.object_type, u.status ORDER BY u.object_type, u.status"""

# Runs that may have left a write of theirs in Twenty without saving its answer: every end but a
# clean one ('succeeded', 'partial') and the live 'running' (the lease holder's own), each with the
# starts of the next three runs (a run that started later holds the lease, or is serve's scheduled
# sync inside its webhook run). Reads three columns of a small table: once per run, and only when
# the merge needs it.
_UNCLEAN_RUNS = """SELECT r.started_at AS started_at, r.finished_at AS finished_at, r.next_1 AS next_1,
  r.next_2 AS next_2, r.next_3 AS next_3
FROM (SELECT t.started_at AS started_at, t.finished_at AS finished_at, t.status AS status,
        LEAD(t.started_at, 1) OVER (ORDER BY t.started_at) AS next_1,
        LEAD(t.started_at, 2) OVER (ORDER BY t.started_at) AS next_2,
        LEAD(t.started_at, 3) OVER (ORDER BY t.started_at) AS next_3
      FROM {crm_sync_runs} AS t) AS r
WHERE r.status NOT IN ('succeeded', 'partial', 'running')"""

_KV = "SELECT t.key AS key, t.value AS value, t.updated_at AS updated_at FROM {crm_sync_kv} AS t ORDER BY t.key"


class RunHistory:
    """Reads over crm_sync_runs, crm_sync_errors, crm_sync_state and crm_sync_kv."""

    _run: Any  # provided by Warehouse

    def close_stale_runs(self, *, before: dt.datetime, closed_by: str) -> int:
        """Close, as aborted, every run row still `running` that started before `before`: the moment
        the calling run set out to take the writer lease it now holds. Such a run's writer no longer
        holds the lease (it was killed, or lost it), so nothing will ever close its row. Returns how
        many were closed."""
        counts = json.dumps({"closed_by_run": closed_by,
                             "reason": "its process ended (or lost the writer lease) before closing the run"},
                            sort_keys=True, separators=(",", ":"))
        _, affected = self._run(_CLOSE_STALE_RUNS, (Scalar("counts", STRING, counts),
                                                    Scalar("before", TIMESTAMP, before)))
        return int(affected or 0)

    def unclean_runs(self) -> list[dict[str, Any]]:
        """Every run that ended otherwise than cleanly (killed and closed since as stale, aborted,
        interrupted): its `started_at`, `finished_at` and `later_starts` (the starts of the next
        three runs, as recorded), from which the sync bounds the span in which a write of that run
        may have landed in Twenty with its answer never saved (sync/own_writes.py, `UnsavedWindows`)."""
        rows, _ = self._run(_UNCLEAN_RUNS, (), fetch=True)
        return [{"started_at": row["started_at"], "finished_at": row["finished_at"],
                 "later_starts": [row[f"next_{n}"] for n in (1, 2, 3) if row[f"next_{n}"] is not None]}
                for row in map(_plain, rows)]

    def recent_runs(self, limit: int = 20) -> list[dict[str, Any]]:
        """The latest runs, newest first, with their counts parsed."""
        rows, _ = self._run(_RUNS.replace("{limit}", str(_bounded(limit))), (), fetch=True)
        return [{**_plain(r), "counts": json.loads(r["counts"]) if isinstance(r["counts"], str) else (r["counts"] or {})}
                for r in rows]

    def error_lifecycles(self, *, open_only: bool = False, run_id: str | None = None,
                         limit: int = 200) -> list[dict[str, Any]]:
        """Errors as people see them, newest first: `attempts`, `first_seen`, `last_seen`, `resolved_at`
        (None while any attempt is open), `is_open`, and the latest class, message and run. `run_id`
        keeps the errors seen in that run (a unique start of the id is enough)."""
        rows, _ = self._run(
            _ERROR_GROUPS.replace("{limit}", str(_bounded(limit))),
            (Scalar("open_only", BOOL, open_only), Scalar("run_id", STRING, run_id)),
            fetch=True,
        )
        out = []
        for row in rows:
            item = _plain(row)
            item["is_open"] = int(item.pop("open_rows")) > 0
            item.pop("run_level_class")
            item["attempts"] = int(item["attempts"])
            if item["is_open"]:
                item["resolved_at"] = None
            out.append(item)
        return out

    def open_error_kinds(self) -> list[dict[str, Any]]:
        """Open errors (one per record and operation, or per kind of run-level failure) counted by
        operation, object type and latest error class, with their attempts and first/last seen."""
        rows, _ = self._run(_OPEN_ERROR_KINDS, (), fetch=True)
        return [{**_plain(r), "open_errors": int(r["open_errors"]), "attempts": int(r["attempts"])} for r in rows]

    def sync_state_counts(self) -> dict[str, dict[str, int]]:
        """object_type -> status -> records."""
        rows, _ = self._run(_STATE_COUNTS, (), fetch=True)
        out: dict[str, dict[str, int]] = {}
        for r in rows:
            out.setdefault(r["object_type"], {})[r["status"] or "unknown"] = int(r["n"])
        return out

    def bookkeeping_values(self) -> dict[str, str]:
        """Everything in crm_sync_kv (watermarks, retry lists, id sequences) by key."""
        rows, _ = self._run(_KV, (), fetch=True)
        return {r["key"]: r["value"] for r in rows}


def _bounded(limit: int) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"limit must be a positive int, got {limit!r}")
    return min(limit, 100_000)


_plain = plain_row
