"""`truth-forge doctor`: the command-line shell over `truth_forge.operations.doctor.run_doctor`.

Kept apart from the checks so the library stays free of Typer, as the sandbox keeps its command.
"""

from __future__ import annotations

from typing import Annotated

import typer


def doctor_command(
    probe_writes: Annotated[bool, typer.Option(
        "--probe-writes",
        help="Also create ONE probe person, try writes on it, and destroy it again (fires webhooks).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the findings as JSON.")] = False,
    log_format: Annotated[str, typer.Option(
        "--log-format", help="text | json (log lines as JSON objects on stderr; the findings stay on stdout)")] = "text",
) -> None:
    """Check a live Twenty workspace against what truth-forge relies on. Read-only unless --probe-writes.

    Exit 0 when nothing failed, 1 when a check failed, 2 when the workspace could not be checked.
    """
    from pydantic import ValidationError  # here, not at the top: `truth-forge --help` need not load it

    from truth_forge.core.config import Settings
    from truth_forge.operations.doctor import run_doctor
    from truth_forge.operations.failures import explain
    from truth_forge.operations.logs import check_log_format, use_json_logs

    check_log_format(log_format)
    if log_format == "json":
        use_json_logs()

    try:
        settings = Settings()
        report = run_doctor(settings, probe_writes=probe_writes)
    except (ValidationError, ValueError) as exc:
        explanation = explain(exc)
        typer.secho(f"error: {explanation.message if explanation else exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None
    typer.echo(report.to_json() if as_json else report.render())
    raise typer.Exit(report.exit_code)
