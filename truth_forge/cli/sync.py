"""`truth-forge sync`: one run, a dry run, or runs on a schedule, shown the way the reader needs.

Why it exists: the command wires the library together (warehouse, client, run, alerts, schedule)
and picks the output: progress bars and a summary table on a terminal, JSON lines when stdout is
not a terminal (or `--log-format json`), one line or nothing with `--quiet` (for cron, which mails
whatever a job prints). The exit code follows `truth_forge.operations.failures.EXIT_CODES`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated, Any

import typer
from rich.console import Console

from truth_forge.operations.failures import (
    EXIT_COULD_NOT_RUN,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_RECORDS_FAILED,
    CommandFailed,
)
from truth_forge.operations.logs import (
    LOG_FORMATS,
    check_log_format,
    current_run_id,
    set_run_id,
    tracking_run_id,
    use_json_logs,
)

log = logging.getLogger(__name__)

STATUS_EXIT = {"succeeded": EXIT_OK, "partial": EXIT_RECORDS_FAILED}


@dataclass(frozen=True)
class SyncOptions:
    direction: str
    conflict_policy: str
    dry_run: bool
    create: bool
    full: bool = False
    lease_wait: float = 0.0  # seconds to wait while another writer holds the warehouse
    objects: tuple[str, ...] | None = None  # `--select`: the object types to sync (None: all)


@dataclass
class Output:
    """Where progress, logs and the summary go, decided once per command."""

    log_format: str  # "text" | "json"
    quiet: bool
    as_json: bool
    console: Console
    progress_console: Console

    @classmethod
    def choose(cls, log_format: str, quiet: bool, as_json: bool) -> Output:
        if log_format == "auto":
            log_format = "text" if sys.stdout.isatty() else "json"
        return cls(log_format, quiet, as_json, Console(), Console(file=sys.stderr))

    @property
    def shows_progress(self) -> bool:
        return not (self.quiet or self.as_json) and (self.log_format == "json" or self.progress_console.is_terminal)

    def configure_logging(self, verbose: bool) -> None:
        root = logging.getLogger()
        if self.log_format == "json":
            use_json_logs()
        elif self.progress_console.is_terminal:
            from rich.logging import RichHandler

            root.handlers[:] = [RichHandler(console=self.progress_console, show_path=False, markup=False)]
        if self.quiet and not verbose:
            root.setLevel(logging.ERROR)

    @contextmanager
    def watch(self, requests_per_minute: float, batch_size: int,
              push_estimates: dict[str, int]) -> Iterator[Callable[[Any], None] | None]:
        """The run's event subscriber for this output (None: nobody watches)."""
        from truth_forge.operations.progress import JsonLines, ProgressModel, RichProgress

        if not self.shows_progress:
            yield None
            return
        model = ProgressModel(requests_per_minute, batch_size, push_estimates)
        subscriber = JsonLines(model, sys.stdout) if self.log_format == "json" else RichProgress(model, self.progress_console)
        with subscriber:
            yield subscriber

    def summary(self, result: Any) -> None:
        from truth_forge.operations.failures import run_stopped_lines
        from truth_forge.operations.progress import render_summary, write_json_line

        if result.status == "aborted":
            for line in run_stopped_lines(result.sync_errors):
                typer.secho(f"error: the run stopped early: {line}", fg=typer.colors.RED, err=True)

        if self.as_json:
            typer.echo(json.dumps(result.as_dict(), indent=2, sort_keys=True, default=str))
        elif self.quiet:
            if result.status != "succeeded":
                typer.echo(f"sync {result.status}: {result.counts.get('errors', 0)} errors "
                           f"(truth-forge errors --run {result.run_id})", err=True)
        elif self.log_format == "json":
            write_json_line(sys.stdout, {"event": "summary", **result.as_dict()})
        else:
            render_summary(self.console, result)


