"""What a statement would bill on BigQuery on-demand, modelled from its SQL and the tables' sizes.

Why it exists: the emulator the tests and benchmarks run on (bqemulator) reports 0 bytes for every
job, and real BigQuery is not at hand at 10 million contacts. So the statements the engine really
sends (`accounting.Statement`, recorded on the BigQuery engine) are priced here with BigQuery's
documented on-demand rules, on tables sized for N contacts (`TableSizes`). Nothing here knows the
sync's statements: tables, columns, filters and the statement kind are read from the SQL (sqlglot,
BigQuery dialect) and the table layouts from `schema.py`, so a statement written tomorrow is priced
by the same rules.

The rules followed (checked December 2026; see also /work/shared/reference/bigquery-cost.md):

* cloud.google.com/bigquery/pricing, "On-demand compute pricing": $6.25 per TiB; bytes processed
  are those of every column referenced in every table read, over the data scanned; at least 10 MB
  per table referenced and 10 MB per query, rounded up to the MB (`accounting.billed_from_processed`);
  a statement that reads no table bills nothing.
* cloud.google.com/bigquery/docs/storage_overview, "Data size calculation": INT64, FLOAT64,
  TIMESTAMP 8 bytes, BOOL 1, STRING 2 + its UTF-8 bytes, JSON the bytes of its text, NULL 0,
  ARRAY/STRUCT the sum of their parts (`value_bytes`; `measure_table` sizes sample data by it,
  and `TableSizes` carries the averages per column).
* cloud.google.com/bigquery/docs/reference/standard-sql/dml-syntax, "On-demand query size
  calculation": UPDATE, DELETE, and MERGE with an UPDATE or DELETE clause bill q + t (q: the
  referenced columns of every table scanned; t: every column of the target table, whole when it is
  not partitioned); INSERT ... SELECT and an INSERT-only MERGE bill q; INSERT ... VALUES (or from a
  parameter, UNNEST(@rows)) scans no table.
* cloud.google.com/bigquery/docs/clustered-tables and docs/querying-clustered-tables: a clustered
  table's storage blocks are sorted by the clustering columns, first column first; a filter on the
  first clustering column (then the next) with constants or query parameters prunes blocks; a
  filter through a function or CAST of the column, a subquery or a join does not.
  docs/querying-partitioned-tables: the same for partitions (no table here is partitioned).

Modelling choices the docs leave open are named constants or stated where they are made.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import sqlglot
from sqlglot import exp

from truth_forge.warehouse.accounting import MIB, MIN_BILLED_BYTES, Statement, billed_from_processed
from truth_forge.warehouse.schema import BOOL, INT64, JSON, STRING, TABLES, TIMESTAMP

TIB = 2**40
# cloud.google.com/bigquery/pricing: on-demand compute, per TiB processed (US multi-region).
PRICE_PER_TIB_USD = 6.25
# Per table referenced and per query (pricing page); the engine's rounding uses the same figure.
MIN_BYTES_PER_TABLE = MIN_BILLED_BYTES
# BigQuery sizes a clustered table's storage blocks "adaptively based on the size of the table"
# (docs/clustered-tables) and publishes no figure; the same page says tables under 64 MB gain
# little from clustering, so a block holds at least that much. The tables priced here are 1-50 GB,
# where blocks are larger than at the minimum: we take 4 x 64 MiB. A larger block prunes less, so
# this errs toward billing more; a scattered key list of k keys reads min(k, blocks) blocks.
BLOCK_BYTES = 256 * MIB


def value_bytes(type_: str, value: Any) -> int:
    """BigQuery's logical size of one value of a column type (for hand-made sizes and tests)."""
    if value is None:
        return 0
    if type_ in (INT64, TIMESTAMP):
        return 8
    if type_ == BOOL:
        return 1
    if type_ == STRING:
        return 2 + len(str(value).encode())
    if type_ == JSON:
        text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
        return len(text.encode())
    raise ValueError(f"no size rule for type {type_!r}")


