"""Setting up and verifying truth-forge's custom fields, against the sandbox's metadata API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from truth_forge.cli.main import app
from truth_forge.core.crm_schema import BUILTIN_FIELDS, CrmSchema, FieldSpec, setup_schema, verify_schema
from truth_forge.twenty import TwentyClient

WRITE_METHODS = {"POST", "PATCH", "PUT", "DELETE"}
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def client(sandbox: Any) -> Any:
    with TwentyClient(sandbox.base_url, sandbox.api_key, requests_per_minute=100_000) as c:
        yield c


def metadata_writes(sandbox: Any) -> list[Any]:
    return [e for e in sandbox.request_log if e.method in WRITE_METHODS and e.path.startswith("/rest/metadata")]


def object_id(sandbox: Any, name: str) -> str:
    body = httpx.get(f"{sandbox.base_url}/rest/metadata/objects",
                     headers={"Authorization": f"Bearer {sandbox.api_key}"}).json()
    objects = body["data"] if isinstance(body["data"], list) else body["data"]["objects"]
    return next(o["id"] for o in objects if o["nameSingular"] == name)


def add_field(sandbox: Any, obj: str, **field: Any) -> None:
    response = httpx.post(f"{sandbox.base_url}/rest/metadata/fields",
                          headers={"Authorization": f"Bearer {sandbox.api_key}"},
                          json={"objectMetadataId": object_id(sandbox, obj), **field})
    assert response.status_code in (200, 201), response.text


def test_builtin_spec_has_the_seeds_17_fields_with_valid_names() -> None:
    schema = CrmSchema.load()
    assert len(schema.for_object("person")) == 10 and len(schema.for_object("company")) == 7
    assert schema.by_column("person")["contact_id"].name == "contactId"
    assert schema.by_column("company")["business_id"].is_unique
    assert [o.value for o in schema.by_name("person")["categoryCode"].options] == list("ABCDEFGH") + ["X"]


@pytest.mark.parametrize("bad_name", ["contact_id", "ContactId", "crm-id", "type", "address", "a" * 64])
def test_invalid_field_names_are_refused_before_any_request(bad_name: str) -> None:
    with pytest.raises(ValueError):
        FieldSpec(object="person", name=bad_name, column="x", type="TEXT", label="X")


def test_invalid_option_values_are_refused() -> None:
    with pytest.raises(ValueError, match="UPPER_SNAKE_CASE"):
        FieldSpec(object="person", name="tier", column="tier", type="SELECT", label="Tier",
                  options=[{"value": "gold", "label": "Gold"}])


def test_setup_on_an_empty_workspace_creates_exactly_the_17_fields(sandbox: Any, client: TwentyClient) -> None:
    report = setup_schema(client, CrmSchema.load())
    assert sorted(report["created"]) == sorted(f"{f.object}.{f.name}" for f in BUILTIN_FIELDS)
    assert len(report["created"]) == 17
    assert report["all_complete"] is True
    assert [e.method for e in metadata_writes(sandbox)] == ["POST"] * 17


def test_second_setup_makes_zero_write_requests(sandbox: Any, client: TwentyClient) -> None:
    setup_schema(client, CrmSchema.load())
    before = len(metadata_writes(sandbox))
    report = setup_schema(client, CrmSchema.load())
    assert report["created"] == [] and report["options_added"] == {}
    assert len(metadata_writes(sandbox)) == before
    assert sum(1 for e in sandbox.request_log if e.method in WRITE_METHODS) == before


def test_conflicting_field_is_reported_and_left_alone(sandbox: Any, client: TwentyClient) -> None:
    add_field(sandbox, "company", type="NUMBER", name="industry", label="Industry code")
    report = setup_schema(client, CrmSchema.load())
    assert report["all_complete"] is False
    assert report["company"]["missing"] == []
    [mismatch] = report["company"]["mismatched"]
    assert mismatch["field"] == "industry"
    assert mismatch["expected"]["type"] == "TEXT" and mismatch["found"]["type"] == "NUMBER"
    assert report["person"]["complete"] is True
    # Still a NUMBER: setup never retypes a user's field.
    fields = {f["name"]: f for f in client.metadata.get_object("company")["fields"]}
    assert fields["industry"]["type"] == "NUMBER"


def test_missing_select_options_are_added_to_an_existing_field(sandbox: Any, client: TwentyClient) -> None:
    add_field(sandbox, "person", type="SELECT", name="categoryCode", label="Category",
              options=[{"value": "A", "label": "A", "color": "red", "position": 0},
                       {"value": "B", "label": "Bee", "color": "blue", "position": 1}])
    before = verify_schema(client, CrmSchema.load())
    [mismatch] = before["person"]["mismatched"]
    assert mismatch["problems"] == ["missing options C, D, E, F, G, H, X"]
    report = setup_schema(client, CrmSchema.load())
    assert report["options_added"] == {"person.categoryCode": ["C", "D", "E", "F", "G", "H", "X"]}
    assert report["all_complete"] is True
    options = {f["name"]: f for f in client.metadata.get_object("person")["fields"]}["categoryCode"]["options"]
    assert {o["value"]: o["label"] for o in options}["B"] == "Bee"  # the user's label is kept


def test_a_non_unique_external_id_is_a_mismatch(sandbox: Any, client: TwentyClient) -> None:
    add_field(sandbox, "person", type="TEXT", name="contactId", label="Contact")
    report = verify_schema(client, CrmSchema.load())
    [mismatch] = report["person"]["mismatched"]
    assert mismatch["field"] == "contactId" and "not unique" in mismatch["problems"][0]


def test_users_extend_the_schema_through_a_config_file(sandbox: Any, client: TwentyClient, tmp_path: Path) -> None:
    extra = tmp_path / "fields.json"
    extra.write_text(json.dumps({"fields": [
        {"object": "person", "name": "favoriteColor", "column": "favorite_color", "type": "SELECT",
         "label": "Favorite color", "options": [{"value": "RED", "label": "Red"}]},
    ]}))
    report = setup_schema(client, CrmSchema.load(extra))
    assert "person.favoriteColor" in report["created"] and len(report["created"]) == 18


def test_a_broken_config_file_names_the_file_and_the_field(tmp_path: Path) -> None:
    extra = tmp_path / "fields.json"
    extra.write_text(json.dumps({"fields": [{"object": "person", "name": "bad_name", "column": "b",
                                             "type": "TEXT", "label": "B"}]}))
    with pytest.raises(ValueError, match=r"fields.json, field #1.*camelCase"):
        CrmSchema.load(extra)


def cli_env(sandbox: Any) -> dict[str, str]:
    return {"TWENTY_API_KEY": sandbox.api_key, "TWENTY_BASE_URL": sandbox.base_url,
            "TRUTH_FORGE_TWENTY_REQUESTS_PER_MINUTE": "100000"}


def test_cli_verify_and_setup_exit_codes(sandbox: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in cli_env(sandbox).items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("TWENTY_CRM_API_KEY", raising=False)
    runner = CliRunner()
    first = runner.invoke(app, ["verify", "--json"])
    assert first.exit_code == 1 and json.loads(first.stdout)["all_complete"] is False
    made = runner.invoke(app, ["setup"])
    assert made.exit_code == 0 and "complete" in made.stdout
    second = runner.invoke(app, ["verify"])
    assert second.exit_code == 0 and "person: 10 ok, 0 missing, 0 mismatched" in second.stdout


def test_setup_script_runs_as_the_seed_says(sandbox: Any) -> None:
    env = {**os.environ, **cli_env(sandbox)}
    env.pop("TWENTY_CRM_API_KEY", None)
    done = subprocess.run([sys.executable, "scripts/setup_twenty_crm.py"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "company: 7 ok, 0 missing, 0 mismatched" in done.stdout
