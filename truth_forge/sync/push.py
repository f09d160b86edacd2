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
from truth_forge.twenty.errors import NextStep, TwentyError, TwentyNotFound

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
            _push_deletions(client, obj, gone, reporter, stats, states)
            _push_upserts(warehouse, client, schema, obj, live, reporter, stats, default_region, states)
        finally:
            # Whatever landed is remembered, and its old errors closed, even when the batch ends early.
            write_by_field_set(warehouse.upsert_sync_state, states)
            synced = [s["record_key"] for s in states if s["status"] in ("synced", "deleted")]
            warehouse.resolve_errors(obj.object_type, synced)
            reporter.flush(warehouse)
    return stats


def _state(obj: SyncedObject, row: Mapping[str, Any], **values: Any) -> dict[str, Any]:
    return {"object_type": obj.object_type, "record_key": str(row[obj.key_column]), **values}


def _fail(reporter: ErrorReporter, obj: SyncedObject, row: Mapping[str, Any], error: BaseException | str,
          operation: str, stats: PushStats, states: list[dict[str, Any]]) -> None:
    entry = reporter.record(object_type=obj.object_type, operation=operation, error=error,
                            record_key=row[obj.key_column], crm_id=row.get("crm_id"))
    # warehouse_hash stays as it was, so the row is still "changed" and is retried next run.
    states.append(_state(obj, row, status="failed", last_error=entry["error_message"][:1000],
                         last_synced_at=now_utc()))
    stats.failed += 1


def _push_deletions(
    client: TwentyClient, obj: SyncedObject, rows: Sequence[Mapping[str, Any]], reporter: ErrorReporter,
    stats: PushStats, states: list[dict[str, Any]],
) -> None:
    for row in rows:
        if row.get("crm_id"):
            try:
                client.records.delete(obj.plural, row["crm_id"], soft=True)
            except TwentyNotFound:
                log.info("%s %s was already gone from Twenty", obj.object_type, row[obj.key_column])
            except TwentyError as exc:
                if exc.next_step is not NextStep.SKIP_RECORD:
                    raise PushAborted(exc) from exc
                _fail(reporter, obj, row, exc, "delete", stats, states)
                continue
        states.append(_state(obj, row, status="deleted", warehouse_hash=row["row_hash"], last_synced_at=now_utc(),
                             last_error=None))
        stats.deleted += 1


# A company link to a business that has no Twenty record yet cannot be sent; None means "unlink".
_NOT_YET = object()


