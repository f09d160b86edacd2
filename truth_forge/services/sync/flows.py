"""The seed's two sync services, with its names and its flow.

"CRM -> BigQuery -> All": a change made in Twenty comes into the warehouse
(`CRMTwentySyncService.sync_from_crm_to_bigquery()`), and from there goes to every other target
(`BigQuerySyncService.sync_contact_to_all(contact_id)`). "BigQuery -> CRM": a change made in the
warehouse goes to Twenty (`BigQuerySyncService._sync_to_crm_twenty()`). Each returns its counts and
a `sync_errors` list; nothing is raised for a record that failed. "BigQuery" is the seed's word
for the warehouse: on DuckDB the services do the same.
"""

from __future__ import annotations

from typing import Any

from truth_forge.core.reporting import ErrorReporter
from truth_forge.services.sync.crm_service import TwentyCRMService
from truth_forge.services.sync.targets import SyncTarget, load_targets
from truth_forge.sync.context import SyncContext, SyncEvent
from truth_forge.sync.objects import PERSON
from truth_forge.sync.push import PushAborted, push_keys
from truth_forge.sync.runner import run_sync


class BigQuerySyncService(TwentyCRMService):
    """The warehouse as the source: one contact out to every target, or every change out to Twenty."""

    def __init__(self, *args: Any, targets: list[SyncTarget] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._targets = targets

    @property
    def targets(self) -> list[SyncTarget]:
        """The plug-in targets after Twenty: given, or loaded from `settings.sync_targets`."""
        if self._targets is None:
            self._targets = load_targets(self.settings)
        return self._targets

    def sync_contact_to_all(self, contact_id: int) -> dict[str, Any]:
        """Send one contact to Twenty (only if it changed since it was last synced), then to every
        plug-in target. A target that fails is reported and the others still get the contact."""
        reporter = ErrorReporter(run_id=f"contact:{contact_id}", secrets=self.client.api.transport.secrets)
        results: dict[str, Any] = {}
        ctx = SyncContext(self.warehouse, self.client.api, self.schema, reporter)
        try:
            results["twenty"] = push_keys(ctx, PERSON, [int(contact_id)]).as_dict()
        except PushAborted as stop:
            reporter.record(object_type="person", operation="push", record_key=contact_id, error=stop.cause)
            results["twenty"] = stop.stats.as_dict() if stop.stats else {}
        rows = self.warehouse.get_rows("person", [int(contact_id)])
        if not rows:
            reporter.record(object_type="person", operation="sync_to_all", record_key=contact_id,
                            error=f"the warehouse has no contact {contact_id}")
        for target in self.targets if rows else []:
            try:
                results[target.name] = dict(target.sync_contact(rows[0]))
            except Exception as exc:  # one target's failure is reported, never the others' stop
                reporter.record(object_type="person", operation=f"target:{target.name}", record_key=contact_id,
                                error=exc)
        reporter.flush(self.warehouse)
        return {"contact_id": int(contact_id), "targets": results, "sync_errors": reporter.sync_errors,
                "success": not reporter.count}

    def _sync_to_crm_twenty(self) -> dict[str, Any]:
        """Every warehouse change out to Twenty (a push-only run)."""
        return run_sync(self.warehouse, self.client.api, self.schema, direction="push").as_dict()


class CRMTwentySyncService(TwentyCRMService):
    """Twenty as the source: its changes into the warehouse, and from there to the other targets."""

    def __init__(self, *args: Any, propagate_to: BigQuerySyncService | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.propagate_to = propagate_to

    def sync_from_crm_to_bigquery(self) -> dict[str, Any]:
        """Pull Twenty's changes into the warehouse; with `propagate_to`, send each contact that
        changed on to every other target (`sync_contact_to_all`)."""
        pulled: list[int] = []

        def collect(event: SyncEvent) -> None:
            if event.kind == "records_pulled" and event.object_type == "person":
                pulled.extend(event.detail.get("keys", []))

        result = run_sync(self.warehouse, self.client.api, self.schema, direction="pull", on_event=collect).as_dict()
        result["contacts_changed"] = sorted(set(pulled))
        if self.propagate_to is not None:
            onward = [self.propagate_to.sync_contact_to_all(key) for key in result["contacts_changed"]]
            result["propagated"] = {o["contact_id"]: o["targets"] for o in onward}
            result["sync_errors"] += [e for o in onward for e in o["sync_errors"]]
        return result
