"""`truth-forge serve` and `truth-forge webhooks register|list|remove`: thin shells over
truth_forge/realtime/server.py and truth_forge/realtime/webhooks.py, registered by the project CLI."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

# What the commands need is imported when one runs: `truth-forge --help` loads neither pydantic nor httpx.
if TYPE_CHECKING:
    from truth_forge.core.config import Settings
    from truth_forge.twenty.client import TwentyClient

webhooks_app = typer.Typer(help="Manage the Twenty webhook that feeds `truth-forge serve`.", no_args_is_help=True)


def _fail(message: str, code: int = 2) -> NoReturn:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def serve_command(
    host: Annotated[str | None, typer.Option(help="Address to bind (default: serve_host, 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port to bind, 0 for any free one (default: serve_port).")] = None,
    sync_interval: Annotated[float | None, typer.Option(
        help="Minutes between scheduled syncs (default: serve_sync_interval_minutes; 10, 30 on BigQuery).")] = None,
    sync_on_start: Annotated[bool, typer.Option(help="Run a sync as soon as the writer lease is held.")] = True,
    log_format: Annotated[str, typer.Option(
        "--log-format", help="text | json (one JSON object a line on stderr, the writer's lines too)")] = "text",
) -> None:
    """Receive Twenty's webhooks on POST /webhooks/twenty and run the scheduled sync, until stopped."""
    import logging

    from truth_forge.operations.logs import check_log_format, use_json_logs

    check_log_format(log_format)
    if log_format == "json":
        use_json_logs()

    from truth_forge.core.config import get_settings
    from truth_forge.core.listen import bind_tcp
    from truth_forge.core.secrets import find_webhook_secret, resolve_api_key
    from truth_forge.realtime.inbox import Inbox
    from truth_forge.realtime.server import build_server, uvicorn_server
    from truth_forge.realtime.writer import ServeOptions, WriterSpec
    from truth_forge.sync.sweep import SweepPolicy
    from truth_forge.twenty.client import client_options
    from truth_forge.warehouse.detection import DetectionPolicy

    settings = get_settings()
    try:
        secret = find_webhook_secret(settings).value
        api_key = resolve_api_key(settings)
    except ValueError as exc:
        _fail(str(exc))
    minutes = sync_interval or settings.serve_sync_interval()
    options = ServeOptions(
        host=host or settings.serve_host, port=settings.serve_port if port is None else port,
        sync_interval=60 * minutes, sync_on_start=sync_on_start,
        tolerance_ms=settings.webhook_tolerance_seconds * 1000, max_body_bytes=settings.webhook_max_body_bytes,
        lease_ttl=dt.timedelta(seconds=settings.lease_ttl_seconds), detection=DetectionPolicy.from_settings(settings),
        sweep=SweepPolicy.from_settings(settings).per_run_of(minutes, explicit="sweep_max_requests" in settings.model_fields_set),
        batch_window=settings.serve_batch_window(), batch_size=settings.serve_batch_events(),
        fold_minutes=settings.serve_fold_minutes_or_default(),
        stall_seconds=2 * settings.twenty_request_deadline_seconds,
        console_token=settings.console_token.get_secret_value() if settings.console_token else None,
    )
    spec = WriterSpec(
        inbox_path=str(settings.serve_inbox_path), warehouse_url=settings.warehouse_url,
        warehouse_tables=dict(settings.warehouse_tables), twenty_base_url=settings.twenty_base_url, api_key=api_key,
        options=options, schema_file=settings.crm_schema_file, secrets=(secret,),
        client_options=client_options(settings),
        log_level=logging.getLogger().getEffectiveLevel(), log_format=log_format,
    )
    try:  # bound first: a port in use is a setting to change, found before anything is opened
        sock = bind_tcp(options.host, options.port)
    except OSError as exc:
        _fail(f"cannot listen on {options.host}:{options.port}: {exc.strerror or exc} "
              f"[choose another port with --port or TRUTH_FORGE_SERVE_PORT, or stop what holds it]")
    inbox = Inbox(settings.serve_inbox_path)
    app = build_server(secret=secret, inbox=inbox, spec=spec)
    sock.listen(2048)  # listening before the line below: a caller that reads it can connect at once
    bound = sock.getsockname()[1]
    typer.echo(f"truth-forge serve listening on http://{options.host}:{bound} (webhooks at /webhooks/twenty, console at /, metrics at /metrics)")
    try:
        uvicorn_server(app, own_logging=log_format != "json").run(sockets=[sock])
    finally:
        sock.close()
        inbox.close()


def _client(settings: Settings) -> TwentyClient:
    from truth_forge.twenty.client import TwentyClient

    try:
        return TwentyClient.from_settings(settings)
    except ValueError as exc:
        _fail(str(exc))


@webhooks_app.command("register")
def register_command(
    url: Annotated[str, typer.Option(help="Public HTTPS URL of serve's /webhooks/twenty (behind your proxy).")],
    new_secret: Annotated[bool, typer.Option(
        help="Make and store a new secret instead of reusing the stored one (webhooks made with the old one "
             "then fail verification: remove them).")] = False,
) -> None:
    """Create the webhook for person and company events in Twenty, signed with the stored secret."""
    from truth_forge.core.config import get_settings
    from truth_forge.core.secrets import find_webhook_secret, store_webhook_secret
    from truth_forge.realtime import webhooks
    from truth_forge.twenty.errors import TwentyError

    settings = get_settings()
    secret, where = None, ""
    if not new_secret:
        try:
            found = find_webhook_secret(settings)
            secret, where = found.value, f"reusing the secret from {found.source}"
        except ValueError:
            secret = None
    if secret is None:
        secret = webhooks.new_secret()
        where = f"new secret stored in {store_webhook_secret(secret, settings)}"
    with _client(settings) as client:
        try:
            hook = webhooks.register_webhook(client, url, secret)
        except TwentyError as exc:
            _fail(str(exc))
    typer.echo(f"webhook {hook.get('id')} -> {url} ({', '.join(webhooks.OPERATIONS)}); {where}")


@webhooks_app.command("list")
def list_command() -> None:
    """The workspace's webhooks (secrets are never printed)."""
    from truth_forge.core.config import get_settings
    from truth_forge.realtime import webhooks
    from truth_forge.twenty.errors import TwentyError

    with _client(get_settings()) as client:
        try:
            hooks = webhooks.list_webhooks(client)
        except TwentyError as exc:
            _fail(str(exc))
    for hook in hooks:
        typer.echo(f"{hook.get('id')}  {hook.get('targetUrl')}  {','.join(hook.get('operations') or [])}")
    if not hooks:
        typer.echo("no webhooks")


@webhooks_app.command("remove")
def remove_command(webhook_id: Annotated[str, typer.Argument(help="Id shown by `webhooks list`.")]) -> None:
    """Delete a webhook from Twenty."""
    from truth_forge.core.config import get_settings
    from truth_forge.realtime import webhooks
    from truth_forge.twenty.errors import TwentyError

    with _client(get_settings()) as client:
        try:
            webhooks.remove_webhook(client, webhook_id)
        except TwentyError as exc:
            _fail(str(exc))
    typer.echo(f"removed webhook {webhook_id}")