def _company_links(warehouse: Any, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """business_id -> its Twenty id, None when the business is deleted, _NOT_YET when never pushed."""
    business_ids = {r["business_id"] for r in rows if r.get("business_id") is not None}
    found = warehouse.read_sync_state("company", business_ids)
    links: dict[str, Any] = {}
    for key in map(str, business_ids):
        state = found.get(key)
        if state is None or not state.get("crm_id"):
            links[key] = _NOT_YET
        else:
            links[key] = None if state.get("status") == "deleted" else state["crm_id"]
    return links


def _body(schema: CrmSchema, obj: SyncedObject, row: Mapping[str, Any], links: Mapping[str, Any],
          default_region: str | None) -> tuple[dict[str, Any], bool]:
    """The Twenty body for a row, and whether it still waits for its company to reach Twenty."""
    waiting = False
    if obj is PERSON:
        body = mapping.contact_to_person(row, schema, default_region=default_region)
        link = None if row.get("business_id") is None else links.get(str(row["business_id"]), _NOT_YET)
        if link is _NOT_YET:
            waiting = True  # sent without a link now; linked on a later run, once the company is there
        else:
            body["companyId"] = link
    else:
        body = mapping.business_to_company(row, schema)
    if row.get("crm_id"):
        body["id"] = row["crm_id"]
    return body, waiting


def _push_upserts(
    warehouse: Any, client: TwentyClient, schema: CrmSchema, obj: SyncedObject, rows: Sequence[Mapping[str, Any]],
    reporter: ErrorReporter, stats: PushStats, default_region: str | None, states: list[dict[str, Any]],
) -> None:
    if not rows:
        return
    links = _company_links(warehouse, rows) if obj is PERSON else {}
    known: list[tuple[Mapping[str, Any], dict[str, Any], bool]] = []
    new: list[tuple[Mapping[str, Any], dict[str, Any], bool]] = []
    for row in rows:
        try:
            body, waiting = _body(schema, obj, row, links, default_region)
        except ValueError as exc:  # bad data in this row (an unreadable phone...): skip it, keep going
            _fail(reporter, obj, row, exc, "push", stats, states)
            continue
        (known if row.get("crm_id") else new).append((row, body, waiting))
    # Rows Twenty already has are upserted by their Twenty id. New rows are plainly created: an upsert
    # would also match on a unique email or website and silently take over someone else's record.
    _send(client, schema, obj, known, True, reporter, stats, states)
    refused = _send(client, schema, obj, new, False, reporter, stats, states)
    if refused:
        _resume_or_fail(client, schema, obj, refused, reporter, stats, states)


def _send(
    client: TwentyClient, schema: CrmSchema, obj: SyncedObject,
    items: Sequence[tuple[Mapping[str, Any], dict[str, Any], bool]], upsert: bool, reporter: ErrorReporter,
    stats: PushStats, states: list[dict[str, Any]],
) -> list[tuple[tuple[Mapping[str, Any], dict[str, Any], bool], TwentyError]]:
    """Write items; record what landed; return the refused ones (when creating) or record them as failed."""
    if not items:
        return []
    outcome = client.records.create_many(obj.plural, [body for _, body, _ in items], upsert=upsert,
                                         match_key=obj.key_field)
    refused = []
    for failure in outcome.failures:
        if upsert:
            _fail(reporter, obj, items[failure.index][0], failure.error, "push", stats, states)
        else:
            refused.append((items[failure.index], failure.error))
    for (row, _, waiting), record in zip(items, outcome.results, strict=True):
        if record is not None:
            _landed(schema, obj, row, record, waiting, stats, states)
    if outcome.aborted is not None:
        raise PushAborted(outcome.aborted)
    return refused


def _landed(schema: CrmSchema, obj: SyncedObject, row: Mapping[str, Any], record: Mapping[str, Any],
            waiting: bool, stats: PushStats, states: list[dict[str, Any]]) -> None:
    states.append(_state(
        obj, row, crm_id=record["id"], crm_hash=obj.crm_hash(record, schema),
        crm_updated_at=parse_timestamp(record.get("updatedAt")), last_synced_at=now_utc(),
        # A row still waiting for its company keeps no hash, so the next run sends it again.
        warehouse_hash=None if waiting else row["row_hash"], status="pending" if waiting else "synced",
        attempts=0, last_error=None,
    ))
    stats.upserted += 1


def _resume_or_fail(
    client: TwentyClient, schema: CrmSchema, obj: SyncedObject,
    refused: Sequence[tuple[tuple[Mapping[str, Any], dict[str, Any], bool], TwentyError]],
    reporter: ErrorReporter, stats: PushStats, states: list[dict[str, Any]],
) -> None:
    """Creates Twenty refused: a record with our key already there is ours (a run died before saving
    its state, or someone typed the key in Twenty): claim it by id. Anything else is a real failure,
    such as a primary email that another Twenty record already has."""
    keys = [str(row[obj.key_column]) for (row, _, _), _ in refused]
    quoted = ",".join(f'"{k}"' for k in keys)
    try:
        found = {str(r.get(obj.key_field)): r["id"]
                 for r in client.records.iter_records(obj.plural, filter=f"{obj.key_field}[in]:[{quoted}]")}
    except TwentyError as exc:
        if exc.next_step is not NextStep.SKIP_RECORD:
            raise PushAborted(exc) from exc
        found = {}  # the lookup itself was refused: the creates' own errors are the ones to report
    retry = []
    for (row, body, waiting), error in refused:
        crm_id = found.get(str(row[obj.key_column]))
        if crm_id is None:
            _fail(reporter, obj, row, error, "push", stats, states)
        else:
            retry.append((row, {**body, "id": crm_id}, waiting))
    _send(client, schema, obj, retry, True, reporter, stats, states)
