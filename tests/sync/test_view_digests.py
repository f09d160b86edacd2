"""Push-only fields (kilobytes of JSON) are held in views, and so in the merge base, as digests: the
state stays small, a changed value is still seen, and a base an older truth-forge kept whole compares
equal, so an upgrade re-sends nothing."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from truth_forge.core.crm_schema import CrmSchema
from truth_forge.sync import mapping, views
from truth_forge.sync.merge import changed_since
from truth_forge.sync.objects import PERSON
from truth_forge.warehouse import open_warehouse
from truth_forge.warehouse.sample_data import generate_sample_data

SCHEMA = CrmSchema.load()


def test_push_only_fields_are_digests_that_still_tell_a_change(tmp_path: Path) -> None:
    with open_warehouse(f"duckdb:///{tmp_path / 'w.duckdb'}") as wh:
        generate_sample_data(wh, 3, 1, seed=2)
        [row] = wh.get_rows("person", [1])
    push_only = views.push_only_columns(PERSON, SCHEMA)
    view = views.warehouse_view(PERSON, SCHEMA, row)
    assert push_only and all(view[c].startswith(views.DIGEST) for c in push_only)
    assert len(json.dumps(view)) < len(json.dumps({c: row[c] for c in push_only})) + 2_000
    edited = views.warehouse_view(PERSON, SCHEMA, {**row, "llm_context": {"summary": "something new"}})
    assert set(changed_since(view, edited)) == {"llm_context"}


def sample_person(tmp_path: Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """A sample contact row, the body sent for it, and its view."""
    with open_warehouse(f"duckdb:///{tmp_path / 'w.duckdb'}") as wh:
        generate_sample_data(wh, 3, 1, seed=2)
        [row] = wh.get_rows("person", [2])
    return row, mapping.contact_to_person(row, SCHEMA, left_out=[]), views.warehouse_view(PERSON, SCHEMA, row)


def test_a_base_kept_whole_by_an_older_version_compares_equal(tmp_path: Path) -> None:
    _row, body, view = sample_person(tmp_path)
    # What the previous release stored: the values as sent.
    legacy = {**view, **{s.column: body.get(s.name) for s in SCHEMA.for_object("person") if s.sync == "push"}}
    assert changed_since(legacy, view)  # compared raw, every computed field would look changed
    assert changed_since(views.comparable_base(PERSON, SCHEMA, legacy), view) == {}


def test_a_base_with_the_longer_digests_of_an_older_version_compares_equal(tmp_path: Path) -> None:
    row, body, view = sample_person(tmp_path)
    push_only = views.push_only_columns(PERSON, SCHEMA)

    def long_digest(value: object) -> str:  # what the release before kept: the whole SHA-256
        text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
        return "digest:sha256:" + hashlib.sha256(text.encode()).hexdigest()

    older = {**view, **{s.column: long_digest(body.get(s.name)) for s in SCHEMA.for_object("person") if s.sync == "push"}}
    assert all(len(view[c]) < len(older[c]) for c in push_only)
    assert changed_since(views.comparable_base(PERSON, SCHEMA, older), view) == {}
    # ... and a value changed since is still seen as changed.
    edited = views.warehouse_view(PERSON, SCHEMA, {**row, "llm_context": {"summary": "something new"}})
    assert set(changed_since(views.comparable_base(PERSON, SCHEMA, older), edited)) == {"llm_context"}
