"""`TwentyCRMService`: the seed's service object for setting up and checking the CRM side."""

from __future__ import annotations

from typing import Any

from truth_forge.config import Settings
from truth_forge.crm_schema import CrmSchema, setup_schema, verify_schema
from truth_forge.services.sync.crm_client import TwentyCRMClient


class TwentyCRMService:
    """`with TwentyCRMService() as service: service.setup_crm(); service.verify_setup()`."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        client: TwentyCRMClient | None = None,
        schema: CrmSchema | None = None,
        **client_options: Any,
    ) -> None:
        self.settings = settings or Settings()
        self.client = client or TwentyCRMClient(self.settings, schema=schema, **client_options)
        self.schema = schema or self.client.schema

    def setup_crm(self) -> dict[str, Any]:
        """Create the custom fields and SELECT options that are missing; returns what it did and the check."""
        return setup_schema(self.client.api, self.schema)

    def verify_setup(self) -> dict[str, Any]:
        """`{"all_complete": bool, "person": {present, missing, mismatched, complete}, "company": {...}}`."""
        return verify_schema(self.client.api, self.schema)

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> "TwentyCRMService":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
