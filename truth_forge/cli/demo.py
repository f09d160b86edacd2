"""`truth-forge demo`: the whole loop on the embedded defaults, with nothing to sign up for.

Starts the bundled Twenty sandbox on a free loopback port, fills a DuckDB warehouse with sample
contacts, creates the custom fields, syncs, plays a person editing in the CRM, and syncs again,
printing what each step did and what it cost in API requests.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from truth_forge.core.config import Settings
from truth_forge.core.crm_schema import CrmSchema
from truth_forge.sandbox import SandboxConfig, SandboxServer
from truth_forge.services.sync import TwentyCRMClient, TwentyCRMService
from truth_forge.sync.runner import run_sync
from truth_forge.twenty.client import TwentyClient
from truth_forge.warehouse import open_warehouse
from truth_forge.warehouse.sample_data import generate_sample_data

DEMO_PERSON_TOKEN = "demo-person-token"  # a workspace member, not an API key
DEMO_KEY = "demo-sandbox-key"
# The demo writes this file first: a folder holding it is a previous demo's, whose files may be replaced.
MARKER = ".truth-forge-demo"
DEFAULT_WORKDIR = ".demo"
# Everything the demo may leave in its folder (DuckDB writes a .wal beside the file while it is open).
DEMO_FILES = (MARKER, "warehouse.duckdb", "warehouse.duckdb.wal", "warehouse.duckdb.status.json")


class DemoFolderInUse(Exception):
    """The folder given to the demo holds files the demo did not create."""


def prepare_workdir(workdir: Path) -> None:
    """Make `workdir` ready for a fresh demo without deleting anything the demo did not create.

    A missing or empty folder is used as it is; a previous demo's folder (it holds MARKER) loses only
    the demo's own files; any other folder with something in it is refused."""
    if workdir.exists() and not workdir.is_dir():
        raise DemoFolderInUse(f"--workdir {workdir} is a file, not a folder; give the demo a new or empty folder")
    workdir.mkdir(parents=True, exist_ok=True)
    present = {p.name for p in workdir.iterdir()}
    # The default folder as demos before the marker left it: only a warehouse file in `.demo`.
    left_by_an_older_demo = workdir.name == DEFAULT_WORKDIR and present <= set(DEMO_FILES)
    if present and MARKER not in present and not left_by_an_older_demo:
        raise DemoFolderInUse(
            f"--workdir {workdir} is not empty and was not made by `truth-forge demo` (no {MARKER} in it); "
            f"the demo deletes nothing it did not create: give it a new or empty folder")
    for name in DEMO_FILES:
        (workdir / name).unlink(missing_ok=True)
    (workdir / MARKER).write_text("Made by `truth-forge demo`; the next demo replaces this folder's demo files.\n")


def describe(counts: dict[str, Any]) -> str:
    """`{"push_person": {"upserted": 200, ...}, ...}` -> "push person: 200 upserted; ...; 9 requests"."""
    parts = []
    for name, value in counts.items():
        if isinstance(value, dict):
            nonzero = ", ".join(f"{n} {k}" for k, n in value.items() if n)
            if nonzero:
                parts.append(f"{name.replace('_', ' ')}: {nonzero}")
    parts.append(f"{counts.get('errors', 0)} errors, {counts.get('requests', 0)} API requests")
    return "; ".join(parts)


def run_demo(workdir: Path, *, contacts: int = 200, businesses: int = 30, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the demo in `workdir` (a new or empty folder, or a previous demo's); returns the figures it printed."""
    prepare_workdir(workdir)
    warehouse_url = f"duckdb:///{workdir / 'warehouse.duckdb'}"
    figures: dict[str, Any] = {}
    # Twenty's own limit (100 requests a minute per workspace) stays on: the demo lives within it.
    # A second credential plays a person using Twenty's app: Twenty stamps their edits with their
    # name, where truth-forge's own writes carry its API key's (and are not read back).
    with SandboxServer(SandboxConfig(api_keys=[DEMO_KEY], member_tokens={DEMO_PERSON_TOKEN: "Ada Lovelace"})) as sandbox:
        say(f"Twenty sandbox listening on {sandbox.base_url}")
        settings = Settings(twenty_base_url=sandbox.base_url, warehouse_url=warehouse_url)
        schema = CrmSchema.load(settings.crm_schema_file)
        with open_warehouse(settings) as warehouse, TwentyClient.from_settings(settings, api_key=DEMO_KEY) as api:
            warehouse.ensure_tables()
            report = generate_sample_data(warehouse, contacts, businesses, seed=42)
            say(f"Warehouse {warehouse_url}: {report.contacts} contacts, {report.businesses} businesses")

            service = TwentyCRMService(settings, client=TwentyCRMClient(settings, client=api, schema=schema),
                                       warehouse=warehouse)
            setup = service.setup_crm()
            say(f"Custom fields created in Twenty: {len(setup['created'])}; setup complete: {setup['all_complete']}")

            first = run_sync(warehouse, api, schema)
            say(f"First sync ({first.status}): {describe(first.counts)}")
            figures["first_sync"] = first.counts

            with TwentyClient(sandbox.base_url, DEMO_PERSON_TOKEN) as person_api:
                crm = TwentyCRMClient(settings, client=person_api, schema=schema)
                person = crm.list_contacts(limit=1)[0]
                crm.update_contact(person["id"], {"name": "Grace Hopper", "customFields": {"category_code": "A"}})
                crm.create_contact({"name": "Alan Turing", "email": "alan@example.org"})
            say(f"In Twenty, Ada renamed {person['name']!r} to 'Grace Hopper' and added Alan Turing")

            second = run_sync(warehouse, api, schema)
            say(f"Second sync ({second.status}): {describe(second.counts)}")
            figures["second_sync"] = second.counts
            [grace] = warehouse.get_rows("person", [int(person["customFields"]["contact_id"])])
            say(f"Warehouse now has contact {grace['contact_id']} as {grace['canonical_name']!r}, "
                f"category {grace['category_code']}")

            third = run_sync(warehouse, api, schema)
            say(f"Third sync ({third.status}), nothing changed: {describe(third.counts)}")
            figures["third_sync"] = third.counts
            figures["open_errors"] = len(warehouse.open_errors())
            say(f"Open sync errors: {figures['open_errors']}; Twenty requests in all: {sandbox.request_count()}")
    return figures
