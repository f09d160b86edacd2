"""`truth-forge history` and `truth-forge conflicts`: a record's timeline, and conflicts to review.

Thin shells over `operations/history.py` and `operations/conflicts.py`. `history` and the list of
conflicts only look (a DuckDB file is opened read-only); `conflicts resolve` writes, as the
warehouse's writer (it takes the writer lease, as a sync does) and through Twenty's API.
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
from typing import Annotated, Any

import typer
from rich.table import Table

from truth_forge.operations.failures import CommandFailed

VALUE_CHARS = 60
ID_SHOWN = 12  # enough to tell conflicts apart; `resolve` takes this prefix


def _when(value: Any) -> str:
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
    return "" if value is None else str(value)


def _shown(value: Any) -> str:
    text = "∅" if value is None else value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= VALUE_CHARS else text[: VALUE_CHARS - 1] + "…"


def history_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(show_edge=False, pad_edge=False)
    for column in ("applied (UTC)", "field", "old → new", "side", "actor", "changed there", "via", "run"):
        table.add_column(column, overflow="fold")
    for row in rows:
        change = "" if row["field"].startswith("(") else f"{_shown(row['old_value'])} → {_shown(row['new_value'])}"
        table.add_row(_when(row["applied_at"]), row["field"], change, row["side"], row.get("actor") or "",
                      _when(row.get("changed_at")), row["via"], (row.get("run_id") or "")[:ID_SHOWN])
    return table


def history_command(
    ctx: typer.Context,
    record_type: Annotated[str | None, typer.Argument(help="contact or company.", show_default=False)] = None,
    key: Annotated[int | None, typer.Argument(help="Its contact_id / business_id.", show_default=False)] = None,
    crm_id: Annotated[str | None, typer.Option("--crm-id", help="The record's Twenty id, instead of its key.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="How many changes, newest first.")] = 200,
    as_json: Annotated[bool, typer.Option("--json", help="Print the history as JSON.")] = False,
) -> None:
    """A record's history: every change the sync applied to it, either way, newest first (field,
    old → new, the side and person that made it, when it happened there and when it was applied).

    `truth-forge history contact 42`, `history company 7`, `history --crm-id <Twenty id>`."""
    from truth_forge.cli.status import _quiet_logs, _reading
    from truth_forge.core.config import Settings
    from truth_forge.operations.history import record_history

    _quiet_logs(ctx)
    if crm_id is None and (record_type is None or key is None):
        raise typer.BadParameter("name the record: `history contact 42`, or `history --crm-id <Twenty id>`")
    try:
        with _reading(Settings()) as (warehouse, snapshot):
            if warehouse is None:
                raise CommandFailed("another process is writing the DuckDB file; the history is read once it is done")
            rows = record_history(warehouse, record_type, key, crm_id, limit)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    if as_json:
        typer.echo(json.dumps(rows, indent=2, sort_keys=True, default=str))
    elif rows:
        from truth_forge.cli.status import _console

        _console().print(history_table(rows))
    else:
        typer.echo("no history for this record")


# Its list (the callback, run without a subcommand) and `resolve` are wired up in main.py.
conflicts_app = typer.Typer(help="Conflicts the sync settled by policy: review them, and resolve them by hand.",
                            invoke_without_command=True, no_args_is_help=False)


def conflicts_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(show_edge=False, pad_edge=False)
    for column in ("id", "seen (UTC)", "record", "field", "base", "warehouse", "Twenty", "policy took", "review"):
        table.add_column(column, overflow="fold")
    for row in rows:
        record = f"{'contact' if row['object_type'] == 'person' else 'company'} {row['record_key']}"
        review = "open" if row["is_open"] else (f"{row['taken']} {_shown(row['chosen_value'])} by "
                                                f"{row['resolved_by']} {_when(row['resolved_at'])}")
        table.add_row(row["conflict_id"][:ID_SHOWN], _when(row["occurred_at"]), record, row["field"] or "",
                      _shown(row["base_value"]), _shown(row["warehouse_value"]), _shown(row["twenty_value"]),
                      row["winner"] or "", review)
    return table


def conflicts_command(
    ctx: typer.Context,
    open_only: Annotated[bool, typer.Option("--open", help="Only conflicts nobody has reviewed yet.")] = False,
    limit: Annotated[int, typer.Option("--limit", min=1, help="How many, newest first.")] = 200,
    as_json: Annotated[bool, typer.Option("--json", help="Print the conflicts as JSON.")] = False,
) -> None:
    """Fields edited on both sides, as the sync saw them (base, warehouse and Twenty values) and
    settled them by policy; `conflicts resolve ID --take warehouse|twenty|VALUE` applies your choice."""
    if ctx.invoked_subcommand is not None:
        return
    from truth_forge.cli.status import _console, _quiet_logs, _reading
    from truth_forge.core.config import Settings
    from truth_forge.operations.conflicts import list_conflicts

    _quiet_logs(ctx)
    with _reading(Settings()) as (warehouse, snapshot):
        if warehouse is None:
            raise CommandFailed("another process is writing the DuckDB file; conflicts are read once it is done")
        rows = list_conflicts(warehouse, open_only=open_only, limit=limit)
    if as_json:
        typer.echo(json.dumps(rows, indent=2, sort_keys=True, default=str))
    elif rows:
        _console().print(conflicts_table(rows))
    else:
        typer.echo("no conflicts" + (" open" if open_only else ""))


def resolve_command(
    conflict_id: Annotated[str, typer.Argument(help="The conflict's id (or its start, as `conflicts` shows it).")],
    take: Annotated[str, typer.Option("--take", help="warehouse, twenty, or the value itself (JSON where the "
                                                     "field is not text).")],
    by: Annotated[str | None, typer.Option("--by", help="Who resolves it, for the history (default: your "
                                                        "login name).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the outcome as JSON.")] = False,
) -> None:
    """Apply a person's choice for one conflict: the value goes to the warehouse, then to Twenty (that
    record is pushed), both recorded in the history. Exit 1 when Twenty refused the record."""
    from truth_forge.core.lease import writing
    from truth_forge.core.reporting import ErrorReporter
    from truth_forge.operations.conflicts import ConflictAlreadyResolved, ConflictNotFound, resolve_conflict
    from truth_forge.services.sync import TwentyCRMService
    from truth_forge.sync.context import SyncContext

    who = by or getpass.getuser()
    with TwentyCRMService() as service:
        warehouse, api = service.warehouse, service.client.api
        reporter = ErrorReporter(run_id=f"resolve:{conflict_id[:ID_SHOWN]}", secrets=api.transport.secrets)
        ctx = SyncContext(warehouse, api, service.schema, reporter)
        try:
            with writing(warehouse, purpose="resolve") as lease, lease.fencing(api.transport):
                outcome = resolve_conflict(ctx, conflict_id, take, who)
        except (ConflictNotFound, ConflictAlreadyResolved, ValueError) as exc:
            raise CommandFailed(str(exc)) from None
    if as_json:
        typer.echo(json.dumps(outcome, indent=2, sort_keys=True, default=str))
    else:
        where = "the warehouse and Twenty" if outcome["push"].get("upserted") else (
            "the warehouse" if outcome["warehouse_changed"] else "neither side (both already hold it)")
        typer.echo(f"conflict {outcome['conflict_id'][:ID_SHOWN]}: {outcome['field']} = {_shown(outcome['value'])}, "
                   f"written to {where}; resolved by {who}")
        for error in outcome["errors"]:
            typer.echo(f"  error: {error.get('error_message')}", err=True)
    raise typer.Exit(1 if outcome["errors"] else 0)
