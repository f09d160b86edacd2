"""The seed's import path: `from truth_forge.services.sync import TwentyCRMService, TwentyCRMClient`."""

from truth_forge.services.sync.crm_client import TwentyCRMClient
from truth_forge.services.sync.crm_service import TwentyCRMService

__all__ = ["TwentyCRMClient", "TwentyCRMService"]
