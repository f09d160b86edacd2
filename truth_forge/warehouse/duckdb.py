"""The embedded default warehouse: one DuckDB file (or `:memory:`), no server to run.

Why it exists: a user without BigQuery still gets a real SQL warehouse with the same tables and
the same SQL as production (BigQuery-dialect text transpiled by sqlglot). Batches arrive as Arrow
tables registered as views, so a MERGE of thousands of rows is one statement, never executemany.
DuckDB allows one writing process per file; a second one gets `WarehouseLockedError`.
"""

from __future__ import annotations

import contextlib
import functools
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import sqlglot

from truth_forge.warehouse.base import Bind, KeySet, RowSet, Warehouse
from truth_forge.warehouse.errors import (
    WarehouseConfigError,
    WarehouseLockedError,
    WarehouseMissing,
    WarehouseQueryError,
)
from truth_forge.warehouse.schema import BOOL, INT64, JSON, STRING, TABLES, TIMESTAMP, TableNames

_ARROW_TYPES = {
    INT64: pa.int64(),
    STRING: pa.string(),
    BOOL: pa.bool_(),
    TIMESTAMP: pa.timestamp("us", tz="UTC"),
    JSON: pa.string(),  # canonical JSON text, parsed in SQL by PARSE_JSON
}
_PARAM = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")


def _check_file(path: Path, *, create: bool) -> None:
    """A missing file is refused unless creating was asked for; a folder that cannot be made is named."""
    if path.exists():
        return
    if not create:
        shown = str(path) if path.is_absolute() else f"{str(path)!r} ({path.resolve()})"
        raise WarehouseMissing(f"the DuckDB warehouse file {shown} does not exist")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WarehouseConfigError(
            f"cannot create the folder {str(path.parent)!r} for the DuckDB warehouse "
            f"(TRUTH_FORGE_WAREHOUSE_URL): {exc.strerror or exc}"
        ) from None


@functools.lru_cache(maxsize=512)
def to_duckdb_sql(bigquery_sql: str) -> str:
    """The DuckDB text of a BigQuery-dialect statement (cached: the same few statements recur)."""
    return sqlglot.transpile(bigquery_sql, read="bigquery", write="duckdb")[0]


class DuckDBWarehouse(Warehouse):
    """`duckdb:///path/file.duckdb` or `duckdb:///:memory:`."""

    def __init__(self, path: str, tables: TableNames | None = None, *, read_only: bool = False,
                 create: bool = True) -> None:
        super().__init__(tables or TableNames())
        self.path = path
        if path != ":memory:":
            _check_file(Path(path).expanduser(), create=create and not read_only)
        try:
            self._con = duckdb.connect(path, read_only=read_only)
        except duckdb.IOException as exc:
            if "lock" in str(exc).lower():
                raise WarehouseLockedError(path, str(exc)) from exc
            raise WarehouseConfigError(f"cannot open DuckDB warehouse {path!r}: {exc}") from exc
        self._prepare_connection()
        if not read_only:
            self.ensure_tables()

    def _prepare_connection(self) -> None:
        # UTC so FORMAT_TIMESTAMP inside hashes does not depend on the machine's time zone. A large
        # checkpoint threshold avoids DuckDB's slow auto-checkpoint in the middle of a big MERGE;
        # we checkpoint ourselves on close.
        self._con.execute("SET TimeZone = 'UTC'")
        self._con.execute("SET checkpoint_threshold = '1GB'")
        self._refs = {name: f"`{self.tables[name]}`" for name in TABLES}
        self._depth = 0
        self._closed = False

    def for_another_thread(self) -> DuckDBWarehouse:
        """A second connection to the same database (DuckDB connections are not shared across threads)."""
        twin = object.__new__(DuckDBWarehouse)
        Warehouse.__init__(twin, self.tables)
        twin.path = self.path
        twin._con = self._con.cursor()
        twin._prepare_connection()
        return twin

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self.checkpoint()
        finally:
            self._con.close()

    def checkpoint(self) -> None:
        if self.path != ":memory:":
            self._con.execute("CHECKPOINT")

    # --- primitives ------------------------------------------------------------------------------

    def _render(self, template: str, binds: Sequence[Bind]) -> str:
        fills: dict[str, str] = dict(self._refs)
        for b in binds:
            if isinstance(b, RowSet):
                fills[f"rows_{b.name}"] = f"`_src_{b.name}`"
            elif isinstance(b, KeySet):
                fills[f"keys_{b.name}"] = f"(SELECT k.key AS key FROM `_keys_{b.name}` AS k)"
        return to_duckdb_sql(template.format(**fills))

    def _bind(self, con: duckdb.DuckDBPyConnection, sql: str, binds: Sequence[Bind]) -> tuple[dict[str, Any], list[str]]:
        """Register batches as Arrow views; return the named parameters the statement uses."""
        registered: list[str] = []
        params: dict[str, Any] = {}
        for b in binds:
            if isinstance(b, RowSet):
                schema = pa.schema([(n, _ARROW_TYPES[t]) for n, t in b.columns])
                table = pa.Table.from_pylist([{n: r.get(n) for n, _ in b.columns} for r in b.rows], schema=schema)
                name = f"_src_{b.name}"
            elif isinstance(b, KeySet):
                table = pa.table({"key": pa.array(list(b.values), type=_ARROW_TYPES[b.type])})
                name = f"_keys_{b.name}"
            else:
                params[b.name] = b.value
                continue
            con.register(name, table)
            registered.append(name)
        used = set(_PARAM.findall(sql))  # DuckDB rejects values for parameters a statement lacks
        return {k: v for k, v in params.items() if k in used}, registered

    def _run(self, template: str, binds: Sequence[Bind], *, fetch: bool = False) -> tuple[list[dict[str, Any]], int | None]:
        sql = self._render(template, binds)
        params, registered = self._bind(self._con, sql, binds)
        try:
            cur = self._con.execute(sql, params)
            names = [d[0] for d in cur.description or []]
            rows = cur.fetchall()  # always drain: an unfinished result blocks the connection (2.0)
        except duckdb.Error as exc:
            raise WarehouseQueryError("DuckDB", str(exc), sql) from exc
        finally:
            for name in registered:
                self._con.unregister(name)
        affected = int(rows[0][0]) if names == ["Count"] and rows else None
        return ([dict(zip(names, r)) for r in rows] if fetch else []), affected

    def _stream(self, template: str, binds: Sequence[Bind], batch_size: int) -> Iterator[list[dict[str, Any]]]:
        sql = self._render(template, binds)
        # A cursor of its own: the caller writes sync state between batches on the main connection
        # while this read keeps its snapshot.
        cur = self._con.cursor()
        try:
            params, _ = self._bind(cur, sql, binds)
            try:
                reader = cur.sql(sql, params=params).to_arrow_reader(batch_size)
            except duckdb.Error as exc:
                raise WarehouseQueryError("DuckDB", str(exc), sql) from exc
            for batch in reader:
                if batch.num_rows:
                    yield batch.to_pylist()
        finally:
            cur.close()

    @contextlib.contextmanager
    def _atomic(self) -> Iterator[None]:
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        self._con.execute("BEGIN TRANSACTION")
        self._depth = 1
        try:
            yield
        except BaseException:
            self._con.execute("ROLLBACK")
            raise
        else:
            self._con.execute("COMMIT")
        finally:
            self._depth = 0

    def _existing_columns(self) -> dict[str, set[str]]:
        rows = self._con.execute(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_catalog = current_database()"
        ).fetchall()
        out: dict[str, set[str]] = {}
        for table, column in rows:
            out.setdefault(table, set()).add(column.lower())
        return out

