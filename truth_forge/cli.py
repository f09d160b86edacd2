"""`truth-forge`: the command line. Each command is a thin shell over a library call."""

from __future__ import annotations

import json
import logging
from typing import Any

import typer

from truth_forge.twenty.errors import TwentyError

app = typer.Typer(
    help="Keep a contacts warehouse (DuckDB or BigQuery) and a Twenty CRM workspace in sync.",
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log requests and decisions.")) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not verbose:
        logging.getLogger("httpx").setLevel(logging.WARNING)
    # httpcore's debug log prints every header sent and received (the API key, a redirect's Location):
    # kept below that level even under -v.
    logging.getLogger("httpcore").setLevel(logging.INFO)


def fail(message: str, code: int = 1) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _print_schema_report(report: dict[str, Any]) -> None:
    for obj in ("person", "company"):
        part = report[obj]
        typer.echo(f"{obj}: {len(part['present'])} ok, {len(part['missing'])} missing, "
                   f"{len(part['mismatched'])} mismatched")
        for name in part["missing"]:
            typer.echo(f"  missing     {name}")
        for item in part["mismatched"]:
            typer.echo(f"  mismatched  {item['field']}: {'; '.join(item['problems'])}")
    if report.get("created"):
        typer.echo("created: " + ", ".join(report["created"]))
    for field, values in (report.get("options_added") or {}).items():
        typer.echo(f"options added to {field}: {', '.join(values)}")
    for problem in report.get("errors") or []:
        typer.echo(f"refused     {problem['field']}: {problem['error']}")
    typer.echo("complete" if report["all_complete"] else "INCOMPLETE")


def _run_schema_command(action: str, as_json: bool) -> None:
    from truth_forge.services.sync import TwentyCRMService

    try:
        with TwentyCRMService() as service:
            report = service.setup_crm() if action == "setup" else service.verify_setup()
    except (TwentyError, ValueError) as exc:
        fail(str(exc))
    if as_json:
        typer.echo(json.dumps(report, indent=2, sort_keys=True))
    else:
        _print_schema_report(report)
    raise typer.Exit(0 if report["all_complete"] else 1)


@app.command()
def setup(as_json: bool = typer.Option(False, "--json", help="Print the report as JSON.")) -> None:
    """Create the custom fields truth-forge needs in Twenty (only what is missing). Exit 0 when complete."""
    _run_schema_command("setup", as_json)


@app.command()
def verify(as_json: bool = typer.Option(False, "--json", help="Print the report as JSON.")) -> None:
    """Check the custom fields in Twenty without changing anything. Exit 0 only when complete."""
    _run_schema_command("verify", as_json)


@app.command()
def sync(
    direction: str = typer.Option("both", help="both | push (warehouse -> Twenty) | pull (Twenty -> warehouse)"),
    conflict_policy: str = typer.Option("crm_wins", help="Who wins a field edited on both sides: crm_wins | warehouse_wins"),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    full: bool = typer.Option(False, "--full", help="Compare every Twenty record (about N/200 requests): also "
                              "finds records destroyed in Twenty, drift and orphans."),
    wait_for_lease: float = typer.Option(
        0.0, min=0, help="Seconds to wait while another writer (a `serve`, another sync) holds the warehouse."),
) -> None:
    """Run one sync. Exit 0 when every record synced, 1 when some failed, 2 when the run stopped early."""
    from truth_forge.lease import WarehouseBusy
    from truth_forge.services.sync import TwentyCRMService
    from truth_forge.sync.runner import run_sync
    from truth_forge.warehouse import WarehouseError

    if direction not in ("both", "push", "pull"):
        fail(f"--direction must be both, push or pull, not {direction!r}", 2)
    if conflict_policy not in ("crm_wins", "warehouse_wins"):
        fail(f"--conflict-policy must be crm_wins or warehouse_wins, not {conflict_policy!r}", 2)
    try:
        with TwentyCRMService() as service:
            result = run_sync(service.warehouse, service.client.api, service.schema,
                              direction=direction, conflict_policy=conflict_policy, full=full,  # type: ignore[arg-type]
                              lease_wait=wait_for_lease)
    except (TwentyError, WarehouseError, WarehouseBusy, ValueError) as exc:
        fail(str(exc), 2)
    if as_json:
        typer.echo(json.dumps(result.as_dict(), indent=2, sort_keys=True, default=str))
    else:
        typer.echo(f"run {result.run_id}: {result.status}")
        for name, value in result.counts.items():
            typer.echo(f"  {name}: {value}")
        for error in result.sync_errors[:20]:
            typer.echo(f"  error {error['operation']} {error['object_type'] or ''} {error['record_key'] or ''}: "
                       f"{error['error_message']}")
        if len(result.sync_errors) > 20:
            typer.echo(f"  ... {len(result.sync_errors) - 20} more in crm_sync_errors")
    raise typer.Exit({"succeeded": 0, "partial": 1}.get(result.status, 2))


@app.command()
def demo(
    workdir: str = typer.Option(".demo", help="Folder for the demo's DuckDB file (emptied first)."),
    contacts: int = typer.Option(200, min=1, help="Sample contacts to generate."),
) -> None:
    """Run the whole loop on the bundled Twenty sandbox and a DuckDB file: setup, sync, edit, sync."""
    from pathlib import Path

    from truth_forge.demo import run_demo

    figures = run_demo(Path(workdir), contacts=contacts, say=typer.echo)
    raise typer.Exit(0 if figures["open_errors"] == 0 else 1)


def _register_component_commands() -> None:
    # Each component keeps its command beside the code it drives; this file only wires them up.
    from truth_forge.doctor_cli import doctor_command
    from truth_forge.sandbox.cli import sandbox_command
    from truth_forge.serve_cli import serve_command, webhooks_app
    from truth_forge.warehouse.cli import sample_data_command

    app.command("sandbox")(sandbox_command)
    app.command("sample-data")(sample_data_command)
    app.command("doctor")(doctor_command)
    app.command("serve")(serve_command)
    app.add_typer(webhooks_app, name="webhooks")


_register_component_commands()


if __name__ == "__main__":  # `python -m truth_forge.cli`, as the tests run it
    app()
