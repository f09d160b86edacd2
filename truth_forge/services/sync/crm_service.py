"""`TwentyCRMService`: the seed's service object: set up the CRM side, and sync from it."""

from __future__ import annotations

from typing import Any

from truth_forge.core.config import Settings
from truth_forge.core.crm_schema import CrmSchema, setup_schema, verify_schema
from truth_forge.core.reporting import ErrorReporter
from truth_forge.services.sync.crm_client import TwentyCRMClient, is_twenty_id
from truth_forge.sync.context import SyncContext
from truth_forge.sync.objects import PERSON
from truth_forge.sync.pull import pull_records
from truth_forge.sync.runner import run_sync


class TwentyCRMService:
    """`with TwentyCRMService() as service: service.setup_crm(); service.sync_all_from_crm()`.

    The warehouse is opened from `settings.warehouse_url` on first use (or pass one in).
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        client: TwentyCRMClient | None = None,
        schema: CrmSchema | None = None,
        warehouse: Any = None,
        **client_options: Any,
    ) -> None:
        self.settings = settings or Settings()
        self.client = client or TwentyCRMClient(self.settings, schema=schema, **client_options)
        self.schema = schema or self.client.schema
        self._warehouse = warehouse
        self._owns_warehouse = warehouse is None

    @property
    def warehouse(self) -> Any:
        if self._warehouse is None:
            from truth_forge.warehouse import open_warehouse

            self._warehouse = open_warehouse(self.settings)
            self._warehouse.ensure_tables()
        return self._warehouse

    def setup_crm(self) -> dict[str, Any]:
        """Create the custom fields and SELECT options that are missing; returns what it did and the check."""
        return setup_schema(self.client.api, self.schema)

    def verify_setup(self) -> dict[str, Any]:
        """`{"all_complete": bool, "person": {present, missing, mismatched, complete}, "company": {...}}`."""
        return verify_schema(self.client.api, self.schema)

    def sync_contact_from_crm(self, crm_contact_id: str) -> dict[str, Any]:
        """Bring one Twenty person into the warehouse now (a soft-deleted one is deleted there too).

        Returns what happened; problems are in `sync_errors`, as the seed describes, not raised.
        """
        warehouse = self.warehouse
        api = self.client.api
        reporter = ErrorReporter(run_id=f"single:{crm_contact_id}", secrets=api.transport.secrets)
        friendly = self.client.get_contact(crm_contact_id)
        record = friendly["raw"] if friendly else self._soft_deleted_person(crm_contact_id)
        if record is None:
            reporter.record(object_type="person", operation="pull", crm_id=crm_contact_id,
                            error=f"Twenty has no person with id {crm_contact_id!r}")
            reporter.flush(warehouse)
            return {"crm_id": crm_contact_id, "contact_id": None, "counts": {}, "sync_errors": reporter.sync_errors,
                    "success": False}
        stats = pull_records(SyncContext(warehouse, api, self.schema, reporter), PERSON, [record])
        state = warehouse.read_sync_state_by_crm_id("person", [crm_contact_id]).get(crm_contact_id)
        return {"crm_id": crm_contact_id, "contact_id": int(state["record_key"]) if state else None,
                "counts": stats.as_dict(), "sync_errors": reporter.sync_errors, "success": not reporter.count}

    def _soft_deleted_person(self, crm_id: str) -> dict[str, Any] | None:
        if not is_twenty_id(crm_id):
            return None
        page = self.client.api.records.find_page(
            "people", filter=f'and(id[eq]:"{crm_id}",deletedAt[is]:NOT_NULL)', limit=1)
        return page.records[0] if page.records else None

    def sync_all_from_crm(self) -> dict[str, Any]:
        """Pull every change made in Twenty since the last pull into the warehouse."""
        return run_sync(self.warehouse, self.client.api, self.schema, direction="pull").as_dict()

    def sync_all(self) -> dict[str, Any]:
        """A full two-way run: pull Twenty's edits, then push the warehouse's changes."""
        return run_sync(self.warehouse, self.client.api, self.schema).as_dict()

    def close(self) -> None:
        try:
            if self._owns_warehouse and self._warehouse is not None:
                self._warehouse.close()
        finally:
            self.client.close()

    def __enter__(self) -> TwentyCRMService:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
