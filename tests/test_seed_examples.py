"""The seed document's Python examples, run as written against the sandbox.

The examples build their clients with no arguments, so the key and URL come from the environment,
exactly as a user's would.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.seed_examples import seed_example
from truth_forge.services.sync import TwentyCRMService


@pytest.fixture
def seed_env(sandbox_env: Any) -> Any:
    """The examples build their clients with no arguments: key and URL come from the environment."""
    return sandbox_env


def run_example(heading: str) -> dict[str, Any]:
    namespace: dict[str, Any] = {}
    exec(compile(seed_example(heading), f"<seed: {heading}>", "exec"), namespace)
    return namespace


def test_verify_setup_example_reports_incomplete_on_an_empty_workspace(seed_env: Any, capsys: Any) -> None:
    namespace = run_example("Step 3: Verify Setup")
    result = namespace["result"]
    assert result["all_complete"] is False
    assert "contactId" in result["person"]["missing"]
    assert "all_complete" in capsys.readouterr().out


def test_test_setup_example_passes_after_setup(seed_env: Any) -> None:
    with pytest.raises(AssertionError, match="Setup incomplete"):
        run_example("Test Setup")
    with TwentyCRMService() as service:
        service.setup_crm()
    run_example("Test Setup")


def test_direct_client_usage_example(seed_env: Any) -> None:
    with TwentyCRMService() as service:
        service.setup_crm()
    namespace = run_example("Direct Client Usage")
    assert namespace["new_contact"]["name"] == "John Doe"
    assert namespace["new_contact"]["email"] == "john@example.com"
    assert namespace["new_contact"]["customFields"]["contact_id"] == "12345"
    assert namespace["new_contact"]["customFields"]["subcategory_code"] == "B1_BEST_FRIENDS"
    assert namespace["contact"]["customFields"]["contact_id"] == "67890"
    assert namespace["contact"]["name"] == "Jane Doe"
    # The upsert matches on contactId: sending Jane again updates her instead of adding a second Jane.
    client_cls = namespace["TwentyCRMClient"]
    with client_cls() as client:
        again = client.upsert_contact({"name": "Jane Q Doe", "customFields": {"contact_id": "67890"}})
        assert again["id"] == namespace["contact"]["id"]
        assert [c["name"] for c in client.list_contacts(limit=10)].count("Jane Q Doe") == 1


def test_test_api_connection_example(seed_env: Any, capsys: Any) -> None:
    with TwentyCRMService() as service:
        service.setup_crm()
        for i in range(7):
            service.client.create_contact({"name": f"P {i}", "email": f"p{i}@example.com"})
    run_example("Test API Connection")
    assert "Found 5 contacts" in capsys.readouterr().out


def test_initialize_service_example(seed_env: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.setenv("TRUTH_FORGE_WAREHOUSE_URL", f"duckdb:///{tmp_path / 'seed.duckdb'}")
    with TwentyCRMService() as service:
        service.setup_crm()
        made = service.client.create_contact({"name": "Ada Lovelace", "email": "ada@example.com",
                                              "customFields": {"category_code": "b"}})
    namespace = run_example("Initialize Service")
    # The example's placeholder id names nobody: reported in sync_errors, not raised.
    # Its last line, sync_all_from_crm, then brought Ada into the warehouse.
    result = namespace["result"]
    assert result["status"] == "succeeded" and result["counts"]["pull_person"]["created"] == 1
    with TwentyCRMService() as service:
        single = service.sync_contact_from_crm("crm-contact-id")
        assert single["success"] is False and "no person" in single["sync_errors"][0]["error_message"]
        again = service.sync_contact_from_crm(made["id"])
        assert again["success"] is True and again["counts"]["unchanged"] == 1
        [row] = service.warehouse.get_rows("person", [again["contact_id"]])
        assert row["canonical_name"] == "Ada Lovelace" and row["category_code"] == "B"
