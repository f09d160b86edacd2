"""Everything that speaks Twenty's HTTP API, and nothing else (no warehouse, no sync logic)."""

from truth_forge.twenty.client import TwentyClient
from truth_forge.twenty.errors import (
    NextStep,
    TwentyAuthError,
    TwentyConfigError,
    TwentyError,
    TwentyNotFound,
    TwentyProtocolError,
    TwentyRateLimited,
    TwentyRecordRejected,
    TwentyRequestTooLong,
    TwentyTransientError,
)
from truth_forge.twenty.records import BatchOutcome, Page, RecordFailure

__all__ = [
    "BatchOutcome",
    "NextStep",
    "Page",
    "RecordFailure",
    "TwentyAuthError",
    "TwentyClient",
    "TwentyConfigError",
    "TwentyError",
    "TwentyNotFound",
    "TwentyProtocolError",
    "TwentyRateLimited",
    "TwentyRecordRejected",
    "TwentyRequestTooLong",
    "TwentyTransientError",
]
