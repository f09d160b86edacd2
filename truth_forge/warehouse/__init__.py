"""The canonical contacts store behind one interface: DuckDB (embedded default) or BigQuery.

`open_warehouse(settings_or_url)` picks the engine from `warehouse_url`; see `base.Warehouse` for
the operations and row shapes. This package knows nothing about any CRM: snake_case only.
"""

from truth_forge.warehouse.base import ObjectType, Warehouse
from truth_forge.warehouse.errors import (
    WarehouseConfigError,
    WarehouseDataError,
    WarehouseError,
    WarehouseLockedError,
    WarehouseMissing,
    WarehouseOutOfMemory,
    WarehouseQueryError,
)
from truth_forge.warehouse.factory import open_warehouse, parse_warehouse_url
from truth_forge.warehouse.schema import TABLES, TableNames

__all__ = [
    "ObjectType",
    "TABLES",
    "TableNames",
    "Warehouse",
    "WarehouseConfigError",
    "WarehouseDataError",
    "WarehouseError",
    "WarehouseLockedError",
    "WarehouseMissing",
    "WarehouseOutOfMemory",
    "WarehouseQueryError",
    "open_warehouse",
    "parse_warehouse_url",
]