def measure_table(warehouse: Any, table: str, where: str = "") -> tuple[int, dict[str, float]]:
    """A table's row count and the average logical bytes of each column by BigQuery's rules
    (`value_bytes`), measured on sample data in any engine: the rows are read (JSON as its text)
    and sized here, so the rule is written once and both engines agree. For small samples only."""
    cols = TABLES[table].columns
    select = ", ".join(f"TO_JSON_STRING(t.{c.name}) AS {c.name}" if c.type == JSON else f"t.{c.name} AS {c.name}"
                       for c in cols)
    rows, _ = warehouse._run(f"SELECT {select} FROM {{{table}}} AS t {where}", (), fetch=True)
    if not rows:
        return 0, {c.name: 0.0 for c in cols}
    sums = dict.fromkeys((c.name for c in cols), 0)
    for row in rows:
        for c in cols:
            value = row[c.name]
            sums[c.name] += value_bytes(c.type, None if value in (None, "null") and c.type == JSON else value)
    return len(rows), {name: total / len(rows) for name, total in sums.items()}


# --- table sizes ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class TableSize:
    """One table at the size being priced: rows and the average logical bytes of each column."""

    rows: int
    column_bytes: Mapping[str, float]

    def bytes_of(self, columns: Iterable[str]) -> float:
        return self.rows * sum(self.column_bytes.get(c, 0.0) for c in columns)

    @property
    def total_bytes(self) -> float:
        return self.bytes_of(self.column_bytes)


@dataclass(frozen=True)
class TableSizes:
    """Every table's size, plus what the model must know of the values to price pruning.

    `shares`: for low-cardinality clustering columns, the share of rows holding each value
    (crm_sync_state.object_type: persons and companies); a column not listed is taken as a key
    (each value in its own block). `changed_fraction`: the share of rows a range filter on a
    TIMESTAMP clustering column selects (`updated_at >= @since`: what changed since then), which the
    caller knows from the run being priced. `clustering`: the clustering columns per table as the
    tables actually are (a table created without clustering prunes nothing, whatever schema.py says).
    """

    tables: Mapping[str, TableSize]
    clustering: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    shares: Mapping[tuple[str, str], Mapping[str, float]] = field(default_factory=dict)
    changed_fraction: float = 0.0
    block_bytes: int = BLOCK_BYTES

    def with_changed_fraction(self, fraction: float) -> TableSizes:
        return replace(self, changed_fraction=min(1.0, max(0.0, fraction)))

    def blocks(self, table: str) -> int:
        size = self.tables.get(table)
        return max(1, math.ceil(size.total_bytes / self.block_bytes)) if size else 1


@dataclass(frozen=True)
class SampleProfile:
    """Per-row column sizes measured on sample data, and the rows each table holds per contact."""

    column_bytes: Mapping[str, Mapping[str, float]]  # table -> column -> average bytes
    rows_per_contact: Mapping[str, float]  # table -> rows per contact (businesses: 1/20, ...)
    # crm_sync_state.base's average bytes per object type (it holds the record's synced values).
    base_bytes: Mapping[str, float] = field(default_factory=dict)
    # Whether the base holds the computed JSON itself (so grows with it), or digests of it (a fixed size).
    base_holds_json: bool = True


CONTACT_JSON = ("llm_context", "communication_stats", "social_network", "ai_insights",
                "recommendations", "sync_metadata")
# Rows kept in the run history: a year of runs every five minutes (the service's default cadence).
RUNS_KEPT = 365 * 24 * 12
# Error rows kept (open and closed) per contact: one contact in a hundred has an error on record.
ERRORS_PER_CONTACT = 0.01


