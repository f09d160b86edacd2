"""`truth-forge`: the command line. Each command is a thin shell over a library call."""

from __future__ import annotations

import json
import logging
import sys
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


def _register_component_commands() -> None:
    # Each component keeps its command beside the code it drives; this file only wires them up.
    from truth_forge.sandbox.cli import sandbox_command
    from truth_forge.warehouse.cli import sample_data_command

    app.command("sandbox")(sandbox_command)
    app.command("sample-data")(sample_data_command)


_register_component_commands()


def run() -> None:  # pragma: no cover - console entry for `python -m truth_forge`
    sys.exit(app())