def run_once(settings: Any, options: SyncOptions, output: Output) -> int:
    """One sync (or dry run) against the configured warehouse and workspace; returns the exit code."""
    from truth_forge.core.crm_schema import CrmSchema
    from truth_forge.core.lease import open_when_free
    from truth_forge.operations.alerts import alert_after_run
    from truth_forge.operations.progress import estimate_push
    from truth_forge.operations.snapshot import write_snapshot
    from truth_forge.sync.runner import run_sync
    from truth_forge.sync.sweep import SweepPolicy
    from truth_forge.twenty.client import TwentyClient
    from truth_forge.warehouse import open_warehouse
    from truth_forge.warehouse.detection import DetectionPolicy

    schema = CrmSchema.load(settings.crm_schema_file)
    with open_when_free(lambda: open_warehouse(settings, create=options.create, read_only=options.dry_run),
                        options.lease_wait) as warehouse, \
            TwentyClient.from_settings(settings) as api:
        if options.dry_run:
            policy = DetectionPolicy.from_settings(settings)
            if options.full:
                policy = dataclasses.replace(policy, audit=True)
            return _dry_run(warehouse, api, schema, options, output, policy)
        estimates = estimate_push(warehouse) if output.shows_progress else {}
        with output.watch(settings.twenty_requests_per_minute, settings.twenty_batch_size, estimates) as on_event:
            outside_runs = current_run_id()
            try:  # log lines carry the run's id while it runs
                result = run_sync(warehouse, api, schema, direction=options.direction,  # type: ignore[arg-type]
                                  conflict_policy=options.conflict_policy,  # type: ignore[arg-type]
                                  on_event=tracking_run_id(on_event), full=options.full,
                                  lease_wait=options.lease_wait, detection=DetectionPolicy.from_settings(settings),
                                  objects=options.objects,
                                  sweep=SweepPolicy.from_settings(settings),
                                  lease_ttl=dt.timedelta(seconds=settings.lease_ttl_seconds))
            finally:
                set_run_id(outside_runs)
        write_snapshot(warehouse, settings.warehouse_url)  # what status reads while a later run holds the file
        alert_after_run(settings, warehouse, result, where=settings.warehouse_url, secrets=api.transport.secrets)
    output.summary(result)
    return STATUS_EXIT.get(result.status, EXIT_COULD_NOT_RUN)


def _dry_run(warehouse: Any, api: Any, schema: Any, options: SyncOptions, output: Output, detection: Any) -> int:
    from truth_forge.core.reporting import ErrorReporter
    from truth_forge.sync.context import SyncContext
    from truth_forge.sync.plan import plan_sync, render_plan

    ctx = SyncContext(warehouse, api, schema, ErrorReporter("dry-run", api.transport.secrets),
                      options.conflict_policy, detection=detection)  # type: ignore[arg-type]
    plan = plan_sync(ctx, direction=options.direction, objects=options.objects)
    if output.as_json or output.log_format == "json":
        typer.echo(json.dumps({"dry_run": True, **plan.as_dict()}, indent=2 if output.as_json else None,
                              sort_keys=True, default=str))
    else:
        for line in render_plan(plan, options.conflict_policy):
            typer.echo(line)
    return EXIT_OK


