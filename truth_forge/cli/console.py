"""`truth-forge console`: the read-only web console alone, against the configured warehouse.

A thin shell over truth_forge/realtime/console_app.py. It never holds a DuckDB writer: each page
opens the file read-only for the time of one read (or shows the snapshot of the process writing
it), so it can run beside `sync` and `serve`. It refuses to listen beyond loopback without a token.
"""

from __future__ import annotations

from typing import Annotated

import typer


def console_command(
    host: Annotated[str, typer.Option(help="Address to bind; beyond loopback a token is required "
                                            "(TRUTH_FORGE_CONSOLE_TOKEN).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to bind, 0 for any free one.")] = 8788,
    warehouse_url: Annotated[str | None, typer.Option(
        "--warehouse-url", help="Warehouse to read (default: TRUTH_FORGE_WAREHOUSE_URL).")] = None,
) -> None:
    """Serve the console (last runs, the request budget, open errors and conflicts, a record lookup) until stopped."""
    import uvicorn

    from truth_forge.core.config import get_settings
    from truth_forge.core.listen import bind_tcp
    from truth_forge.operations.console_reads import ConsoleReads
    from truth_forge.realtime.console_app import TOKEN_SETTING, Console, ConsoleAccess
    from truth_forge.warehouse import open_warehouse

    settings = get_settings()
    url = warehouse_url or settings.warehouse_url
    token = settings.console_token.get_secret_value() if settings.console_token else None
    access = ConsoleAccess(host, token)
    if access.token_required and not token:
        typer.secho(f"error: {host} is beyond loopback: set {TOKEN_SETTING} so that only those who have it can read "
                    f"the console (or bind 127.0.0.1)", fg=typer.colors.RED, err=True)
        raise typer.Exit(2)
    tables = dict(settings.warehouse_tables)
    reads = ConsoleReads(url, open_for_reading=lambda: open_warehouse(url, tables=tables, create=False, read_only=True))
    console = Console(reads, access, float(settings.twenty_requests_per_minute))
    try:
        sock = bind_tcp(host, port)
    except OSError as exc:
        typer.secho(f"error: cannot listen on {host}:{port}: {exc.strerror or exc} [choose another port with --port]",
                    fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None
    sock.listen(128)
    typer.echo(f"truth-forge console listening on http://{host}:{sock.getsockname()[1]} (reading {url})")
    config = uvicorn.Config(console.app(), log_level="warning", access_log=False, http="h11", loop="asyncio",
                            lifespan="off", proxy_headers=False)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
