"""Command functions of the warehouse, for `truth_forge.cli.main` to register with Typer.

Why it exists: `truth-forge init` creates a warehouse (the only commands that create one are this,
`sync --create` and `sample-data`, so a typo in a URL is refused rather than started afresh);
`truth-forge sample-data --contacts N --businesses M` fills one for demos and benchmarks. The
commands live beside the code they drive so cli/main.py only wires them up:
    app.command("sample-data")(sample_data_command)
"""

from __future__ import annotations

from typing import Annotated

import typer


def sample_data_command(
    contacts: Annotated[int, typer.Option("--contacts", min=0, help="Contacts to generate (ids 1..N)")],
    businesses: Annotated[int, typer.Option("--businesses", min=0, help="Businesses to generate (ids 1..M)")],
    seed: Annotated[int, typer.Option("--seed", min=0, help="Same seed, same data, on every engine")] = 42,
    warehouse_url: Annotated[
        str | None,
        typer.Option("--warehouse-url", metavar="URL",
                     help="Default: TRUTH_FORGE_WAREHOUSE_URL (duckdb:///truth_forge.duckdb)"),
    ] = None,
    replace: Annotated[
        bool, typer.Option("--replace", help="Empty the contact and business tables first (never the sync state)")
    ] = False,
) -> None:
    """Fill the warehouse with realistic synthetic contacts and businesses, generated in the engine.

    Creates the warehouse if it does not exist (sample data is for a new one)."""
    from truth_forge.warehouse.factory import open_warehouse  # imported when run: `--help` loads no engine
    from truth_forge.warehouse.sample_data import generate_sample_data

    with open_warehouse(warehouse_url) as warehouse:
        report = generate_sample_data(warehouse, contacts, businesses, seed, replace=replace)
    typer.echo(
        f"wrote {report.contacts} contacts ({report.identifiers} emails/phones, {report.links} business links) "
        f"and {report.businesses} businesses in {report.seconds:.2f} s"
    )


def init_command(
    warehouse_url: Annotated[
        str | None,
        typer.Option("--warehouse-url", metavar="URL",
                     help="Default: TRUTH_FORGE_WAREHOUSE_URL (duckdb:///truth_forge.duckdb)"),
    ] = None,
) -> None:
    """Create the warehouse (a DuckDB file or a BigQuery dataset) and its tables; harmless if they exist.

    \b
    Examples:
      truth-forge init
      truth-forge init --warehouse-url duckdb:///contacts.duckdb
      truth-forge init --warehouse-url bigquery://my-project/crm
    """
    from truth_forge.core.config import get_settings
    from truth_forge.warehouse.factory import open_warehouse  # imported when run: `--help` loads no engine

    url = warehouse_url or get_settings().warehouse_url
    with open_warehouse(warehouse_url, create=True) as warehouse:
        warehouse.ensure_tables()
        contacts = warehouse.count_rows("contacts")
    typer.echo(f"warehouse ready: {url} ({contacts} contacts)")
