"""One object that holds a connection to a Twenty workspace: records and metadata over one transport."""

from __future__ import annotations

from typing import Any

import httpx

from truth_forge.core.config import Settings
from truth_forge.twenty.metadata import MetadataApi
from truth_forge.twenty.pool import RequestPool
from truth_forge.twenty.records import RecordsApi
from truth_forge.twenty.transport import RetryPolicy, Transport


class TwentyClient:
    """Low-level Twenty API client in Twenty's own shapes (camelCase, composites).

    The seed's friendly interface (`TwentyCRMClient`) is built on top of this one.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        batch_size: int | None = None,
        requests_per_minute: float = 100,
        burst: int | None = None,
        timeout: float = 30.0,
        max_retries: int = 6,
        http_transport: httpx.BaseTransport | None = None,
        **transport_options: Any,
    ) -> None:
        self.transport = Transport(
            base_url,
            api_key,
            timeout=timeout,
            requests_per_minute=requests_per_minute,
            burst=burst,
            retry=RetryPolicy(max_retries=max_retries),
            http_transport=http_transport,
            **transport_options,
        )
        self.pool = RequestPool(self.transport.max_in_flight)
        # None: start at Twenty's server maximum and learn its limit (the runner remembers it).
        self.records = RecordsApi(self.transport, batch_size=batch_size, pool=self.pool)
        self.metadata = MetadataApi(self.transport)

    @classmethod
    def from_settings(cls, settings: Settings | None = None, *, api_key: str | None = None, **options: Any) -> TwentyClient:
        """Build from settings; the key comes from Secret Manager or the environment unless given."""
        settings = settings or Settings()
        if api_key is None:
            from truth_forge.core.secrets import resolve_api_key

            api_key = resolve_api_key(settings)
        return cls(settings.twenty_base_url, api_key, **{**client_options(settings), **options})

    def __repr__(self) -> str:
        return f"TwentyClient(base_url={self.transport.base_url!r})"

    def close(self) -> None:
        self.pool.close()
        self.transport.close()

    def __enter__(self) -> TwentyClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def client_options(settings: Settings) -> dict[str, Any]:
    """The client's options from settings (for `from_settings` and for processes built elsewhere)."""
    return {
        # Only a size the user set is fixed; otherwise it is learned from the server.
        "batch_size": settings.twenty_batch_size if "twenty_batch_size" in settings.model_fields_set else None,
        "requests_per_minute": settings.twenty_requests_per_minute,
        "timeout": settings.twenty_timeout_seconds,
        "deadline": settings.twenty_request_deadline_seconds,
        "max_retries": settings.twenty_max_retries,
        "max_request_line": settings.twenty_max_request_line,
    }