def sizes_for_contacts(
    contacts: int,
    profile: SampleProfile,
    *,
    json_bytes_per_contact: float = 3072,
    journal_rows: int = 0,
    state_fill: float = 1.0,
    clustering: Mapping[str, tuple[str, ...]] | None = None,
    changed_fraction: float = 0.0,
    block_bytes: int = BLOCK_BYTES,
) -> TableSizes:
    """The tables at `contacts` contacts: row counts from the profile's ratios, column sizes as
    measured, except the contact JSON columns, scaled so one contact carries `json_bytes_per_contact`
    of JSON in total (in the same proportions as the sample), and the sync state's `base`, which
    grows by the same amount for a person where it holds a copy of the computed JSON (it holds
    digests of it since sync/views.py's `digest`: then it keeps its measured size). The state holds
    `state_fill` rows per contact and business (1 after a first sync; during a first sync it grows
    from 0, so a statement sees half on average); the journal `journal_rows` rows (what the run
    being priced appends before its fold)."""
    cb = {t: dict(cols) for t, cols in profile.column_bytes.items()}
    contact_cols = cb.get("contacts", {})
    sample_json = sum(contact_cols.get(c, 0.0) for c in CONTACT_JSON)
    json_growth = 0.0
    if sample_json > 0:
        scale = json_bytes_per_contact / sample_json
        for c in CONTACT_JSON:
            contact_cols[c] = contact_cols.get(c, 0.0) * scale
        json_growth = json_bytes_per_contact - sample_json
    businesses = round(contacts * profile.rows_per_contact.get("businesses", 0.05))
    state_rows = round((contacts + businesses) * state_fill)
    if "crm_sync_state" in cb and profile.base_bytes:
        person_base = profile.base_bytes.get("person", 0.0) + (json_growth if profile.base_holds_json else 0.0)
        company_base = profile.base_bytes.get("company", 0.0)
        cb["crm_sync_state"]["base"] = (contacts * person_base + businesses * company_base) / (contacts + businesses)
    if "crm_sync_journal" in cb and "crm_sync_state" in cb:
        cb["crm_sync_journal"]["base"] = cb["crm_sync_state"]["base"]
    rows = {
        "contacts": contacts,
        "businesses": businesses,
        "contact_identifiers": round(contacts * profile.rows_per_contact.get("contact_identifiers", 0.0)),
        "contact_businesses": round(contacts * profile.rows_per_contact.get("contact_businesses", 0.0)),
        "crm_sync_state": state_rows,
        "crm_sync_journal": journal_rows,
        "crm_sync_runs": RUNS_KEPT,
        "crm_sync_errors": round(contacts * ERRORS_PER_CONTACT),
        "crm_sync_kv": 20,
        "crm_sync_leases": 1,
    }
    tables = {name: TableSize(rows.get(name, 0), cb.get(name, {})) for name in TABLES}
    persons = contacts / max(1, contacts + businesses)
    return TableSizes(
        tables=tables,
        clustering=dict(clustering or {}),
        shares={("crm_sync_state", "object_type"): {"person": persons, "company": 1 - persons},
                ("crm_sync_journal", "object_type"): {"person": persons, "company": 1 - persons},
                ("crm_sync_errors", "object_type"): {"person": persons, "company": 1 - persons}},
        changed_fraction=changed_fraction,
        block_bytes=block_bytes,
    )


# --- one statement's bill ------------------------------------------------------------------------


@dataclass(frozen=True)
class TableRead:
    """What a statement reads of one table: the columns, the share of the blocks, the bytes."""

    table: str
    columns: frozenset[str]
    fraction: float
    bytes: float


@dataclass(frozen=True)
class Cost:
    kind: str  # SELECT | INSERT | UPDATE | DELETE | MERGE | MERGE-INSERT | DDL | OTHER
    reads: tuple[TableRead, ...]
    target: str | None  # the DML target billed whole (t), if any
    target_bytes: float
    bytes_processed: int
    bytes_billed: int

    @property
    def dollars(self) -> float:
        return self.bytes_billed / TIB * PRICE_PER_TIB_USD


def dollars(bytes_billed: float) -> float:
    return bytes_billed / TIB * PRICE_PER_TIB_USD


_BACKTICKED = re.compile(r"`([^`]+)`")


class CostModel:
    """Prices statements on tables of the given sizes. `physical` maps the table names as they
    appear in the SQL (the last part of `project.dataset.table`) to logical names; build it from a
    warehouse with `physical_names(warehouse)`."""

    def __init__(self, sizes: TableSizes, physical: Mapping[str, str] | None = None) -> None:
        self.sizes = sizes
        self.physical = dict(physical or {name: name for name in TABLES})

    def price(self, statement: Statement | str, binds: Sequence[Any] = ()) -> Cost:
        if isinstance(statement, Statement):
            sql, binds = statement.sql, statement.binds
        else:
            sql = statement
        try:
            parsed = [e for e in sqlglot.parse(sql, read="bigquery") if isinstance(e, exp.Expression)]
        except sqlglot.errors.ParseError as exc:
            raise ValueError(f"the cost model cannot parse this statement: {' '.join(sql.split())[:300]}") from exc
        costs = [_Pricer(self, e, binds).cost() for e in parsed]
        if len(costs) == 1:
            return costs[0]
        # A script: its statements are billed as one job (sum of their parts).
        kinds = sorted({c.kind for c in costs})
        processed = sum(c.bytes_processed for c in costs)
        billed = sum(c.bytes_billed for c in costs)
        return Cost("+".join(kinds) if kinds else "OTHER", tuple(r for c in costs for r in c.reads), None, 0.0,
                    processed, billed)


