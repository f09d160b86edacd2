"""Warehouse -> Twenty: send the rows whose hash changed, in batches, and remember what landed.

Change detection happens in the warehouse (`changed_rows`), so only changed rows reach Python.
Each batch becomes one batch upsert keyed on the external id (`contactId` / `businessId`), plus
the Twenty `id` when we know it, so a record is never matched to someone else by a shared email.
The sync state of a whole batch is written back with one MERGE.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from truth_forge.crm_schema import CrmSchema
from truth_forge.reporting import ErrorReporter
from truth_forge.sync import mapping
from truth_forge.sync.objects import PERSON, SyncedObject, now_utc, parse_timestamp, write_by_field_set
from truth_forge.twenty.client import TwentyClient
from truth_forge.twenty.errors import TwentyError, TwentyNotFound

log = logging.getLogger(__name__)

READ_BATCH = 600  # rows fetched from the warehouse at a time: ten write batches of 60


class PushAborted(Exception):
    """Twenty stopped answering usefully (auth, outage): the rest of the push waits for the next run."""

    def __init__(self, cause: TwentyError) -> None:
        self.cause = cause
        super().__init__(str(cause))


@dataclass
class PushStats:
    upserted: int = 0
    deleted: int = 0
    failed: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"upserted": self.upserted, "deleted": self.deleted, "failed": self.failed}


def push_object(
    warehouse: Any,
    client: TwentyClient,
    schema: CrmSchema,
    obj: SyncedObject,
    reporter: ErrorReporter,
    *,
    default_region: str | None = None,
) -> PushStats:
    """Push every changed row of one object type; raises PushAborted when Twenty cannot go on."""
    stats = PushStats()
    for rows in warehouse.changed_rows(obj.object_type, batch_size=READ_BATCH):
        live = [r for r in rows if r.get("deleted_at") is None]
        gone = [r for r in rows if r.get("deleted_at") is not None]
        states: list[dict[str, Any]] = []
        try:
            states += _push_deletions(client, obj, gone, reporter, stats)
            states += _push_upserts(warehouse, client, schema, obj, live, reporter, stats, default_region)
        finally:
            # Whatever landed is remembered even when the batch ends early.
            write_by_field_set(warehouse.upsert_sync_state, states)
            synced = [s["record_key"] for s in states if s["status"] in ("synced", "deleted")]
            warehouse.resolve_errors(obj.object_type, synced)
            reporter.flush(warehouse)
    return stats


def _state(obj: SyncedObject, row: Mapping[str, Any], **values: Any) -> dict[str, Any]:
    return {"object_type": obj.object_type, "record_key": str(row[obj.key_column]), **values}


def _failed_state(obj: SyncedObject, row: Mapping[str, Any], error: BaseException) -> dict[str, Any]:
    # warehouse_hash stays as it was, so the row is still "changed" and is retried next run.
    return _state(obj, row, status="failed", last_error=str(error)[:1000], last_synced_at=now_utc())


def _push_deletions(
    client: TwentyClient, obj: SyncedObject, rows: Sequence[Mapping[str, Any]], reporter: ErrorReporter,
    stats: PushStats,
) -> list[dict[str, Any]]:
    states = []
    for row in rows:
        if row.get("crm_id"):
            try:
                client.records.delete(obj.plural, row["crm_id"], soft=True)
            except TwentyNotFound:
                log.info("%s %s was already gone from Twenty", obj.object_type, row[obj.key_column])
            except TwentyError as exc:
                if exc.next_step.value != "skip_record":
                    raise PushAborted(exc) from exc
                reporter.record(object_type=obj.object_type, operation="delete", error=exc,
                                record_key=row[obj.key_column], crm_id=row["crm_id"])
                states.append(_failed_state(obj, row, exc))
                stats.failed += 1
                continue
        states.append(_state(obj, row, status="deleted", warehouse_hash=row["row_hash"], last_synced_at=now_utc(),
                             last_error=None))
        stats.deleted += 1
    return states


def _company_ids(warehouse: Any, rows: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    business_ids = {r["business_id"] for r in rows if r.get("business_id") is not None}
    found = warehouse.read_sync_state("company", business_ids)
    return {key: s["crm_id"] for key, s in found.items() if s.get("crm_id") and s.get("status") != "deleted"}


def _body(schema: CrmSchema, obj: SyncedObject, row: Mapping[str, Any], company_ids: Mapping[str, str],
          default_region: str | None) -> dict[str, Any]:
    if obj is PERSON:
        company = company_ids.get(str(row.get("business_id")))
        body = mapping.contact_to_person(row, schema, company_crm_id=company, default_region=default_region)
    else:
        body = mapping.business_to_company(row, schema)
    if row.get("crm_id"):
        body["id"] = row["crm_id"]
    return body


def _push_upserts(
    warehouse: Any, client: TwentyClient, schema: CrmSchema, obj: SyncedObject, rows: Sequence[Mapping[str, Any]],
    reporter: ErrorReporter, stats: PushStats, default_region: str | None,
) -> list[dict[str, Any]]:
    if not rows:
        return []
    company_ids = _company_ids(warehouse, rows) if obj is PERSON else {}
    states: list[dict[str, Any]] = []
    sendable: list[Mapping[str, Any]] = []
    bodies: list[dict[str, Any]] = []
    for row in rows:
        try:
            bodies.append(_body(schema, obj, row, company_ids, default_region))
            sendable.append(row)
        except ValueError as exc:  # bad data in this row (an unreadable phone...): skip it, keep going
            reporter.record(object_type=obj.object_type, operation="push", error=exc, record_key=row[obj.key_column],
                            crm_id=row.get("crm_id"))
            states.append(_failed_state(obj, row, exc))
            stats.failed += 1
    outcome = client.records.create_many(obj.plural, bodies, upsert=True, match_key=obj.key_field)
    for failure in outcome.failures:
        row = sendable[failure.index]
        reporter.record(object_type=obj.object_type, operation="push", error=failure.error,
                        record_key=row[obj.key_column], crm_id=row.get("crm_id"))
        states.append(_failed_state(obj, row, failure.error))
        stats.failed += 1
    for row, record in zip(sendable, outcome.results):
        if record is None:
            continue
        states.append(_state(
            obj, row, crm_id=record["id"], warehouse_hash=row["row_hash"], crm_hash=obj.crm_hash(record, schema),
            crm_updated_at=parse_timestamp(record.get("updatedAt")), last_synced_at=now_utc(), status="synced",
            attempts=0, last_error=None,
        ))
        stats.upserted += 1
    if outcome.aborted is not None:
        write_by_field_set(warehouse.upsert_sync_state, states)
        raise PushAborted(outcome.aborted)
    return states
