"""The embedded default warehouse: one DuckDB file (or `:memory:`), no server to run.

Why it exists: a user without BigQuery still gets a real SQL warehouse with the same tables and
the same SQL as production (BigQuery-dialect text transpiled by sqlglot). Batches arrive as one list
parameter per column, unnested side by side into rows in the statement itself, so a MERGE of
thousands of rows is one statement, never executemany (and no Arrow: pyarrow, 170 MB installed, was
needed only for this; DuckDB binds Python lists natively, as fast for the push's small batches and
about twice as slow for 100k rows at once, a few tenths of a second beside minutes of API requests).
DuckDB allows one writing process per file; a second one gets `WarehouseLockedError`.

Every connection gets a memory limit, a spill folder and a thread count from the project (DuckDB's
own default limit is 80% of the machine's RAM, which a sync process at a million contacts would
use): DuckDB then spills large sorts, joins and aggregations to disk instead of growing. Override
them in the URL: `duckdb:///file.duckdb?memory_limit=1GB&threads=4&temp_directory=/scratch`.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import re
import tempfile
from collections.abc import Generator, Iterator, Sequence
from pathlib import Path
from typing import Any

import duckdb
import sqlglot

from truth_forge.warehouse.base import Bind, KeySet, RowSet, Warehouse, fenced, positive_range_rows
from truth_forge.warehouse.errors import (
    WarehouseConfigError,
    WarehouseLockedError,
    WarehouseMissing,
    WarehouseOutOfMemory,
    WarehouseQueryError,
)
from truth_forge.warehouse.schema import BOOL, INT64, JSON, STRING, TABLES, TIMESTAMP, TableNames

log = logging.getLogger(__name__)

_LIST_TYPES = {
    INT64: "BIGINT[]",
    STRING: "VARCHAR[]",
    BOOL: "BOOLEAN[]",
    TIMESTAMP: "TIMESTAMPTZ[]",
    JSON: "VARCHAR[]",  # canonical JSON text, parsed in SQL by PARSE_JSON
}
_PARAM = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")

# What DuckDB may hold in its buffer pool before it spills to `temp_directory`. A first push fills
# the pool to its limit (cached table blocks, each range's join, each fold window's rows), so the
# limit is most of the difference between sizes of peak RSS: a 1M-contact first push peaked at
# 519 MiB with 256MB, 434-445 with 160MB, 376-384 with 128MB and 373 with 120MB, both with the
# bounded C heap (core/memory.py; BENCHMARKS.md, issue 22: the goal is 400 MB). Its closing fold's
# windows (a row group of entries each, below) fit with the sample data's merge bases; a window of
# wider ones that does not is folded in halves (state_journal.py), and what fits in none fails
# naming the setting, its journal kept.
DEFAULT_MEMORY_LIMIT = "120MB"
# Each thread keeps its own partitions of a hash table or sort: more threads, more memory, and the
# sync is bound by Twenty's request budget, not by the warehouse's CPU. One thread: the statements
# of a push are small (a save per request, a range read), and a second DuckDB thread only adds its
# wake-ups (an INSERT of one row: 0.49 ms of CPU with two threads, 0.28 with one). Side by side in
# one run, a first push's CPU per record fell 2 % at 50k and 4 % at 1M, peak RSS 15 and 7 MiB, its
# wall time the same (BENCHMARKS.md, "After the report: JSON by orjson ..."); the two sync threads
# that read and write still run their statements at once.
DEFAULT_THREADS = 1
# How much the write-ahead log holds before a checkpoint between change-detection ranges: the push's
# state rows (about 700 bytes each in the log) and record history since the last one. A checkpoint
# after every range of 10,000 rows cost a 50k first push 0.5 s of its 12 s of CPU (0.2 s now): each
# rewrote the journal's last, partly filled row group (BENCHMARKS.md, issue 22, stop 32).
BETWEEN_RANGES_WAL_BYTES = 16 * 2**20
# Rows per row group of the file's tables (DuckDB's default is 122,880). A checkpoint rewrites the
# last, partly filled row group of a table it appends to, loading it whole into memory: with the
# sync journal's rows (a few KB each with their merge base) that was up to the whole memory_limit
# at every checkpoint between change-detection ranges. A smaller group bounds that to a few MiB.
# DuckDB does not keep the size in the file: it is given each time the file is attached. At 8,192
# the sample data's file is as large as at 16,384 (7.9 against 7.6 MB for 50k contacts); at 4,096
# it doubles (the strings' compression works on fewer rows).
ROW_GROUP_ROWS = 8_192
# The name the file is attached under (then made the default for every cursor, `USE`).
_CATALOG = "warehouse"
_MEMORY = re.compile(r"^\s*\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KIB|MIB|GIB|TIB)\s*$", re.IGNORECASE)


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


def _connect(path: str, *, read_only: bool) -> duckdb.DuckDBPyConnection:
    """A connection whose default database is the file, attached with `ROW_GROUP_ROWS` per row group
    (an option only ATTACH takes); `:memory:` as DuckDB opens it. Handles on one file in one process
    share one DuckDB instance (a named in-memory one, as `duckdb.connect(file)` shares its own): a
    file may be attached once per process."""
    if path == ":memory:":
        return duckdb.connect(path)
    resolved = os.path.abspath(os.path.expanduser(path))
    instance = hashlib.sha1(f"{resolved}|{read_only}".encode()).hexdigest()
    con = duckdb.connect(f":memory:truth_forge_{instance}")
    try:
        options = f"ROW_GROUP_SIZE {ROW_GROUP_ROWS}" + (", READ_ONLY" if read_only else "")
        quoted = path.replace("'", "''")
        con.execute(f"ATTACH IF NOT EXISTS '{quoted}' AS {_CATALOG} ({options})")
        con.execute(f"USE {_CATALOG}")
    except BaseException:
        con.close()
        raise
    return con


def _failed(exc: duckdb.Error, sql: str) -> WarehouseQueryError:
    """A statement's failure in DuckDB's own words; running out of `memory_limit` as its own kind
    (the statement was undone whole: a caller may retry it smaller)."""
    kind = WarehouseOutOfMemory if isinstance(exc, duckdb.OutOfMemoryException) else WarehouseQueryError
    return kind("DuckDB", str(exc), sql)


class DuckDBWarehouse(Warehouse):
    """`duckdb:///path/file.duckdb` or `duckdb:///:memory:`."""

    # The journal's fold in windows: one MERGE of a first sync's million entries (each with its
    # merge base) does not fit the default memory limit. Each window's new state rows stay in
    # memory until the checkpoint after it (about 3.6 KB a row with its base: 29 MiB at 8,192).
    # A window of a row group: a first sync's windows (one new state row an entry) then fill whole
    # row groups, and each checkpoint writes them once; windows of 10,000 in groups of 16,384 left
    # the last group partly filled, and every checkpoint rewrote it (a fold of 300,000 entries:
    # 7.7 -> 5.3 s of CPU, its checkpoints 3.6 -> 0.1 s; windows and groups of 16,384: 4.5 s, but
    # each window holds twice the rows, at the 1M push's peak).
    fold_window_rows = ROW_GROUP_ROWS
    # Rows per change-detection range (the URL's change_range_rows overrides it): each range's
    # query holds its hash join and sort, and the push's state writes stay in memory until the
    # checkpoint between ranges; at 10,000 a first push stays under 400 MB peak RSS with the
    # default memory_limit (BENCHMARKS.md, "Peak RSS, branch rss").
    change_range_rows = 10_000
    # A second process cannot open the file while this one has it ("Could not set lock on file").
    one_writing_process = True

    def __init__(self, path: str, tables: TableNames | None = None, *, read_only: bool = False,
                 create: bool = True, memory_limit: str = DEFAULT_MEMORY_LIMIT, threads: int = DEFAULT_THREADS,
                 temp_directory: str | None = None, change_range_rows: int | None = None,
                 journal_fold_share: float | None = None) -> None:
        super().__init__(tables or TableNames())
        self.path = path
        self._read_only = self.read_only = read_only
        if not _MEMORY.match(memory_limit):
            raise WarehouseConfigError(f"DuckDB memory_limit {memory_limit!r}: expected a size such as 256MB or 2GB")
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise WarehouseConfigError(f"DuckDB threads {threads!r}: expected a whole number >= 1")
        if change_range_rows is not None:
            self.change_range_rows = positive_range_rows(change_range_rows)
        if journal_fold_share is not None:
            self.journal_fold_share = journal_fold_share
        self.memory_limit = memory_limit.strip()
        self.threads = threads
        # Next to the file (DuckDB's own choice for a file); for :memory:, a folder of this
        # connection's own under the system's temp dir (DuckDB removes a folder it made on close).
        self.temp_directory = temp_directory or (
            f"{path}.tmp" if path != ":memory:"
            else os.path.join(tempfile.gettempdir(), f"truth_forge_duckdb_{os.getpid()}_{id(self):x}"))
        if path != ":memory:":
            _check_file(Path(path).expanduser(), create=create and not read_only)
        try:
            self._con = _connect(path, read_only=read_only)
        except duckdb.IOException as exc:
            if "lock" in str(exc).lower():
                raise WarehouseLockedError(path, str(exc)) from exc
            raise WarehouseConfigError(f"cannot open DuckDB warehouse {path!r}: {exc}") from exc
        self._prepare_connection()
        self._apply_limits()
        if not read_only:
            self.ensure_tables()

    def _apply_limits(self) -> None:
        """Memory limit, spill folder and threads: database-wide settings, so once per database."""
        try:
            self._con.execute(f"SET memory_limit = '{self.memory_limit}'")
            self._con.execute(f"SET threads = {self.threads}")
            self._con.execute("SET temp_directory = $dir", {"dir": self.temp_directory})
        except duckdb.Error as exc:
            self._con.close()
            raise WarehouseConfigError(f"DuckDB warehouse {self.path!r}: cannot apply memory_limit="
                                       f"{self.memory_limit}, threads={self.threads}, temp_directory="
                                       f"{self.temp_directory}: {exc}") from exc

    def _prepare_connection(self) -> None:
        # UTC so FORMAT_TIMESTAMP inside hashes does not depend on the machine's time zone. A large
        # checkpoint threshold avoids DuckDB's slow auto-checkpoint in the middle of a big MERGE;
        # we checkpoint ourselves on close.
        self._con.execute("SET TimeZone = 'UTC'")
        self._con.execute("SET checkpoint_threshold = '1GB'")
        self._refs = {name: f"`{self.tables[name]}`" for name in TABLES}
        self._depth = 0
        self._closed = False

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        """Another cursor on this handle's database, on the file (a cursor starts on the in-memory
        instance the file is attached to, `_connect`)."""
        cur = self._con.cursor()
        if self.path != ":memory:":
            try:
                cur.execute(f"USE {_CATALOG}")
            except BaseException:
                cur.close()
                raise
        return cur

    def for_another_thread(self) -> DuckDBWarehouse:
        """A second connection to the same database (DuckDB connections are not shared across threads)."""
        twin = object.__new__(DuckDBWarehouse)
        Warehouse.__init__(twin, self.tables)
        twin.path = self.path
        twin._read_only = twin.read_only = self._read_only
        twin.memory_limit, twin.threads, twin.temp_directory = self.memory_limit, self.threads, self.temp_directory
        twin.change_range_rows = self.change_range_rows
        twin.journal_fold_share = self.journal_fold_share
        twin.stage_pulled_rows, twin.pending_fold_minutes = self.stage_pulled_rows, self.pending_fold_minutes
        twin._share_pending(self)
        twin.statements = self.statements  # one account for the store, whichever thread sent it
        twin._share_journal(self)
        twin._con = self._cursor()
        twin._prepare_connection()
        twin._twin = True
        return twin

    _twin = False  # a second cursor of this process (for_another_thread): its owner checkpoints

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._twin:
            # No checkpoint here: another cursor's open transaction (a lease renewal, say) would make
            # it fail, and the handle that opened the database checkpoints when it closes.
            self._con.close()
            return
        try:
            self.checkpoint()
        except duckdb.FatalException:
            pass  # invalidated by an earlier failure (a full disk), raised where it happened: just close
        finally:
            self._con.close()

    def checkpoint(self) -> None:
        """Write the WAL into the file. Nothing depends on it (what is committed is in the WAL), so
        while another handle has a write transaction open that DuckDB will not checkpoint past (a
        lease renewal's UPDATE, serve's writer applying events), it is left to the next checkpoint
        or the close, not raised into a run that has stored everything."""
        if self.path == ":memory:":
            return
        try:
            self._con.execute("CHECKPOINT")
        except duckdb.TransactionException as exc:
            log.debug("DuckDB checkpoint left for later: %s", exc)

    def _between_ranges(self) -> None:
        # The push writes a sync state row per record while it reads the changes; with the large
        # checkpoint_threshold those writes stay in memory (duckdb_memory(): IN_MEMORY_TABLE) until
        # the WAL reaches 1GB, which at a million contacts is most of the run. A checkpoint once
        # the WAL holds BETWEEN_RANGES_WAL_BYTES bounds them to that; not after every range (10,000
        # rows), where each checkpoint rewrote the tables' last, partly filled row groups again.
        if self._wal_bytes() >= BETWEEN_RANGES_WAL_BYTES:
            self._flush_writes()

    def _after_fold_window(self) -> None:
        # The fold MERGEs every saved record into crm_sync_state: as with the push's writes, a
        # checkpoint after each window keeps at most one window's rows in memory (without it, a
        # first sync's fold held every state row until the run's closing checkpoint). After every
        # window: the fold is when DuckDB's pool is fullest (a 1M first push's peak RSS).
        self._flush_writes()

    def _flush_writes(self) -> None:
        """Checkpoint between statements; skipped when another transaction is open."""
        if self.path == ":memory:" or self._read_only or self._depth:
            return
        try:
            self._con.execute("CHECKPOINT")
        except duckdb.Error:
            pass  # another connection's transaction is open: the next range (or close) flushes

    def _wal_bytes(self) -> int:
        """The size of the file's write-ahead log: what was committed since the last checkpoint."""
        if self.path == ":memory:":
            return 0
        try:
            return os.stat(f"{os.path.expanduser(self.path)}.wal").st_size
        except OSError:
            return 0  # none yet (nothing committed since the last checkpoint)

    # --- primitives ------------------------------------------------------------------------------

    def _render(self, template: str, binds: Sequence[Bind]) -> str:
        fills: dict[str, str] = dict(self._refs)
        for b in binds:
            if isinstance(b, RowSet):
                fills[f"rows_{b.name}"] = f"`_src_{b.name}`"
            elif isinstance(b, KeySet):
                fills[f"keys_{b.name}"] = f"(SELECT k.key AS key FROM `_keys_{b.name}` AS k)"
        return to_duckdb_sql(template.format(**fills))

    def _bind(self, sql: str, binds: Sequence[Bind]) -> tuple[str, dict[str, Any]]:
        """The statement with each batch as rows unnested from list parameters (one per column, in
        the same order, so they zip), and the named parameters the statement uses."""
        params: dict[str, Any] = {}
        for b in binds:
            if isinstance(b, RowSet):
                # Column by column: no dict per row (a push saves state for every record it writes).
                columns = []
                for i, (column, kind) in enumerate(b.columns):
                    params[f"_src_{b.name}_{i}"] = [r.get(column) for r in b.rows]
                    columns.append(f'UNNEST(${f"_src_{b.name}_{i}"}::{_LIST_TYPES[kind]}) AS "{column}"')
                sql = sql.replace(f'"_src_{b.name}"', f"(SELECT {', '.join(columns)})")
            elif isinstance(b, KeySet):
                params[f"_keys_{b.name}"] = list(b.values)
                sql = sql.replace(f'"_keys_{b.name}"',
                                  f'(SELECT UNNEST($_keys_{b.name}::{_LIST_TYPES[b.type]}) AS "key")')
            else:
                params[b.name] = b.value
        used = set(_PARAM.findall(sql))  # DuckDB rejects values for parameters a statement lacks
        return sql, {k: v for k, v in params.items() if k in used}

    def _run(self, template: str, binds: Sequence[Bind], *, fetch: bool = False) -> tuple[list[dict[str, Any]], int | None]:
        if self.before_write is not None and fenced(template):
            self.before_write()  # the writer lease's fence (truth_forge/core/lease.py)
        sql = self._render(template, binds)
        bound, params = self._bind(sql, binds)
        try:
            cur = self._con.execute(bound, params)
            names = [d[0] for d in cur.description or []]
            rows = cur.fetchall()  # always drain: an unfinished result blocks the connection (2.0)
        except duckdb.Error as exc:
            raise _failed(exc, sql) from exc
        self._account(sql, binds)
        affected = int(rows[0][0]) if names == ["Count"] and rows else None
        return ([dict(zip(names, r)) for r in rows] if fetch else []), affected

    def _stream(self, template: str, binds: Sequence[Bind], batch_size: int) -> Generator[list[dict[str, Any]], None, None]:
        sql = self._render(template, binds)
        # A cursor of its own: the caller writes sync state between batches on the main connection
        # while this read keeps its snapshot.
        cur = self._cursor()
        try:
            bound, params = self._bind(sql, binds)
            try:
                cur.execute(bound, params)
            except duckdb.Error as exc:
                raise _failed(exc, sql) from exc
            self._account(sql, binds)
            names = [d[0] for d in cur.description or []]
            while batch := cur.fetchmany(batch_size):
                yield [dict(zip(names, row)) for row in batch]
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

