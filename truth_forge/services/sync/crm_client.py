"""`TwentyCRMClient`: the seed's friendly client, translating its dicts to Twenty's shapes at the edge.

Friendly input: `{"name": "Jane Doe", "email": ..., "phone": ..., "customFields": {"contact_id": ...}}`
(companies: `name`, `domainName` as a URL string). Output: the same friendly form plus `id` and the
record exactly as Twenty sent it under `raw`.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from typing import Any

from truth_forge.core.config import Settings
from truth_forge.core.crm_schema import CrmSchema, ObjectName
from truth_forge.sync.mapping import to_twenty_value
from truth_forge.twenty import shapes
from truth_forge.twenty.client import TwentyClient
from truth_forge.twenty.errors import TwentyNotFound

log = logging.getLogger(__name__)

PLURAL: dict[ObjectName, str] = {"person": "people", "company": "companies"}
EXTERNAL_ID: dict[ObjectName, str] = {"person": "contact_id", "company": "business_id"}


def is_twenty_id(value: str) -> bool:
    """Twenty record ids are UUIDs; anything else cannot name a record."""
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True


class TwentyCRMClient:
    """The seed's client: `with TwentyCRMClient() as client: client.get_contact(...)`."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        api_key: str | None = None,
        client: TwentyClient | None = None,
        schema: CrmSchema | None = None,
        **options: Any,
    ) -> None:
        self.settings = settings or Settings()
        self.api = client or TwentyClient.from_settings(self.settings, api_key=api_key, **options)
        self.schema = schema or CrmSchema.load(self.settings.crm_schema_file)

    # -- translation ---------------------------------------------------------------------------

    def _normalise_custom(self, obj: ObjectName, data: Mapping[str, Any]) -> dict[str, Any]:
        by_column = self.schema.by_column(obj)
        custom = dict(data.get("customFields") or {})
        converted = {
            key: to_twenty_value(by_column[key], value) if key in by_column else value
            for key, value in custom.items()
        }
        return {**data, "customFields": converted}

    def to_twenty(self, obj: ObjectName, data: Mapping[str, Any]) -> dict[str, Any]:
        friendly = self._normalise_custom(obj, data)
        return shapes.person_to_twenty(friendly) if obj == "person" else shapes.company_to_twenty(friendly)

    def from_twenty(self, obj: ObjectName, record: Mapping[str, Any]) -> dict[str, Any]:
        names = self.schema.by_name(obj).keys()
        if obj == "person":
            return shapes.person_from_twenty(record, names)
        return shapes.company_from_twenty(record, names)

    # -- generic operations ------------------------------------------------------------------------

    def _get(self, obj: ObjectName, record_id: str) -> dict[str, Any] | None:
        if not is_twenty_id(record_id):
            # Twenty ids are UUIDs; anything else cannot name a record (Twenty would answer 400).
            log.info("%r is not a Twenty record id (a UUID); no %s has it", record_id, obj)
            return None
        try:
            return self.from_twenty(obj, self.api.records.get(PLURAL[obj], record_id))
        except TwentyNotFound:
            return None

    def _list(self, obj: ObjectName, limit: int, filter: str | None) -> list[dict[str, Any]]:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        records = self.api.records.iter_records(
            PLURAL[obj], max_records=limit, filter=filter, page_size=min(limit, 200)
        )
        return [self.from_twenty(obj, r) for r in records]

    def _create(self, obj: ObjectName, data: Mapping[str, Any], *, upsert: bool) -> dict[str, Any]:
        if upsert:
            key = EXTERNAL_ID[obj]
            if (data.get("customFields") or {}).get(key) in (None, ""):
                raise ValueError(f"upsert needs customFields.{key}: it is the key Twenty matches records on")
        body = self.to_twenty(obj, data)
        return self.from_twenty(obj, self.api.records.create(PLURAL[obj], body, upsert=upsert))

    def _update(self, obj: ObjectName, record_id: str, data: Mapping[str, Any]) -> dict[str, Any]:
        body = self.to_twenty(obj, data)
        return self.from_twenty(obj, self.api.records.update(PLURAL[obj], record_id, body))

    # -- people ------------------------------------------------------------------------------------

    def get_contact(self, contact_id: str) -> dict[str, Any] | None:
        """A person by Twenty id, or None when there is none."""
        return self._get("person", contact_id)

    def list_contacts(self, limit: int = 60, *, filter: str | None = None) -> list[dict[str, Any]]:
        return self._list("person", limit, filter)

    def create_contact(self, data: Mapping[str, Any]) -> dict[str, Any]:
        return self._create("person", data, upsert=False)

    def upsert_contact(self, data: Mapping[str, Any]) -> dict[str, Any]:
        """Create or update the person whose `customFields.contact_id` matches (Twenty's `contactId`)."""
        return self._create("person", data, upsert=True)

    def update_contact(self, contact_id: str, data: Mapping[str, Any]) -> dict[str, Any]:
        return self._update("person", contact_id, data)

    def delete_contact(self, contact_id: str) -> dict[str, Any]:
        """Soft delete (restorable in Twenty's UI)."""
        return self.api.records.delete("people", contact_id, soft=True)

    # -- companies ---------------------------------------------------------------------------------

    def get_company(self, company_id: str) -> dict[str, Any] | None:
        return self._get("company", company_id)

    def list_companies(self, limit: int = 60, *, filter: str | None = None) -> list[dict[str, Any]]:
        return self._list("company", limit, filter)

    def create_company(self, data: Mapping[str, Any]) -> dict[str, Any]:
        return self._create("company", data, upsert=False)

    def upsert_company(self, data: Mapping[str, Any]) -> dict[str, Any]:
        """Create or update the company whose `customFields.business_id` matches (Twenty's `businessId`)."""
        return self._create("company", data, upsert=True)

    def update_company(self, company_id: str, data: Mapping[str, Any]) -> dict[str, Any]:
        return self._update("company", company_id, data)

    def delete_company(self, company_id: str) -> dict[str, Any]:
        return self.api.records.delete("companies", company_id, soft=True)

    # -- lifecycle ---------------------------------------------------------------------------------

    @property
    def request_stats(self) -> Any:
        return self.api.transport.stats

    def close(self) -> None:
        self.api.close()

    def __enter__(self) -> TwentyCRMClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