def physical_names(warehouse: Any) -> dict[str, str]:
    """Physical table name -> logical name, from a warehouse's `TableNames`."""
    return {warehouse.tables[name]: name for name in TABLES}


@dataclass
class _Ref:
    node: exp.Table
    table: str  # logical name
    alias: str
    scope: exp.Expression  # the SELECT / UPDATE / DELETE / MERGE that reads it
    columns: set[str] = field(default_factory=set)


_SCOPES = (exp.Select, exp.Update, exp.Delete, exp.Merge)


class _Pricer:
    def __init__(self, model: CostModel, tree: exp.Expression, binds: Sequence[Any]) -> None:
        self.model = model
        self.sizes = model.sizes
        self.tree = tree
        self.binds = {getattr(b, "name", None): b for b in binds}
        self.ctes = {c.alias_or_name for c in tree.find_all(exp.CTE)}
        self.all_refs: list[_Ref] = []

    # -- what kind of statement --------------------------------------------------------------

    def kind(self) -> str:
        t = self.tree
        if isinstance(t, (exp.Create, exp.Alter, exp.Drop, exp.TruncateTable, exp.Command)):
            return "DDL"
        if isinstance(t, exp.Insert):
            return "INSERT"
        if isinstance(t, exp.Update):
            return "UPDATE"
        if isinstance(t, exp.Delete):
            return "DELETE"
        if isinstance(t, exp.Merge):
            whens = t.args.get("whens")
            for when in whens.expressions if whens else ():
                if isinstance(when.args.get("then"), (exp.Update, exp.Delete)) or _is_delete(when.args.get("then")):
                    return "MERGE"
            return "MERGE-INSERT"
        if isinstance(t, exp.Query):
            return "SELECT"
        return "OTHER"

    def target_node(self) -> exp.Table | None:
        node = self.tree.this if isinstance(self.tree, (exp.Insert, exp.Update, exp.Delete, exp.Merge)) else None
        if isinstance(node, exp.Schema):
            node = node.this
        return node if isinstance(node, exp.Table) else None

    # -- the bill ----------------------------------------------------------------------------

    def cost(self) -> Cost:
        kind = self.kind()
        if kind in ("DDL", "OTHER"):
            return Cost(kind, (), None, 0.0, 0, 0)
        target = self.target_node()
        target_table = self.logical(target) if target is not None else None
        refs = self.refs(skip=target if kind == "INSERT" else None)
        self.all_refs = refs
        self.assign_columns(refs)
        reads: dict[str, tuple[set[str], dict[str, float]]] = {}
        for ref in refs:
            fraction = self.fraction(ref)
            cols, frac_by_col = reads.setdefault(ref.table, (set(), {}))
            for c in ref.columns:
                cols.add(c)
                # A table referenced twice reads a column once, over the blocks either reference
                # needs (taken as the larger share: the references here prune alike or not at all).
                frac_by_col[c] = max(frac_by_col.get(c, 0.0), fraction)
        table_reads = []
        per_table: dict[str, float] = {}
        for table, (cols, frac_by_col) in reads.items():
            size = self.sizes.tables.get(table)
            q = sum(size.bytes_of([c]) * frac_by_col[c] for c in cols) if size else 0.0
            fraction = max(frac_by_col.values(), default=0.0)
            table_reads.append(TableRead(table, frozenset(cols), fraction, q))
            if cols:
                per_table[table] = q
        t_bytes = 0.0
        billed_target = None
        if kind in ("UPDATE", "DELETE", "MERGE") and target_table is not None:
            size = self.sizes.tables.get(target_table)
            t_bytes = size.total_bytes if size else 0.0
            billed_target = target_table
            per_table[target_table] = per_table.get(target_table, 0.0) + t_bytes
        processed = int(round(sum(per_table.values())))
        if not per_table:
            billed = 0  # reads no table: INSERT ... VALUES / from a parameter, SELECT of constants
        else:
            at_least = sum(max(MIN_BYTES_PER_TABLE, b) for b in per_table.values())
            billed = billed_from_processed(max(1, int(math.ceil(at_least)))) or 0
        return Cost(kind, tuple(sorted(table_reads, key=lambda r: r.table)), billed_target, t_bytes, processed, billed)

    # -- tables and columns ------------------------------------------------------------------

    def logical(self, node: exp.Table) -> str | None:
        name = node.name
        if not node.args.get("db") and name in self.ctes:
            return None
        return self.model.physical.get(name)

    def refs(self, skip: exp.Table | None) -> list[_Ref]:
        out = []
        for node in self.tree.find_all(exp.Table):
            if node is skip:
                continue
            table = self.logical(node)
            if table is None:
                continue
            scope = node.find_ancestor(*_SCOPES) or self.tree
            out.append(_Ref(node, table, node.alias_or_name, scope))
        return out

    def assign_columns(self, refs: list[_Ref]) -> None:
        by_alias = {r.alias: r for r in refs}
        written = self.written_columns()
        for col in self.tree.find_all(exp.Column):
            if id(col) in written:
                continue
            qualifier = col.table
            if isinstance(col.this, exp.Star):
                if qualifier in by_alias:
                    starred = by_alias[qualifier]
                    starred.columns.update(TABLES[starred.table].column_names)
                continue
            name = col.name
            if qualifier:
                owner = self.owner_of(col, qualifier, refs) or by_alias.get(qualifier)
                if owner is not None and name in TABLES[owner.table].column_types:
                    owner.columns.add(name)
                continue
            # Unqualified: the tables of the nearest scope that have such a column, then outer scopes.
            scope = col.find_ancestor(*_SCOPES)
            while scope is not None:
                owners = [r for r in refs if r.scope is scope and name in TABLES[r.table].column_types]
                if owners:
                    for r in owners:
                        r.columns.add(name)
                    break
                scope = scope.find_ancestor(*_SCOPES)
        for star in self.tree.find_all(exp.Star):
            # SELECT * (not COUNT(*), which reads no column) over the tables of its own FROM.
            if isinstance(star.parent, exp.Select):
                for r in refs:
                    if r.scope is star.parent:
                        r.columns.update(TABLES[r.table].column_names)

    @staticmethod
    def owner_of(col: exp.Column, qualifier: str, refs: list[_Ref]) -> _Ref | None:
        """The table reference an alias names where the column stands: its own scope first, then
        the enclosing ones (so an alias reused in another subquery names the right table)."""
        scope = col.find_ancestor(*_SCOPES)
        while scope is not None:
            for r in refs:
                if r.scope is scope and r.alias == qualifier:
                    return r
            scope = scope.find_ancestor(*_SCOPES)
        return None

    def written_columns(self) -> set[int]:
        """Columns that are only written: SET targets and INSERT column lists (not billed as read)."""
        out: set[int] = set()
        for update in self.tree.find_all(exp.Update):
            for assignment in update.expressions:
                if isinstance(assignment, exp.EQ) and isinstance(assignment.this, exp.Column):
                    out.add(id(assignment.this))
        for insert in self.tree.find_all(exp.Insert):
            columns = insert.this if isinstance(insert.this, (exp.Schema, exp.Tuple)) else None
            for c in columns.expressions if columns is not None else ():
                out.add(id(c))
        return out

    # -- pruning -----------------------------------------------------------------------------

    def fraction(self, ref: _Ref) -> float:
        """The share of the table's blocks this reference reads: 1 unless a constant filter on the
        table's first clustering column (then the next) prunes."""
        cluster = self.sizes.clustering.get(ref.table, ())
        if not cluster:
            return 1.0
        filters = self.filters(ref)
        blocks = float(self.sizes.blocks(ref.table))
        scope = blocks
        types = TABLES[ref.table].column_types
        for column in cluster:
            found = filters.get(column)
            if found is None:
                break
            how, values = found
            shares = self.sizes.shares.get((ref.table, column))
            if how == "values" and shares is not None and values is not None:
                # A low-cardinality column: the blocks of the chosen values, sorted by the next column.
                scope = max(1.0, scope * min(1.0, sum(shares.get(str(v), 0.0) for v in values)))
                continue
            if how == "values":
                # Keys: each one in its own block at worst (a scattered list prunes per block).
                k = len(values) if values is not None else math.inf
                scope = min(scope, max(1.0, float(k)))
                break
            if how == "range" and types.get(column) == TIMESTAMP:
                # Rows sorted by time: the range's share of the rows, plus the block at its edge.
                scope = min(scope, math.ceil(self.sizes.changed_fraction * scope) + 1.0)
                break
            break  # a range on a non-time column: not modelled as pruning (bills as unpruned)
        return scope / blocks

    def filters(self, ref: _Ref) -> dict[str, tuple[str, list[Any] | None]]:
        """Constant filters on a bare column of `ref` among the AND-ed conditions of its scope
        (WHERE, JOIN ... ON, MERGE ... ON): column -> ("values", [constants]) or ("range", None)."""
        scope = ref.scope
        conditions: list[exp.Expression] = []
        if isinstance(scope, exp.Merge):
            on = scope.args.get("on")
            if on is not None and scope.this is ref.node:
                conditions.append(on)
        else:
            where = scope.args.get("where")
            if where is not None:
                conditions.append(where.this)
            for join in scope.args.get("joins") or ():
                if join.args.get("on") is not None:
                    conditions.append(join.args["on"])
        out: dict[str, tuple[str, list[Any] | None]] = {}
        for cond in conditions:
            for part in _conjuncts(cond):
                found = self.filter_of(part, ref)
                if found is not None:
                    column, how, values = found
                    if column not in out or how == "values":
                        out[column] = (how, values)
        return out

    def filter_of(self, part: exp.Expression, ref: _Ref) -> tuple[str, str, list[Any] | None] | None:
        if isinstance(part, exp.EQ):
            for col, other in ((part.this, part.expression), (part.expression, part.this)):
                if self.is_own_column(col, ref) and self.is_constant(other):
                    return col.name, "values", [self.constant_value(other)]
            return None
        if isinstance(part, exp.In) and self.is_own_column(part.this, ref):
            unnest = part.args.get("unnest")
            if unnest is not None:
                inner = unnest.expressions[0] if unnest.expressions else None
                if isinstance(inner, exp.Parameter):
                    bind = self.binds.get(inner.name)
                    values = getattr(bind, "values", None)
                    return part.this.name, "values", list(values) if values is not None else None
                return None
            if part.args.get("query") is not None:
                return None  # IN (subquery): no pruning
            if all(self.is_constant(e) for e in part.expressions):
                return part.this.name, "values", [self.constant_value(e) for e in part.expressions]
            return None
        if isinstance(part, exp.Between) and self.is_own_column(part.this, ref):
            if self.is_constant(part.args["low"]) and self.is_constant(part.args["high"]):
                return part.this.name, "range", None
            return None
        if isinstance(part, (exp.GT, exp.GTE, exp.LT, exp.LTE)):
            for col, other in ((part.this, part.expression), (part.expression, part.this)):
                if self.is_own_column(col, ref) and self.is_constant(other):
                    return col.name, "range", None
        return None

    def is_own_column(self, node: exp.Expression, ref: _Ref) -> bool:
        """A bare column (no function or CAST around it) of this reference."""
        if not isinstance(node, exp.Column) or isinstance(node.this, exp.Star):
            return False
        if node.name not in TABLES[ref.table].column_types:
            return False
        if node.table:
            return node.table == ref.alias
        owners = [r for r in self.all_refs if r.scope is ref.scope and node.name in TABLES[r.table].column_types]
        return owners == [ref]

    @staticmethod
    def is_constant(node: exp.Expression) -> bool:
        """A literal, a query parameter, or a function of those (no column, no subquery)."""
        if node.find(exp.Column, exp.Select, exp.Subquery) is not None:
            return False
        return True

    def constant_value(self, node: exp.Expression) -> Any:
        if isinstance(node, exp.Literal):
            return node.this
        if isinstance(node, exp.Parameter):
            bind = self.binds.get(node.name)
            return getattr(bind, "value", None)
        if isinstance(node, exp.Boolean):
            return node.this
        return None


def _conjuncts(node: exp.Expression) -> list[exp.Expression]:
    while isinstance(node, exp.Paren):
        node = node.this
    if isinstance(node, exp.And):
        return _conjuncts(node.this) + _conjuncts(node.expression)
    return [node]


def _is_delete(then: Any) -> bool:
    # sqlglot parses MERGE's bare `THEN DELETE` as a Var named DELETE.
    return isinstance(then, exp.Var) and then.name.upper() == "DELETE"


def shape_of(sql: str, physical: Mapping[str, str] | None = None) -> str:
    """A statement's shape: its SQL with table references as `{logical}` and number literals as
    `N`, so the same statement with other inlined counts (or in another dataset) is one shape."""
    names = dict(physical or {})

    def table(match: re.Match[str]) -> str:
        last = match.group(1).split(".")[-1]
        return "{" + names.get(last, last) + "}"

    text = _BACKTICKED.sub(table, sql)
    text = re.sub(r"(?<![\w@])\d+(?![\w])", "N", text)
    return " ".join(text.split())
