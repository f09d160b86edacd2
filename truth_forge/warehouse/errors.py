"""Typed warehouse errors, named by what the caller should do next.

Why it exists: the sync must tell "fix your configuration" from "this record is bad, skip it" from
"the warehouse is busy, try later" without parsing engine-specific messages.
"""

from __future__ import annotations


class WarehouseError(Exception):
    """Base class of every error raised by `truth_forge.warehouse`."""


class WarehouseConfigError(WarehouseError):
    """The warehouse URL or table configuration is wrong: fix the settings, retrying won't help."""


class WarehouseMissing(WarehouseConfigError):
    """The warehouse the URL names does not exist, and the caller did not ask to create it.

    A typo in a file name must not quietly start an empty warehouse that then imports the whole CRM.
    """

    def __init__(self, what: str) -> None:
        super().__init__(
            f"{what}. Check TRUTH_FORGE_WAREHOUSE_URL, or create a new warehouse with "
            "`truth-forge init` (or `truth-forge sync --create`)"
        )


class WarehouseLockedError(WarehouseError):
    """Another process holds the embedded DuckDB file open for writing: wait for it, or stop it."""

    def __init__(self, path: str, detail: str) -> None:
        self.path = path
        self.detail = detail
        super().__init__(
            f"warehouse file {path!r} is in use by another process, and DuckDB allows only one "
            "writer per file. Wait for that process (e.g. a running `truth-forge sync` or server) "
            "to finish or stop it, or point TRUTH_FORGE_WAREHOUSE_URL at another file. "
            f"DuckDB said: {detail}"
        )


class WarehouseDataError(WarehouseError):
    """A row given to the warehouse is invalid (missing key, wrong type): nothing of the batch was written."""

    def __init__(self, table: str, row_index: int | None, message: str) -> None:
        self.table = table
        self.row_index = row_index
        where = f"{table} row {row_index}" if row_index is not None else table
        super().__init__(f"{where}: {message}")


class WarehouseQueryError(WarehouseError):
    """The engine rejected or failed a statement; the message keeps the engine's own words.

    The whole statement is kept on `.statement` (for `-v` and debugging), not in the message, so a
    user sees one readable line rather than a page of SQL.
    """

    def __init__(self, engine: str, detail: str, statement: str) -> None:
        self.statement = statement
        first_line = " ".join(statement.split())[:80]
        super().__init__(f"{engine} failed: {detail} (in a statement starting {first_line!r})")


class WarehouseOutOfMemory(WarehouseQueryError):
    """The statement needed more than the engine's memory limit (DuckDB's `memory_limit`) and was
    undone whole: nothing it would have written is there."""


class HistoryNotKept(WarehouseError):
    """The warehouse has no record history or conflicts table yet (made by an older truth-forge and
    opened read-only since): a sync by this version creates them."""