def sync_command(
    ctx: typer.Context,
    direction: Annotated[str, typer.Option(
        metavar="DIRECTION", help="both | push (warehouse -> Twenty) | pull (Twenty -> warehouse)")] = "both",
    conflict_policy: Annotated[str, typer.Option(
        metavar="POLICY", help="Who wins a field edited on both sides: crm_wins | warehouse_wins")] = "crm_wins",
    select: Annotated[list[str] | None, typer.Option(
        "--select", metavar="OBJECT", help="Sync only this object: person | company (repeat for both; "
                                           "default: both).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as one JSON document.")] = False,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Read both sides and print the plan (creates, updates by field, deletions, "
                          "conflicts); write nothing.")] = False,
    create: Annotated[bool, typer.Option(
        "--create", help="Create the warehouse (DuckDB file or BigQuery dataset) if it does not exist.")] = False,
    every: Annotated[str | None, typer.Option(
        "--every", metavar="INTERVAL", help="Run again every INTERVAL (90s, 5m, 1h) until stopped; runs never "
                                            "overlap.")] = None,
    full: Annotated[bool, typer.Option(
        "--full", help="Compare every Twenty record (about N/200 requests): also finds records destroyed in "
                       "Twenty, drift and orphans.")] = False,
    wait_for_lease: Annotated[float, typer.Option(
        "--wait-for-lease", min=0, metavar="SECONDS", help="Seconds to wait while another writer (a `serve`, another sync) holds "
                                        "the warehouse.")] = 0.0,
    max_runs: Annotated[int | None, typer.Option("--max-runs", min=1, hidden=True)] = None,
    log_format: Annotated[str, typer.Option(
        "--log-format", metavar="FORMAT", help="auto (bars on a terminal, JSON lines otherwise) | text | json")] = "auto",
    quiet: Annotated[bool, typer.Option(
        "--quiet", "-q", help="Print nothing when all synced, one line when not (for cron).")] = False,
) -> None:
    """Run one sync: pull Twenty's edits, push the warehouse's changes, alert if errors stay open.

    \b
    Examples:
      truth-forge sync                      one run, bars on a terminal
      truth-forge sync --dry-run            the plan: creates, updates old -> new, rows that will fail
      truth-forge sync --select person      people only
      truth-forge sync --every 5m --quiet   a schedule; prints only when something failed
      truth-forge sync --log-format json    JSON lines for a log collector
    """
    from truth_forge.core.config import Settings
    from truth_forge.core.shutdown import interrupted, notice_ctrl_c, stop_on_sigterm
    from truth_forge.operations.schedule import check_interval, parse_interval, run_every

    if direction not in ("both", "push", "pull"):
        raise CommandFailed(f"--direction must be both, push or pull, not {direction!r}")
    if conflict_policy not in ("crm_wins", "warehouse_wins"):
        raise CommandFailed(f"--conflict-policy must be crm_wins or warehouse_wins, not {conflict_policy!r}")
    check_log_format(log_format, ("auto", *LOG_FORMATS))
    if dry_run and every:
        raise CommandFailed("--dry-run runs once; leave out --every")
    if dry_run and full:
        raise CommandFailed("--dry-run plans an incremental run; leave out --full")
    objects = _selected_objects(select)
    output = Output.choose(log_format, quiet, as_json)
    output.configure_logging(verbose=bool(ctx.obj and ctx.obj.get("verbose")))
    settings = Settings()
    options = SyncOptions(direction, conflict_policy, dry_run, create, full, wait_for_lease, objects)
    # A service manager's stop ends the run as cleanly as it can; Ctrl-C closes it as interrupted (shutdown.py).
    with stop_on_sigterm(), notice_ctrl_c():
        if every is None:
            try:
                code = _guarded(lambda: run_once(settings, options, output))
            except BaseException:
                if not interrupted():
                    raise
                log.info("Stopped by Ctrl-C: the run was closed as interrupted; the next run goes on from where it stopped")
                code = EXIT_INTERRUPTED
        else:
            interval = parse_interval(every)
            check_interval(interval, settings.twenty_requests_per_minute)
            code = run_every(interval, lambda: _scheduled(settings, options, output), max_runs=max_runs)
    raise typer.Exit(code)


def _selected_objects(select: list[str] | None) -> tuple[str, ...] | None:
    """`--select person --select company` or `--select person,company`, checked before anything is opened."""
    from truth_forge.sync.objects import selected

    if not select:
        return None
    names = tuple(dict.fromkeys(n.strip() for value in select for n in value.split(",") if n.strip()))
    try:
        selected(names)
    except ValueError as exc:
        raise CommandFailed(f"--select: {exc}") from None
    return names


def _guarded(run: Callable[[], int]) -> int:
    from truth_forge.operations.schedule import exclusive_run

    with exclusive_run():
        return run()


def _scheduled(settings: Any, options: SyncOptions, output: Output) -> int:
    """One run of a schedule: a run that cannot run is reported and the schedule goes on."""
    from truth_forge.core.shutdown import interrupted
    from truth_forge.operations.failures import explain

    try:
        return run_once(settings, options, output)
    except Exception as exc:
        explained = explain(exc)
        if explained is None or interrupted():  # Ctrl-C ends the schedule, not just this run
            raise
        log.error("This run could not run: %s", explained.message)
        return explained.exit_code
