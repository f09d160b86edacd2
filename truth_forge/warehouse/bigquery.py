"""The warehouse on BigQuery, through the official `google-cloud-bigquery` client.

Why it exists: at millions of contacts the canonical store lives in BigQuery, and change
detection must run there (only changed rows leave the warehouse). Batches travel as one
ARRAY<STRUCT> query parameter per MERGE (one job per statement, no streaming inserts, no
multipart loads). Credentials are the application defaults unless a client is injected or an
`endpoint` (an emulator such as bqemulator) is given.

BigQuery has no multi-statement transaction for parameterised statements here, so a contact
upsert is up to three MERGEs in order; each is idempotent, so re-running a failed batch converges.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Generator, Mapping, Sequence
from typing import Any

import requests
from google.api_core import exceptions as gexc
from google.cloud import bigquery

from truth_forge.warehouse.accounting import billed_from_processed
from truth_forge.warehouse.base import Bind, KeySet, RowSet, Scalar, Warehouse, fenced, positive_range_rows
from truth_forge.warehouse.detection import ONE_RANGE
from truth_forge.warehouse.errors import WarehouseConfigError, WarehouseMissing, WarehouseQueryError
from truth_forge.warehouse.schema import JSON, STRING, TABLES, TableNames

log = logging.getLogger(__name__)

_PROJECT = re.compile(r"^[a-z][a-z0-9.:-]{4,61}[a-z0-9]$|^[a-z][a-z0-9-]*$")
_DATASET = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,1023}$")
_PARAM = re.compile(r"@([A-Za-z_][A-Za-z0-9_]*)")
DEFAULT_TIMEOUT_SECONDS = 30.0
# Failures of a call that never reached BigQuery, or whose retries ran out of time.
_CALL_FAILED = (gexc.GoogleAPIError, requests.exceptions.RequestException)


def _param_type(type_: str) -> str:
    # JSON travels as canonical text and is parsed by PARSE_JSON in SQL: JSON-typed query
    # parameters are not handled alike by every BigQuery implementation (bqemulator double-encodes).
    return STRING if type_ == JSON else type_


class BigQueryWarehouse(Warehouse):
    """`bigquery://PROJECT/DATASET`."""

    # The audit reads the whole tables in one query: each key range would be another full read (the
    # tables are clustered by updated_at, so a key range prunes nothing), and the work and its memory
    # are BigQuery's; results come a page at a time. A URL's change_range_rows still splits it.
    change_range_rows = ONE_RANGE
    # The sync-state journal is folded once its entries reach a tenth of the state's rows: a fold
    # bills the state table twice, while reading the journal beside the state bills the journal.
    journal_fold_share = 0.1
    stage_pulled_rows = True  # a MERGE into contacts bills the whole table: pulled values land once a run

    def __init__(
        self,
        project: str | None,
        dataset: str,
        tables: TableNames | None = None,
        *,
        client: bigquery.Client | None = None,
        endpoint: str | None = None,
        location: str | None = None,
        create: bool = True,
        read_only: bool = False,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        change_range_rows: int | None = None,
        journal_fold_share: float | None = None,
    ) -> None:
        super().__init__(tables or TableNames())
        if change_range_rows is not None:
            self.change_range_rows = positive_range_rows(change_range_rows)
        if journal_fold_share is not None:
            self.journal_fold_share = journal_fold_share
        self.read_only = read_only
        self._owns_client = client is None
        if client is None:
            client = _make_client(project, endpoint)
        self.client = client
        self.endpoint = endpoint or "https://bigquery.googleapis.com"
        # Every call is bounded: the client's default retries a refused connection for 10 minutes.
        self.timeout = timeout
        self._retry = bigquery.DEFAULT_RETRY.with_timeout(timeout)
        self.project = project or client.project
        if not self.project or not _PROJECT.match(self.project):
            raise WarehouseConfigError(
                f"BigQuery project {self.project!r} is missing or not a valid project id; "
                "use bigquery://PROJECT/DATASET or set GOOGLE_CLOUD_PROJECT"
            )
        if not _DATASET.match(dataset):
            raise WarehouseConfigError(f"BigQuery dataset {dataset!r} is not a valid dataset name")
        self.dataset = dataset
        self.location = location
        self._refs = {name: f"`{self.project}.{dataset}.{self.tables[name]}`" for name in TABLES}
        self._ensure_dataset(create)
        self.ensure_tables()

    clusters_tables = True

    def ensure_tables(self) -> None:
        super().ensure_tables()
        self.ensure_layout()

    def ensure_layout(self) -> list[str]:
        """Give every table the clustering its filters prune on (schema.py), through the API: a
        dataset made by an older truth-forge, or tables the user made, are migrated in place
        (BigQuery clusters new writes at once and older blocks in the background, at no charge).
        Returns the tables changed."""
        changed = []
        for logical in TABLES:
            wanted = list(TABLES[logical].cluster_by)
            if not wanted:
                continue
            ref = f"{self.project}.{self.dataset}.{self.tables[logical]}"
            try:
                table = self.client.get_table(ref, retry=self._retry, timeout=self.timeout)
                if list(table.clustering_fields or []) == wanted:
                    continue
                table.clustering_fields = wanted
                self.client.update_table(table, ["clustering_fields"], retry=self._retry, timeout=self.timeout)
            except _CALL_FAILED as exc:
                raise WarehouseQueryError("BigQuery", self._said(exc), f"(setting the clustering of {ref})") from exc
            changed.append(logical)
            log.info("BigQuery table %s now clustered by %s", ref, ", ".join(wanted))
        return changed

    def close(self) -> None:
        if self._owns_client:
            self.client.close()

    # --- primitives ------------------------------------------------------------------------------

    def _render(self, template: str, binds: Sequence[Bind]) -> str:
        return render(template, self._refs, binds)

    def _job_config(self, sql: str, binds: Sequence[Bind]) -> bigquery.QueryJobConfig:
        used = set(_PARAM.findall(sql))
        params: list[Any] = []
        for b in binds:
            if b.name not in used:
                continue
            if isinstance(b, Scalar):
                params.append(bigquery.ScalarQueryParameter(b.name, _param_type(b.type), b.value))
            elif isinstance(b, KeySet):
                params.append(bigquery.ArrayQueryParameter(b.name, _param_type(b.type), list(b.values)))
            else:
                struct_type = bigquery.StructQueryParameterType(
                    *(bigquery.ScalarQueryParameterType(_param_type(t), name=n) for n, t in b.columns)
                )
                values = [
                    bigquery.StructQueryParameter(
                        None, *(bigquery.ScalarQueryParameter(n, _param_type(t), r.get(n)) for n, t in b.columns)
                    )
                    for r in b.rows
                ]
                params.append(bigquery.ArrayQueryParameter(b.name, struct_type, values))
        return bigquery.QueryJobConfig(query_parameters=params)

    def _query(self, sql: str, binds: Sequence[Bind], page_size: int | None = None) -> Any:
        # query_and_wait: the jobs.query API, fewer round trips than insert-job-then-poll.
        return self.client.query_and_wait(
            sql, job_config=self._job_config(sql, binds), location=self.location, page_size=page_size,
            api_timeout=self.timeout, retry=self._retry,
        )

    def _run(self, template: str, binds: Sequence[Bind], *, fetch: bool = False) -> tuple[list[dict[str, Any]], int | None]:
        if self.before_write is not None and fenced(template):
            self.before_write()  # the writer lease's fence (truth_forge/core/lease.py)
        sql = self._render(template, binds)
        try:
            result = self._query(sql, binds)
            rows = [dict(r.items()) for r in result] if fetch else []
        except _CALL_FAILED as exc:
            raise WarehouseQueryError("BigQuery", self._said(exc), sql) from exc
        self._account_job(sql, binds, result)
        return rows, result.num_dml_affected_rows

    def _stream(self, template: str, binds: Sequence[Bind], batch_size: int) -> Generator[list[dict[str, Any]], None, None]:
        sql = self._render(template, binds)
        try:
            result = self._query(sql, binds, page_size=batch_size)
            self._account_job(sql, binds, result)
            # Pages are fetched one at a time from the query's result table, so memory stays at one page.
            for page in result.pages:
                batch = [dict(r.items()) for r in page]
                if batch:
                    yield batch
        except _CALL_FAILED as exc:
            raise WarehouseQueryError("BigQuery", self._said(exc), sql) from exc

    def table_bytes(self, table: str) -> int | None:
        """From the table's metadata (tables.get: free), as BigQuery bills a full read of it."""
        ref = f"{self.project}.{self.dataset}.{self.tables[table]}"
        try:
            return int(self.client.get_table(ref, retry=self._retry, timeout=self.timeout).num_bytes or 0)
        except _CALL_FAILED as exc:
            raise WarehouseQueryError("BigQuery", self._said(exc), f"(reading the size of {ref})") from exc

    def _account_job(self, sql: str, binds: Sequence[Bind], result: Any) -> None:
        # The job statistics that jobs.query returns with the first page: bytes processed; billed
        # bytes follow by BigQuery's on-demand rounding (the job resource itself is not fetched: one
        # more API call per statement to read a figure the rounding rule already gives).
        processed = getattr(result, "total_bytes_processed", None)
        processed = int(processed) if processed is not None else 0
        self._account(sql, binds, bytes_processed=processed, bytes_billed=billed_from_processed(processed),
                      job_id=getattr(result, "job_id", None))

    def _run_ddl(self, statements: Sequence[str]) -> None:
        # One script job instead of one job per table: each BigQuery job costs a round trip or more.
        self._run(";\n".join(statements) + ";", ())

    def _atomic(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()

    def _existing_columns(self) -> dict[str, set[str]]:
        ours = {self.tables[name] for name in TABLES}
        out: dict[str, set[str]] = {}
        try:
            for item in self.client.list_tables(f"{self.project}.{self.dataset}", retry=self._retry,
                                                timeout=self.timeout):
                if item.table_id in ours:
                    table = self.client.get_table(item.reference, retry=self._retry, timeout=self.timeout)
                    out[item.table_id] = {f.name.lower() for f in table.schema}
        except _CALL_FAILED as exc:
            raise WarehouseQueryError("BigQuery", self._said(exc),
                                      f"(listing the tables of {self.project}.{self.dataset})") from exc
        return out

    def _table_names(self) -> list[str]:
        try:
            return sorted(item.table_id for item in self.client.list_tables(
                f"{self.project}.{self.dataset}", retry=self._retry, timeout=self.timeout))
        except _CALL_FAILED as exc:
            raise WarehouseQueryError("BigQuery", self._said(exc),
                                      f"(listing the tables of {self.project}.{self.dataset})") from exc

    def _said(self, exc: BaseException) -> str:
        """BigQuery's words, with the endpoint tried when the call never got an answer."""
        text = " ".join(str(exc).split())[:400]
        if isinstance(exc, gexc.GoogleAPICallError):
            return text
        cause = getattr(exc, "cause", None) or exc  # a RetryError keeps the last failure
        said = str(cause)
        reason = ("connection refused" if "Connection refused" in said
                  else "timed out" if "timed out" in said.lower() or "timeout" in type(cause).__name__.lower()
                  else " ".join(said.split())[:200])
        return (f"no answer from {self.endpoint} within {self.timeout:g} s "
                f"(TRUTH_FORGE_WAREHOUSE_TIMEOUT_SECONDS): {type(cause).__name__}: {reason}")

    def _ensure_dataset(self, create: bool) -> None:
        ref = bigquery.DatasetReference(self.project, self.dataset)
        name = f"{self.project}.{self.dataset}"
        try:
            self.client.get_dataset(ref, retry=self._retry, timeout=self.timeout)
            return
        except gexc.NotFound:
            if not create:
                raise WarehouseMissing(f"BigQuery dataset {name} does not exist") from None
        except _CALL_FAILED as exc:
            raise WarehouseConfigError(f"cannot reach BigQuery dataset {name} at {self.endpoint}: "
                                       f"{self._said(exc)}") from exc
        dataset = bigquery.Dataset(ref)
        if self.location:
            dataset.location = self.location
        try:
            self.client.create_dataset(dataset, exists_ok=True, retry=self._retry, timeout=self.timeout)
        except _CALL_FAILED as exc:
            raise WarehouseConfigError(
                f"BigQuery dataset {name} does not exist and could not be created: {self._said(exc)}"
            ) from exc


def render(template: str, refs: Mapping[str, str], binds: Sequence[Bind]) -> str:
    """A statement template as BigQuery runs it: table references filled in, batches and key sets
    as `UNNEST(@name)` of their array parameters."""
    fills: dict[str, str] = dict(refs)
    for b in binds:
        if isinstance(b, RowSet):
            fills[f"rows_{b.name}"] = f"UNNEST(@{b.name})"
        elif isinstance(b, KeySet):
            fills[f"keys_{b.name}"] = f"UNNEST(@{b.name})"
    return template.format(**fills)


def _make_client(project: str | None, endpoint: str | None) -> bigquery.Client:
    if endpoint:
        # An emulator: no Google credentials involved.
        from google.api_core.client_options import ClientOptions
        from google.auth.credentials import AnonymousCredentials

        return bigquery.Client(
            project=project, credentials=AnonymousCredentials(), client_options=ClientOptions(api_endpoint=endpoint)
        )
    try:
        return bigquery.Client(project=project)  # application default credentials
    except Exception as exc:  # google.auth raises several types; all mean "fix credentials/config"
        raise WarehouseConfigError(f"cannot create a BigQuery client (application default credentials): {exc}") from exc
