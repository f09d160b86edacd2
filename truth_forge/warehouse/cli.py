"""Command functions of the warehouse, for `truth_forge.cli` to register with Typer.

Why it exists: `truth-forge sample-data --contacts N --businesses M` fills a warehouse for demos
and benchmarks; the command lives beside the code it drives so cli.py only wires it up:
    app.command("sample-data")(sample_data_command)
"""

from __future__ import annotations

from typing import Annotated

import typer

from truth_forge.warehouse.errors import WarehouseError
from truth_forge.warehouse.factory import open_warehouse
from truth_forge.warehouse.sample_data import generate_sample_data


def sample_data_command(
    contacts: Annotated[int, typer.Option("--contacts", min=0, help="Contacts to generate (ids 1..N)")],
    businesses: Annotated[int, typer.Option("--businesses", min=0, help="Businesses to generate (ids 1..M)")],
    seed: Annotated[int, typer.Option("--seed", min=0, help="Same seed, same data, on every engine")] = 42,
    warehouse_url: Annotated[
        str | None,
        typer.Option("--warehouse-url", help="Default: TRUTH_FORGE_WAREHOUSE_URL (duckdb:///truth_forge.duckdb)"),
    ] = None,
    replace: Annotated[
        bool, typer.Option("--replace", help="Empty the contact and business tables first (never the sync state)")
    ] = False,
) -> None:
    """Fill the warehouse with realistic synthetic contacts and businesses, generated in the engine."""
    try:
        with open_warehouse(warehouse_url) as warehouse:
            report = generate_sample_data(warehouse, contacts, businesses, seed, replace=replace)
    except WarehouseError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=1) from exc
    typer.echo(
        f"wrote {report.contacts} contacts ({report.identifiers} emails/phones, {report.links} business links) "
        f"and {report.businesses} businesses in {report.seconds:.2f} s"
    )
