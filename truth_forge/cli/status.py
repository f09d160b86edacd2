"""`truth-forge status`, `runs` and `errors`: the sync's bookkeeping, readable without SQL.

Kept apart from `status.py` (which gathers) so the library stays free of Typer. These commands never
create a warehouse and open a DuckDB file read-only: looking must change nothing. While another
process writes the DuckDB file (DuckDB then lets nobody else open it), they show what that process
last wrote beside it (`snapshot.py`) and say so on stderr.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

MESSAGE_CHARS = 200


def _console() -> Console:
    console = Console()
    return console if console.is_terminal else Console(width=200)


def _open(settings: Any) -> Any:
    from truth_forge.warehouse import open_warehouse

    return open_warehouse(settings, create=False, read_only=True)


@contextmanager
def _reading(settings: Any) -> Iterator[tuple[Any, dict[str, Any] | None]]:
    """(the warehouse opened for reading, None), or (None, the writer's snapshot) while another
    process holds the DuckDB file; the file's own error when there is no snapshot to show."""
    from truth_forge.operations.snapshot import read_snapshot, snapshot_note
    from truth_forge.warehouse import WarehouseLockedError

    try:
        warehouse = _open(settings)
    except WarehouseLockedError:
        snapshot = read_snapshot(settings.warehouse_url)
        if snapshot is None:
            raise
        typer.echo(snapshot_note(snapshot), err=True)
        yield None, snapshot
        return
    with warehouse:
        yield warehouse, None


def _quiet_logs(ctx: typer.Context) -> None:
    """Looking needs no progress log (the key's source...): warnings only, unless -v."""
    if not (ctx.obj and ctx.obj.get("verbose")):
        logging.getLogger().setLevel(logging.WARNING)


def _when(value: Any) -> str:
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
    return "" if value is None else str(value)


def _duration(run: dict[str, Any]) -> str:
    from truth_forge.operations.progress import format_duration

    if not run.get("finished_at") or not run.get("started_at"):
        return ""
    return format_duration((run["finished_at"] - run["started_at"]).total_seconds())


def _phase_total(counts: dict[str, Any], prefix: str, keys: tuple[str, ...]) -> int:
    return sum(int(v.get(k, 0)) for name, v in counts.items() if name.startswith(prefix) and isinstance(v, dict)
               for k in keys)


RUN_ID_SHOWN = 12  # enough to tell runs apart; `errors --run` takes this prefix


def runs_table(runs: list[dict[str, Any]], *, short_ids: bool = False) -> Table:
    table = Table(show_edge=False, pad_edge=False)
    # Bytes billed: only where the warehouse bills by them (BigQuery reports them on every job).
    billed = any("bytes_billed" in (run.get("counts") or {}) for run in runs)
    columns = ("started (UTC)", "took", "status", "pulled", "pushed", "failed", "errors", "requests",
               *(("billed",) if billed else ()), "run")
    for column in columns:
        table.add_column(column, justify="right" if column in ("pulled", "pushed", "failed", "errors",
                                                               "requests", "billed") else "left", no_wrap=True)
    for run in runs:
        counts = run.get("counts") or {}
        table.add_row(
            _when(run["started_at"]), _duration(run), run["status"] or "",
            str(_phase_total(counts, "pull_", ("created", "updated", "deleted"))),
            str(_phase_total(counts, "push_", ("upserted", "deleted"))),
            str(_phase_total(counts, "", ("failed",))),
            str(counts.get("errors", "")), str(counts.get("requests", "")),
            *((_bytes(counts.get("bytes_billed")),) if billed else ()),
            run["run_id"][:RUN_ID_SHOWN] if short_ids else run["run_id"],
        )
    return table


def errors_table(errors: list[dict[str, Any]]) -> Table:
    table = Table(show_edge=False, pad_edge=False)
    for column in ("state", "what", "record", "attempts", "first seen", "last seen", "error"):
        table.add_column(column, justify="right" if column == "attempts" else "left", overflow="fold")
    for error in errors:
        state = "open" if error["is_open"] else f"resolved {_when(error['resolved_at'])}"
        what = " ".join(x for x in (error["operation"], error.get("object_type") or "") if x)
        record = error.get("record_key") or (f"Twenty {error['crm_id']}" if error.get("crm_id") else "(run)")
        message = f"{error['error_class']}: {error['error_message'] or ''}"
        table.add_row(state, what, record, str(error["attempts"]), _when(error["first_seen"]),
                      _when(error["last_seen"]), message[:MESSAGE_CHARS])
    return table


def status_command(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print the status as JSON.")] = False,
    offline: Annotated[bool, typer.Option("--offline", help="Do not ask Twenty whether setup is complete.")] = False,
) -> None:
    """Last runs, open errors by kind, watermarks, what the next run will do, whether setup is complete.

    Exit 0 when all is well, 1 when errors are open, the last run did not succeed or setup is incomplete,
    2 when the warehouse could not be read.

    \b
    Examples:
      truth-forge status                    a person's view
      truth-forge status --offline --json   a health check that asks Twenty nothing
    """
    from truth_forge.core.config import Settings
    from truth_forge.operations.status import NOT_CHECKED_OFFLINE, StatusReport, check_setup, gather_status

    _quiet_logs(ctx)
    settings = Settings()
    setup = NOT_CHECKED_OFFLINE if offline else check_setup(settings)
    with _reading(settings) as (warehouse, snapshot):
        if snapshot is not None:
            written = {k: v for k, v in snapshot["status"].items() if k != "open_errors"}
            report = StatusReport(**{**written, "setup": setup})
        else:
            report = gather_status(warehouse, warehouse_url=settings.warehouse_url, setup=setup)
    if as_json:
        typer.echo(json.dumps(report.as_dict(), indent=2, sort_keys=True))
    else:
        print_status(_console(), report)
    raise typer.Exit(0 if report.healthy else 1)


def print_status(console: Console, report: Any) -> None:
    console.print(f"Warehouse: {report.warehouse_url}", highlight=False)
    console.print(f"Twenty setup: {report.setup}", highlight=False, markup=False)
    synced = ", ".join(f"{obj} {sum(states.values())} ({', '.join(f'{n} {s}' for s, n in sorted(states.items()))})"
                       for obj, states in sorted(report.synced.items()))
    console.print(f"Records known to both sides: {synced or 'none yet'}", highlight=False)
    console.print("\nLast runs:")
    console.print(runs_table(report.runs, short_ids=True) if report.runs else "  none yet")
    console.print(f"\nOpen errors: {report.open_errors}")
    for kind in report.open_kinds:
        what = " ".join(x for x in (kind["operation"], kind.get("object_type") or "", kind["error_class"]) if x)
        console.print(f"  {what}: {kind['open_errors']} ({kind['attempts']} attempts, first seen "
                      f"{_when(kind['first_seen'])}, last {_when(kind['last_seen'])})", highlight=False)
    if report.open_kinds:
        console.print("  list them: truth-forge errors --open", highlight=False)
    console.print("\nWatermarks:")
    for name, value in sorted(report.watermarks.items()):
        console.print(f"  {name}: {value}", highlight=False)
    if not report.watermarks:
        console.print("  none yet (the first run pulls everything)")
    for line in report.own_writes:
        console.print(f"  own writes: {line}", highlight=False, markup=False)
    console.print("\nThe next run will:")
    for step in report.next_run:
        console.print(f"  {step}", highlight=False, markup=False)


def runs_command(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option("--limit", min=1, help="How many runs, newest first.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print the runs as JSON.")] = False,
) -> None:
    """The latest sync runs: when, how long, what they moved, what failed, what they cost."""
    from truth_forge.core.config import Settings

    _quiet_logs(ctx)
    with _reading(Settings()) as (warehouse, snapshot):
        runs = snapshot["runs"][:limit] if snapshot is not None else warehouse.recent_runs(limit)
    if as_json:
        typer.echo(json.dumps(runs, indent=2, sort_keys=True, default=str))
    elif runs:
        _console().print(runs_table(runs))
    else:
        typer.echo("no runs yet")


