"""`open_warehouse`: turn `warehouse_url` (or Settings) into a connected `Warehouse`.

Why it exists: callers name a warehouse by one URL setting and never import an engine module:
  duckdb:///relative/file.duckdb   duckdb:////absolute/file.duckdb   duckdb:///:memory:
    optional ?read_only=true (several readers may share a file; no writer then)
    &memory_limit=120MB &threads=1 &temp_directory=DIR (DuckDB's memory bound and spill folder)
  bigquery://PROJECT/DATASET       bigquery:///DATASET (project from gcp_project_id or the client)
    optional ?endpoint=http://127.0.0.1:9050 (an emulator: anonymous credentials) &location=EU
  either engine: &change_range_rows=N (rows per change-detection range; see Warehouse.changed_rows)
    &journal_fold_share=F (fold the sync-state journal once its entries reach F times the state's
    rows; 0 folds at every settle: DuckDB's default; BigQuery's is 0.1; see state_journal.py)
    &stage_pulled=true|false (land pulled values through crm_sync_pending: BigQuery's default)
    &pending_fold_minutes=M (staged values land at a run's end once the oldest waited M minutes;
    default 0, every run; see pending_rows.py)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlsplit

from truth_forge.warehouse.base import Warehouse
from truth_forge.warehouse.errors import WarehouseConfigError
from truth_forge.warehouse.schema import TableNames

DEFAULT_TIMEOUT_SECONDS = 30.0  # Settings.warehouse_timeout_seconds when no settings are given

if TYPE_CHECKING:
    from truth_forge.core.config import Settings


@dataclass(frozen=True)
class WarehouseURL:
    engine: str  # 'duckdb' | 'bigquery'
    path: str = ""  # duckdb file path or ':memory:'
    project: str | None = None
    dataset: str = ""
    options: dict[str, str] = field(default_factory=dict)


_EITHER = {"change_range_rows", "journal_fold_share", "stage_pulled", "pending_fold_minutes"}
_KNOWN_OPTIONS = {"duckdb": {"read_only", "memory_limit", "threads", "temp_directory", *_EITHER},
                  "bigquery": {"endpoint", "location", *_EITHER}}


def parse_warehouse_url(url: str) -> WarehouseURL:
    """Parse and check a warehouse URL; raise WarehouseConfigError saying what is wrong."""
    parts = urlsplit(url.strip())
    options = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
    engine = parts.scheme.lower()
    if engine not in _KNOWN_OPTIONS:
        raise WarehouseConfigError(
            f"warehouse_url {url!r}: scheme must be duckdb:// or bigquery:// "
            "(e.g. duckdb:///truth_forge.duckdb or bigquery://my-project/my_dataset)"
        )
    unknown = sorted(set(options) - _KNOWN_OPTIONS[engine])
    if unknown:
        raise WarehouseConfigError(f"warehouse_url {url!r}: unknown options {unknown}")
    if engine == "duckdb":
        if parts.netloc:
            raise WarehouseConfigError(
                f"warehouse_url {url!r}: a DuckDB URL has three slashes, duckdb:///file.duckdb "
                "(four for an absolute path: duckdb:////var/data/file.duckdb)"
            )
        path = unquote(parts.path[1:])  # one slash separates the empty host from the path
        if not path:
            raise WarehouseConfigError(f"warehouse_url {url!r}: missing the file path (or :memory:)")
        return WarehouseURL("duckdb", path=path, options=options)
    segments = [s for s in parts.path.split("/") if s]
    if len(segments) != 1:
        raise WarehouseConfigError(f"warehouse_url {url!r}: expected bigquery://PROJECT/DATASET")
    return WarehouseURL("bigquery", project=parts.netloc or None, dataset=segments[0], options=options)


def open_warehouse(
    url_or_settings: str | Settings | None = None,
    *,
    tables: Mapping[str, str] | None = None,
    client: Any = None,
    create: bool = True,
    read_only: bool = False,
) -> Warehouse:
    """Connect to the warehouse and create missing tables. Use as a context manager.

    `tables` renames tables (default: the settings' `warehouse_tables`); `client` injects a
    `google.cloud.bigquery.Client` (tests, custom credentials) for bigquery:// URLs. With
    `create=False` a DuckDB file or BigQuery dataset that does not exist is refused
    (`WarehouseMissing`) instead of created, so a typo cannot start an empty warehouse.
    `read_only=True` opens a DuckDB file read-only (as `?read_only=true` does), for dry runs.
    """
    project_hint: str | None = None
    timeout = DEFAULT_TIMEOUT_SECONDS
    retention: int | None = None  # days of record history kept (record_history.py); None: the default
    if url_or_settings is None or not isinstance(url_or_settings, str):
        from truth_forge.core.config import get_settings

        settings = url_or_settings if url_or_settings is not None else get_settings()
        url = settings.warehouse_url
        project_hint = settings.gcp_project_id
        timeout = settings.warehouse_timeout_seconds
        retention = settings.history_retention_days
        if tables is None:
            tables = settings.warehouse_tables
    else:
        url = url_or_settings
    names = TableNames(dict(tables or {}))
    parsed = parse_warehouse_url(url)
    range_rows = (_whole_number(url, "change_range_rows", parsed.options["change_range_rows"])
                  if "change_range_rows" in parsed.options else None)
    fold_share = (_share(url, "journal_fold_share", parsed.options["journal_fold_share"])
                  if "journal_fold_share" in parsed.options else None)
    if parsed.engine == "duckdb":
        from truth_forge.warehouse.duckdb import DuckDBWarehouse

        read_only = read_only or parsed.options.get("read_only", "false").lower() in {"1", "true", "yes"}
        tuning: dict[str, Any] = {}
        if "memory_limit" in parsed.options:
            tuning["memory_limit"] = parsed.options["memory_limit"]
        if "threads" in parsed.options:
            tuning["threads"] = _whole_number(url, "threads", parsed.options["threads"])
        if parsed.options.get("temp_directory"):
            tuning["temp_directory"] = parsed.options["temp_directory"]
        return _kept(retention, _staging(url, parsed, DuckDBWarehouse(parsed.path, names, read_only=read_only, create=create,
                                                     change_range_rows=range_rows, journal_fold_share=fold_share,
                                                     **tuning)))
    try:
        from truth_forge.warehouse.bigquery import BigQueryWarehouse
    except ImportError as exc:
        raise WarehouseConfigError(
            f"warehouse_url {url!r} needs the BigQuery client, which is not installed ({exc.name} is missing): "
            "pip install 'truth-forge[bigquery]'"
        ) from None

    return _kept(retention, _staging(url, parsed, BigQueryWarehouse(
        project=parsed.project or project_hint,
        dataset=parsed.dataset,
        tables=names,
        client=client,
        endpoint=parsed.options.get("endpoint"),
        location=parsed.options.get("location"),
        create=create,
        read_only=read_only,
        timeout=timeout,
        change_range_rows=range_rows,
        journal_fold_share=fold_share,
    )))


def _kept(retention: int | None, warehouse: Warehouse) -> Warehouse:
    """The settings' say on how long the record history is kept, over the default."""
    if retention is not None:
        warehouse.history_retention_days = retention
    return warehouse


def _staging(url: str, parsed: WarehouseURL, warehouse: Warehouse) -> Warehouse:
    """The URL's say on staging pulled values (pending_rows.py), over the engine's default."""
    if "stage_pulled" in parsed.options:
        text = parsed.options["stage_pulled"].lower()
        if text not in _BOOLEANS:
            raise WarehouseConfigError(f"warehouse_url {url!r}: stage_pulled must be true or false, got {text!r}")
        warehouse.stage_pulled_rows = _BOOLEANS[text]
    if "pending_fold_minutes" in parsed.options:
        warehouse.pending_fold_minutes = _share(url, "pending_fold_minutes", parsed.options["pending_fold_minutes"])
    return warehouse


_BOOLEANS = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}


def _share(url: str, option: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise WarehouseConfigError(f"warehouse_url {url!r}: {option} must be a number >= 0 (e.g. 0.1), got {text!r}")
    return value


def _whole_number(url: str, option: str, text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise WarehouseConfigError(f"warehouse_url {url!r}: {option} must be a whole number >= 1, got {text!r}")
    return value
