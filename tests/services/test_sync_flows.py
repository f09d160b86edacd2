"""The seed's sync services run as its flow describes, against the sandbox and a DuckDB file.

"CRM -> BigQuery -> All" and "BigQuery -> CRM", with a second target plugged in through a real
entry point: a `*.dist-info` folder on sys.path that importlib.metadata discovers like any
installed package's.
"""

from __future__ import annotations

import importlib.metadata
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.sync.test_sync_sandbox import crm, person_by_key
from truth_forge.core.config import Settings
from truth_forge.services.sync import BigQuerySyncService, CRMTwentySyncService
from truth_forge.warehouse import open_warehouse
from truth_forge.warehouse.sample_data import generate_sample_data


@pytest.fixture
def recorder_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Install the recording target as a plug-in: an entry point in the group truth-forge reads."""
    dist = tmp_path / "site" / "truth_forge_test_recorder-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: truth-forge-test-recorder\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[truth_forge.sync_targets]\nrecorder = tests.services.recording_target:make_target\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    received = tmp_path / "received.jsonl"
    monkeypatch.setenv("TRUTH_FORGE_TEST_RECORDER_FILE", str(received))
    assert any(ep.name == "recorder" for ep in importlib.metadata.entry_points(group="truth_forge.sync_targets"))
    return received


@pytest.fixture
def settings(sandbox: Any, tmp_path: Path) -> Iterator[Settings]:
    url = f"duckdb:///{tmp_path / 'flows.duckdb'}"
    with open_warehouse(url) as wh:
        wh.ensure_tables()
        generate_sample_data(wh, 10, 2, seed=4)
    yield Settings(twenty_base_url=sandbox.base_url, warehouse_url=url, twenty_requests_per_minute=100_000,
                   sync_targets=["recorder"])


def received(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_bigquery_to_crm_then_one_contact_to_all_targets_twenty_first(
        sandbox: Any, settings: Settings, recorder_plugin: Path) -> None:
    with BigQuerySyncService(settings, api_key=sandbox.api_key) as service:
        service.setup_crm()
        first = service._sync_to_crm_twenty()
        assert first["status"] == "succeeded" and first["counts"]["push_person"]["upserted"] == 10
        assert first["sync_errors"] == []
        service.warehouse.upsert_contacts([{"contact_id": 3, "canonical_name": "Ada Changed", "category_code": "B"}])
        sandbox.clear_request_log()
        result = service.sync_contact_to_all(3)
        assert result["success"], result["sync_errors"]
        assert result["targets"]["twenty"]["upserted"] == 1 and result["targets"]["recorder"] == {"written": 1}
        # Twenty first: its write is in the sandbox's log before the recorder was called (the file exists after).
        assert any(e.method == "POST" and e.path == "/rest/batch/people" for e in sandbox.request_log)
        assert person_by_key(service.client.api, 3)["name"] == {"firstName": "Ada", "lastName": "Changed"}
        assert received(recorder_plugin) == [{"contact_id": 3, "name": "Ada Changed"}]
        # Nothing new for Twenty: not one request; the recorder still gets the contact.
        sandbox.clear_request_log()
        again = service.sync_contact_to_all(3)
        assert again["targets"]["twenty"]["upserted"] == 0 and sandbox.request_log == []
        assert len(received(recorder_plugin)) == 2


def test_a_failing_target_is_reported_and_does_not_stop_twenty(
        sandbox: Any, settings: Settings, recorder_plugin: Path) -> None:
    with BigQuerySyncService(settings, api_key=sandbox.api_key) as service:
        service.setup_crm()
        service._sync_to_crm_twenty()
        service.warehouse.upsert_contacts([{"contact_id": 5, "category_code": "X"}])
        result = service.sync_contact_to_all(5)
        assert result["success"] is False and result["targets"]["twenty"]["upserted"] == 1
        [error] = result["sync_errors"]
        assert error["operation"] == "target:recorder" and "refuses uncategorised contact 5" in error["error_message"]
        assert person_by_key(service.client.api, 5)["categoryCode"] == "X"
        assert [e["operation"] for e in service.warehouse.open_errors()] == ["target:recorder"]


def test_crm_to_bigquery_to_all(sandbox: Any, settings: Settings, recorder_plugin: Path) -> None:
    with BigQuerySyncService(settings, api_key=sandbox.api_key) as outward, \
            CRMTwentySyncService(settings, api_key=sandbox.api_key, propagate_to=outward) as inward:
        inward.setup_crm()
        outward._sync_to_crm_twenty()
        with crm(sandbox) as http:
            http.patch(f"/rest/people/{person_by_key(inward.client.api, 7)['id']}",
                       json={"name": {"firstName": "Edited", "lastName": "InTwenty"}}).raise_for_status()
        sandbox.clear_request_log()
        result = inward.sync_from_crm_to_bigquery()
        assert result["status"] == "succeeded" and result["counts"]["pull_person"]["updated"] == 1
        assert result["contacts_changed"] == [7] and result["sync_errors"] == []
        assert inward.warehouse.get_rows("person", [7])[0]["canonical_name"] == "Edited InTwenty"
        # On to every other target; Twenty, where the change came from, is not written again.
        assert result["propagated"][7]["recorder"] == {"written": 1}
        assert result["propagated"][7]["twenty"]["upserted"] == 0
        assert not [e for e in sandbox.request_log if e.method != "GET"]
        assert received(recorder_plugin) == [{"contact_id": 7, "name": "Edited InTwenty"}]


def test_an_unknown_target_name_says_where_targets_come_from(sandbox: Any, settings: Settings) -> None:
    with BigQuerySyncService(settings.model_copy(update={"sync_targets": ["nowhere"]}),
                             api_key=sandbox.api_key) as service:
        with pytest.raises(ValueError, match="TRUTH_FORGE_SYNC_TARGETS names \\['nowhere'\\].*truth_forge.sync_targets"):
            _ = service.targets
