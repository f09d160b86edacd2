"""The seed's import path: `from truth_forge.services.sync import TwentyCRMService, TwentyCRMClient`,
and its two sync services, `CRMTwentySyncService` and `BigQuerySyncService`."""

from truth_forge.services.sync.crm_client import TwentyCRMClient
from truth_forge.services.sync.crm_service import TwentyCRMService
from truth_forge.services.sync.flows import BigQuerySyncService, CRMTwentySyncService

__all__ = ["BigQuerySyncService", "CRMTwentySyncService", "TwentyCRMClient", "TwentyCRMService"]
