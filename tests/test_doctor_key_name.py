"""`doctor`'s "api key name" check: is our key's name ours alone, and can the key even tell?"""

from __future__ import annotations

import base64
import json

from tests.test_doctor import doctor, settings_for, status_of
from truth_forge.operations.doctor import run_doctor
from truth_forge.sandbox import SandboxConfig, SandboxServer
from truth_forge.sandbox.actors import Credential
from truth_forge.sandbox.apikeys import key_id
from truth_forge.sandbox.config import DEFAULT_WORKSPACE_ID


def jwt_for(key: str) -> str:
    """A token shaped like Twenty's API keys: a JWT whose `jti` is the key's id (signature unchecked here)."""
    payload = json.dumps({"sub": DEFAULT_WORKSPACE_ID, "type": "API_KEY", "jti": key}).encode()
    return "eyJhbGciOiJIUzI1NiJ9." + base64.urlsafe_b64encode(payload).decode().rstrip("=") + ".c2lnbmF0dXJl"


def default_key_token(name: str) -> str:
    """The token of the sandbox's default key, carrying that key's id."""
    probe = SandboxConfig(api_key_name=name)
    return jwt_for(key_id(probe, Credential(probe.api_keys[0], "api_key", name)))


def finding(report: object, check: str) -> str:
    found = report.finding(check)  # type: ignore[attr-defined]
    assert found is not None
    return str(found.found)


def test_read_only_doctor_finds_our_key_by_its_token_and_warns_of_a_namesake() -> None:
    token = default_key_token("sync")
    config = SandboxConfig(api_keys=[token], api_key_name="sync", named_api_keys={"other-key": "sync"},
                           rate_limit_per_minute=None)
    with SandboxServer(config) as sandbox:
        report = run_doctor(settings_for(sandbox.base_url), api_key=token)
    assert status_of(report, "api key name") == "WARN"
    assert "2 API keys in this workspace are named 'sync'" in finding(report, "api key name")


def test_a_name_ours_alone_is_ok(sandbox: SandboxServer) -> None:
    report = doctor(sandbox)
    assert status_of(report, "api key name") == "OK"


def test_a_key_that_may_not_list_keys_is_told_in_plain_words() -> None:
    config = SandboxConfig(api_keys=["limited-key"], api_keys_without_settings_permission=["limited-key"],
                           rate_limit_per_minute=None)
    with SandboxServer(config) as sandbox:
        report = run_doctor(settings_for(sandbox.base_url), api_key="limited-key")
    assert status_of(report, "api key name") == "WARN"
    said = finding(report, "api key name")
    assert "Twenty refused to list the workspace's API keys (HTTP 403" in said
    assert "'API keys and webhooks' permission" in said


def test_the_write_probe_learns_our_name_and_finds_the_namesake() -> None:
    config = SandboxConfig(api_keys=["probing-key"], api_key_name="sync", named_api_keys={"other-key": "sync"},
                           rate_limit_per_minute=None)
    with SandboxServer(config) as sandbox:
        report = run_doctor(settings_for(sandbox.base_url), api_key="probing-key", probe_writes=True)
    assert status_of(report, "api key name") == "WARN"
    assert "named 'sync'" in finding(report, "api key name")
