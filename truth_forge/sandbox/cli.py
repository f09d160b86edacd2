"""`truth-forge sandbox`: run a local Twenty-compatible API for trying truth-forge out.

A plain function with Typer annotations, so the project CLI can register it as a command and
`python -m truth_forge.sandbox` can run it on its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from truth_forge.sandbox.config import DEFAULT_API_KEY, SandboxConfig
from truth_forge.sandbox.profiles import DEFAULT_PROFILE, PROFILES


def sandbox_command(
    port: Annotated[int, typer.Option(help="Port to listen on (0 = any free port).")] = 3000,
    host: Annotated[str, typer.Option(help="Loopback address to bind.")] = "127.0.0.1",
    api_key: Annotated[list[str], typer.Option(
        "--api-key", help="Accepted Bearer API key (repeat for several).")] = [DEFAULT_API_KEY],  # noqa: B006 (typer copies it)
    db: Annotated[Path | None, typer.Option(
        help="SQLite file that keeps the workspace across restarts (default: in memory).")] = None,
    rate_limit: Annotated[int, typer.Option(
        help="Requests per minute per workspace (0 disables the limit).")] = 100,
    rate_limit_burst: Annotated[int | None, typer.Option(
        help="Token bucket size (default: same as --rate-limit).")] = None,
    short_rate_limit: Annotated[int, typer.Option(
        help="Twenty's short bucket, checked first: requests per second per workspace "
        "(API_RATE_LIMITING_SHORT_LIMIT, default 100; 0 switches it off).")] = 100,
    rate_limit_v2: Annotated[bool, typer.Option(
        help="Answer 429 in the 'rate limits v2' style (Retry-After, X-RateLimit-*).")] = False,
    docs_batch_limit: Annotated[bool, typer.Option(
        help="Reject batches above 60 records (the documented limit) instead of 200.")] = False,
    legacy_metadata: Annotated[bool, typer.Option(
        help="Answer the metadata API in the legacy envelope format.")] = False,
    twenty_version: Annotated[str, typer.Option(
        help="Which Twenty rules to follow: " + ", ".join(PROFILES)
        + f" (default {DEFAULT_PROFILE}, the strictest).")] = DEFAULT_PROFILE,
    max_request_line: Annotated[int | None, typer.Option(
        help="Play a proxy in front of Twenty: refuse request lines longer than this many bytes with "
        "414 (nginx's default is 8192). Without it only Node's 16 KiB header limit applies (431).")] = None,
    member_token: Annotated[list[str], typer.Option(
        "--member-token", help="TOKEN=First Last: a Bearer token that acts as a logged-in "
        "workspace member (updatedBy source MANUAL, not rate-limited); repeat for several.")] = [],  # noqa: B006
) -> None:
    """Start a local Twenty-compatible API server and print how to point truth-forge at it."""
    try:
        members = dict(_member(item) for item in member_token)
        config = SandboxConfig(
            api_keys=list(api_key) or [DEFAULT_API_KEY], host=host, port=port,
            db_path=str(db) if db else None,
            rate_limit_per_minute=rate_limit or None, rate_limit_burst=rate_limit_burst,
            rate_limit_short_limit=short_rate_limit or None,
            rate_limit_style="v2" if rate_limit_v2 else "legacy",
            enforce_docs_batch_limit=docs_batch_limit,
            metadata_format="legacy" if legacy_metadata else "new",
            twenty_version=twenty_version, member_tokens=members, max_request_line=max_request_line,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    url_host = f"[{host}]" if ":" in host else host
    message = "\n".join([
        f"Twenty sandbox listening on http://{url_host}:{{port}}"
        + (f" (data in {db})" if db else " (in memory)") + f", rules: {twenty_version}"
        + (f", request lines over {max_request_line} bytes refused (414)" if max_request_line else ""),
        f"export TWENTY_BASE_URL=http://{url_host}:{{port}}",
        f"export TWENTY_API_KEY={config.api_keys[0]}",
        # truth-forge keeps to its own request budget too (100 a minute by default, as Twenty allows):
        # say the one that matches this server, or a faster sandbox is still synced at Twenty's pace.
        f"export TRUTH_FORGE_TWENTY_REQUESTS_PER_MINUTE={rate_limit or 100000}"
        + ("" if rate_limit else "  # this sandbox has no limit"),
    ])
    from truth_forge.sandbox.server import serve_forever  # the server's imports only when one starts

    serve_forever(config, ready_message=message)


def _member(item: str) -> tuple[str, str]:
    token, sep, name = item.partition("=")
    if not sep or not token or not name.strip():
        raise ValueError(f"--member-token takes TOKEN=First Last, not {item!r}")
    return token, name.strip()


def main() -> None:
    typer.run(sandbox_command)
