"""`truth-forge`: the command line. Each command is a thin shell over a library call."""

from __future__ import annotations

import functools
import json
import logging
import os
from collections.abc import Callable
from typing import Any, TypeVar

import typer

from truth_forge.operations.failures import CommandFailed, exit_codes_text, explain

log = logging.getLogger(__name__)

app = typer.Typer(
    help="Keep a contacts warehouse (DuckDB or BigQuery) and a Twenty CRM workspace in sync.",
    epilog=exit_codes_text().replace("\n", "\n\n"),
    no_args_is_help=True,
    # `--install-completion` / `--show-completion SHELL`: bash, zsh, fish and PowerShell.
    add_completion=True,
    # Plain click help: flags read as flags (rich's panels show `--json <bool>`), and `\b` keeps examples as written.
    rich_markup_mode=None,
)
_state = {"verbose": False}
Command = TypeVar("Command", bound=Callable[..., Any])


def _show_version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        from truth_forge import __version__

        try:
            shown = version("truth-forge")
        except PackageNotFoundError:
            shown = __version__
        typer.echo(f"truth-forge {shown}")
        raise typer.Exit(0)


@app.callback()
def main(
    ctx: typer.Context,
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log requests and decisions; show tracebacks."),
    version: bool = typer.Option(False, "--version", callback=_show_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not verbose:
        logging.getLogger("httpx").setLevel(logging.WARNING)
        # The runner logs a run's counts as a dict; every command shows them better (-v keeps it).
        logging.getLogger("truth_forge.sync.runner").setLevel(logging.WARNING)
    # httpcore's debug log prints every header sent and received (the API key, a redirect's Location):
    # kept below that level even under -v.
    logging.getLogger("httpcore").setLevel(logging.INFO)
    _state["verbose"] = verbose
    ctx.obj = {"verbose": verbose}
    _warn_unknown_variables()
    from truth_forge.core.memory import bound_heap

    bound_heap()  # before any thread allocates: a thread started earlier keeps an arena of its own


def _warn_unknown_variables() -> None:
    """A misspelled TRUTH_FORGE_* variable (in the environment or .env) is said, not silently ignored."""
    from truth_forge.core.config import unknown_variables
    from truth_forge.core.secrets import dotenv_file_values

    for line in unknown_variables([*os.environ, *dotenv_file_values()]):
        logging.getLogger("truth_forge.core.config").warning(line)


def explained(command: Command) -> Command:
    """Expected failures end in one line naming what to fix and the exit code from the table in
    `failures.py`; the traceback only under -v. Anything else is a bug and keeps its traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except Exception as exc:
            explanation = explain(exc)
            if explanation is None:
                raise
            if _state["verbose"]:
                log.error("The failure below in full:", exc_info=exc)
            typer.secho(f"error: {explanation.message}", fg=typer.colors.RED, err=True)
            raise typer.Exit(explanation.exit_code) from None

    return wrapper  # type: ignore[return-value]


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

    with TwentyCRMService() as service:
        report = service.setup_crm() if action == "setup" else service.verify_setup()
    if as_json:
        typer.echo(json.dumps(report, indent=2, sort_keys=True))
    else:
        _print_schema_report(report)
    raise typer.Exit(0 if report["all_complete"] else 1)


@app.command()
@explained
def setup(as_json: bool = typer.Option(False, "--json", help="Print the report as JSON.")) -> None:
    """Create the custom fields truth-forge needs in Twenty (only what is missing).

    Exit 0 when complete, 1 when fields are still missing, 2 when Twenty could not be reached or refused the key.

    \b
    Example:
      TWENTY_BASE_URL=https://crm.example.com TWENTY_API_KEY=... truth-forge setup
    """
    _run_schema_command("setup", as_json)


@app.command()
@explained
def verify(as_json: bool = typer.Option(False, "--json", help="Print the report as JSON.")) -> None:
    """Check the custom fields in Twenty without changing anything.

    Exit 0 when complete, 1 when fields are missing, 2 when Twenty could not be reached or refused the key."""
    _run_schema_command("verify", as_json)


@app.command()
@explained
def demo(
    workdir: str = typer.Option(".demo", metavar="DIR", help="Folder for the demo's DuckDB file: new, empty, or a previous demo's (only its files are replaced)."),
    contacts: int = typer.Option(200, min=1, help="Sample contacts to generate."),
) -> None:
    """Run the whole loop on the bundled Twenty sandbox and a DuckDB file: setup, sync, edit, sync.

    \b
    Examples:
      truth-forge demo
      truth-forge demo --workdir /tmp/tf-demo --contacts 1000
    """
    from pathlib import Path

    from truth_forge.cli.demo import DemoFolderInUse, run_demo

    try:
        figures = run_demo(Path(workdir), contacts=contacts, say=typer.echo)
    except DemoFolderInUse as exc:
        raise CommandFailed(str(exc)) from None
    raise typer.Exit(0 if figures["open_errors"] == 0 else 1)


def _register_component_commands() -> None:
    # Each component keeps its command beside the code it drives; this file only wires them up.
    from truth_forge.cli.console import console_command
    from truth_forge.cli.doctor import doctor_command
    from truth_forge.cli.history import conflicts_app, conflicts_command, history_command, resolve_command
    from truth_forge.cli.serve import serve_command, webhooks_app
    from truth_forge.cli.status import errors_command, runs_command, status_command
    from truth_forge.cli.sync import sync_command
    from truth_forge.sandbox.cli import sandbox_command
    from truth_forge.warehouse.cli import init_command, sample_data_command

    epilog = exit_codes_text().replace("\n", "\n\n")
    app.command("sync", epilog=epilog)(explained(sync_command))
    app.command("status")(explained(status_command))
    app.command("runs")(explained(runs_command))
    app.command("errors")(explained(errors_command))
    app.command("init")(explained(init_command))
    app.command("sandbox")(sandbox_command)
    app.command("sample-data")(explained(sample_data_command))
    app.command("doctor")(explained(doctor_command))
    app.command("serve")(explained(serve_command))
    app.command("console")(explained(console_command))
    app.add_typer(webhooks_app, name="webhooks")
    app.command("history")(explained(history_command))
    conflicts_app.callback(invoke_without_command=True)(explained(conflicts_command))
    conflicts_app.command("resolve")(explained(resolve_command))
    app.add_typer(conflicts_app, name="conflicts")


_register_component_commands()


if __name__ == "__main__":  # `python -m truth_forge.cli.main`, as the tests run it
    app()