def errors_command(
    ctx: typer.Context,
    run: Annotated[str | None, typer.Option(
        "--run", help="Only errors seen in this run (its run id, or the start of it).")] = None,
    open_only: Annotated[bool, typer.Option("--open", help="Only errors still open.")] = False,
    limit: Annotated[int, typer.Option("--limit", min=1, help="How many, most recently seen first.")] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="Print the errors as JSON.")] = False,
) -> None:
    """Sync errors with their lifecycle: first and last seen, attempts, resolved when the record (or,
    for a run-level error, the next successful run) went through."""
    from truth_forge.core.config import Settings

    _quiet_logs(ctx)
    with _reading(Settings()) as (warehouse, snapshot):
        if snapshot is not None:
            errors = [e for e in snapshot["errors"] if (e["is_open"] or not open_only)
                      and (run is None or str(e.get("last_run_id") or "").startswith(run))][:limit]
        else:
            errors = warehouse.error_lifecycles(open_only=open_only, run_id=run, limit=limit)
    if as_json:
        typer.echo(json.dumps(errors, indent=2, sort_keys=True, default=str))
    elif errors:
        _console().print(errors_table(errors))
    else:
        typer.echo("no errors" + (" open" if open_only else "") + (f" in run {run}" if run else ""))


def _bytes(count: int | None) -> str:
    from truth_forge.warehouse.accounting import format_bytes  # here: `--help` need not load the warehouse

    return format_bytes(count)
