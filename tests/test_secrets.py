"""Tests for truth_forge.core.secrets: lookup order, fallbacks, failure modes and secret hygiene.

Secret Manager is the real official client talking gRPC to the in-process fake from
tests/fixtures/secret_manager.py, so status mapping, retry and deadlines behave as in production.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.fixtures.secret_manager import FakeSecretManager
from truth_forge.core.config import Settings
from truth_forge.core.secrets import (
    ENV_VARS,
    SECRET_NAMES,
    ResolvedApiKey,
    find_api_key,
    redact,
    resolve_api_key,
)

PROJECT = "proj-1"
NAMES = ["twenty-crm-api-key", "twenty_api_key", "TWENTY_CRM_API_KEY", "twenty-api-key"]


def version(name: str, project: str = PROJECT) -> str:
    return f"projects/{project}/secrets/{name}/versions/latest"


ALL_CALLS = [version(n) for n in NAMES]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No key or project leaks in from the developer's shell or a .env file in the checkout."""
    for var in (
        "TWENTY_CRM_API_KEY",
        "TWENTY_API_KEY",
        "TRUTH_FORGE_GCP_PROJECT_ID",
        "GOOGLE_CLOUD_PROJECT",
        "GCP_PROJECT",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)


def settings(project: str | None = PROJECT) -> Settings:
    return Settings(gcp_project_id=project, _env_file=None)


class RecordingClient:
    """Wraps a real client and counts access_secret_version calls (a dead port has no fake to ask)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: list[str] = []

    def access_secret_version(self, *, name: str, **kwargs: Any) -> Any:
        self.calls.append(name)
        return self.inner.access_secret_version(name=name, **kwargs)


def test_names_and_env_vars_are_the_documented_ones() -> None:
    assert list(SECRET_NAMES) == NAMES
    assert list(ENV_VARS) == ["TWENTY_CRM_API_KEY", "TWENTY_API_KEY"]


# --- the order, step by step ------------------------------------------------------------------


def test_first_name_wins_over_all_later_names(
    fake_secret_manager: FakeSecretManager, secret_manager_client: Any
) -> None:
    for i, name in enumerate(NAMES):
        fake_secret_manager.put(PROJECT, name, f"key-{i}")

    found = find_api_key(settings(), secret_client=secret_manager_client)

    assert found.value == "key-0"
    assert found.source == f"Secret Manager secret twenty-crm-api-key in project {PROJECT}"
    assert fake_secret_manager.calls == ALL_CALLS[:1]


@pytest.mark.parametrize("index", [1, 2, 3])
def test_each_later_name_is_used_when_the_earlier_ones_are_missing(
    index: int, fake_secret_manager: FakeSecretManager, secret_manager_client: Any
) -> None:
    # Present: this name and every later one; the earlier ones are missing.
    for i in range(index, len(NAMES)):
        fake_secret_manager.put(PROJECT, NAMES[i], f"key-{i}")

    found = find_api_key(settings(), secret_client=secret_manager_client)

    assert found.value == f"key-{index}"
    assert found.source == f"Secret Manager secret {NAMES[index]} in project {PROJECT}"
    assert fake_secret_manager.calls == ALL_CALLS[: index + 1]


def test_secret_manager_beats_environment(
    monkeypatch: pytest.MonkeyPatch, fake_secret_manager: FakeSecretManager, secret_manager_client: Any
) -> None:
    monkeypatch.setenv("TWENTY_CRM_API_KEY", "env-crm")
    monkeypatch.setenv("TWENTY_API_KEY", "env-plain")
    fake_secret_manager.put(PROJECT, "twenty-api-key", "from-sm")

    assert resolve_api_key(settings(), secret_client=secret_manager_client) == "from-sm"


def test_env_twenty_crm_api_key_when_no_secret_exists(
    monkeypatch: pytest.MonkeyPatch, fake_secret_manager: FakeSecretManager, secret_manager_client: Any
) -> None:
    monkeypatch.setenv("TWENTY_CRM_API_KEY", "env-crm")

    found = find_api_key(settings(), secret_client=secret_manager_client)

    assert found == ResolvedApiKey(value="env-crm", source="environment variable TWENTY_CRM_API_KEY")
    assert fake_secret_manager.calls == ALL_CALLS  # every name was asked, in order, exactly once


def test_env_twenty_api_key_is_the_last_resort(
    monkeypatch: pytest.MonkeyPatch, fake_secret_manager: FakeSecretManager, secret_manager_client: Any
) -> None:
    monkeypatch.setenv("TWENTY_API_KEY", "env-plain")

    found = find_api_key(settings(), secret_client=secret_manager_client)

    assert found == ResolvedApiKey(value="env-plain", source="environment variable TWENTY_API_KEY")
    assert fake_secret_manager.calls == ALL_CALLS


def test_twenty_crm_api_key_beats_twenty_api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWENTY_CRM_API_KEY", "env-crm")
    monkeypatch.setenv("TWENTY_API_KEY", "env-plain")

    assert resolve_api_key(settings(project=None)) == "env-crm"


def test_values_are_stripped_and_empty_counts_as_missing(
    monkeypatch: pytest.MonkeyPatch, fake_secret_manager: FakeSecretManager, secret_manager_client: Any
) -> None:
    fake_secret_manager.put(PROJECT, "twenty-crm-api-key", "  \n")  # blank: skipped
    fake_secret_manager.put(PROJECT, "twenty_api_key", " real-key\n")
    monkeypatch.setenv("TWENTY_CRM_API_KEY", "env-crm")

    assert resolve_api_key(settings(), secret_client=secret_manager_client) == "real-key"
    assert fake_secret_manager.calls == ALL_CALLS[:2]


def test_blank_env_var_counts_as_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWENTY_CRM_API_KEY", "   ")
    monkeypatch.setenv("TWENTY_API_KEY", " env-plain ")

    found = find_api_key(settings(project=None))

    assert found == ResolvedApiKey(value="env-plain", source="environment variable TWENTY_API_KEY")


def test_project_comes_from_environment_when_settings_not_given(
    monkeypatch: pytest.MonkeyPatch, fake_secret_manager: FakeSecretManager, secret_manager_client: Any
) -> None:
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "other-proj")
    fake_secret_manager.put("other-proj", "TWENTY_CRM_API_KEY", "k")

    assert resolve_api_key(secret_client=secret_manager_client) == "k"
    assert fake_secret_manager.calls == [version(n, "other-proj") for n in NAMES[:3]]


# --- per-secret failures move on; service-wide failures stop -----------------------------------


@pytest.mark.parametrize(
    "code", [grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.FAILED_PRECONDITION]
)
def test_per_secret_errors_move_on_to_the_next_name(
    code: grpc.StatusCode, fake_secret_manager: FakeSecretManager, secret_manager_client: Any
) -> None:
    fake_secret_manager.fail(PROJECT, "twenty-crm-api-key", code)
    fake_secret_manager.put(PROJECT, "twenty_api_key", "second")

    assert resolve_api_key(settings(), secret_client=secret_manager_client) == "second"
    assert fake_secret_manager.calls == ALL_CALLS[:2]


def test_corrupted_payload_is_rejected(
    fake_secret_manager: FakeSecretManager, secret_manager_client: Any
) -> None:
    fake_secret_manager.put(PROJECT, "twenty-crm-api-key", "garbled")
    fake_secret_manager.corrupt_crc(PROJECT, "twenty-crm-api-key")
    fake_secret_manager.put(PROJECT, "twenty_api_key", "good")

    assert resolve_api_key(settings(), secret_client=secret_manager_client) == "good"


@pytest.mark.parametrize(
    "code", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAUTHENTICATED]
)
@pytest.mark.timeout(20)  # a regression to the client's 60 s retry must fail, not stall
def test_service_wide_error_stops_after_one_call_without_retrying(
    code: grpc.StatusCode,
    monkeypatch: pytest.MonkeyPatch,
    fake_secret_manager: FakeSecretManager,
    secret_manager_client: Any,
) -> None:
    monkeypatch.setenv("TWENTY_API_KEY", "env-plain")
    fake_secret_manager.fail(PROJECT, "twenty-crm-api-key", code)
    fake_secret_manager.put(PROJECT, "twenty_api_key", "never-read")

    started = time.monotonic()
    found = find_api_key(settings(), secret_client=secret_manager_client)

    assert found.source == "environment variable TWENTY_API_KEY"
    # One call: the client's default 60 s UNAVAILABLE retry is off, and no further names are tried.
    assert fake_secret_manager.calls == ALL_CALLS[:1]
    assert time.monotonic() - started < 2


@pytest.mark.timeout(20)  # a regression to the client's 60 s retry must fail, not stall
def test_dead_port_falls_back_to_env_quickly(
    monkeypatch: pytest.MonkeyPatch, dead_secret_manager_client: Any
) -> None:
    monkeypatch.setenv("TWENTY_CRM_API_KEY", "env-crm")
    client = RecordingClient(dead_secret_manager_client)

    started = time.monotonic()
    found = find_api_key(settings(), secret_client=client)
    elapsed = time.monotonic() - started

    assert found.source == "environment variable TWENTY_CRM_API_KEY"
    assert client.calls == ALL_CALLS[:1]
    assert elapsed < 3


@pytest.mark.timeout(20)  # a regression to the client's 60 s retry must fail, not stall
def test_dead_port_error_lists_unavailable_and_skipped_names(dead_secret_manager_client: Any) -> None:
    with pytest.raises(ValueError) as info:
        resolve_api_key(settings(), secret_client=dead_secret_manager_client)

    lines = str(info.value).splitlines()
    assert f"Secret Manager secret twenty-crm-api-key in project {PROJECT}: ServiceUnavailable" in lines[1]
    for name, line in zip(NAMES[1:], lines[2:5]):
        assert line.startswith(f"  - Secret Manager secret {name} in project {PROJECT}: not tried")


@pytest.mark.timeout(20)  # a regression to the client's 60 s retry must fail, not stall
def test_deadline_is_short_and_stops_further_names(
    monkeypatch: pytest.MonkeyPatch, fake_secret_manager: FakeSecretManager, secret_manager_client: Any
) -> None:
    monkeypatch.setenv("TWENTY_API_KEY", "env-plain")
    fake_secret_manager.stall(PROJECT, "twenty-crm-api-key")

    started = time.monotonic()
    found = find_api_key(settings(), secret_client=secret_manager_client, timeout=0.3)
    elapsed = time.monotonic() - started

    assert found.source == "environment variable TWENTY_API_KEY"
    assert fake_secret_manager.calls == ALL_CALLS[:1]
    assert elapsed < 3


# --- no project, no credentials, lazily built client ------------------------------------------


def _forbid_gcp(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make any attempt to build a client or look up credentials record itself and blow up."""
    import google.auth
    from google.cloud import secretmanager

    touched: list[str] = []

    def boom(what: str) -> Any:
        def _raise(*args: Any, **kwargs: Any) -> Any:
            touched.append(what)
            raise AssertionError(f"{what} must not be called")

        return _raise

    monkeypatch.setattr(google.auth, "default", boom("google.auth.default"))
    monkeypatch.setattr(secretmanager, "SecretManagerServiceClient", boom("SecretManagerServiceClient"))
    return touched


def test_no_project_skips_secret_manager_entirely(
    monkeypatch: pytest.MonkeyPatch, fake_secret_manager: FakeSecretManager, secret_manager_client: Any
) -> None:
    touched = _forbid_gcp(monkeypatch)
    monkeypatch.setenv("TWENTY_CRM_API_KEY", "env-crm")
    fake_secret_manager.put(PROJECT, "twenty-crm-api-key", "unused")

    started = time.monotonic()
    # Even a client handed in is not used without a project.
    found = find_api_key(settings(project=None), secret_client=secret_manager_client)

    assert time.monotonic() - started < 0.5
    assert found.source == "environment variable TWENTY_CRM_API_KEY"
    assert fake_secret_manager.calls == []
    assert touched == []


def test_no_project_and_no_client_builds_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    touched = _forbid_gcp(monkeypatch)
    monkeypatch.setenv("TWENTY_API_KEY", "env-plain")

    assert resolve_api_key(settings(project=None)) == "env-plain"
    assert touched == []


def test_no_credentials_falls_back_to_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError

    calls: list[int] = []

    def no_credentials(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        raise DefaultCredentialsError("Your default credentials were not found.")

    monkeypatch.setattr(google.auth, "default", no_credentials)
    monkeypatch.setenv("TWENTY_API_KEY", "env-plain")

    found = find_api_key(settings())  # the real client is built lazily and fails on credentials

    assert found.source == "environment variable TWENTY_API_KEY"
    assert calls == [1]  # credentials were looked up once, not once per secret name


def test_no_credentials_error_names_every_place(monkeypatch: pytest.MonkeyPatch) -> None:
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError

    def no_credentials(*args: Any, **kwargs: Any) -> Any:
        raise DefaultCredentialsError("Your default credentials were not found.")

    monkeypatch.setattr(google.auth, "default", no_credentials)

    with pytest.raises(ValueError) as info:
        resolve_api_key(settings())

    message = str(info.value)
    for name in NAMES:
        assert f"Secret Manager secret {name} in project {PROJECT}: no usable Google credentials" in message


def test_client_is_built_lazily_and_closed(
    monkeypatch: pytest.MonkeyPatch, fake_secret_manager: FakeSecretManager
) -> None:
    from google.cloud import secretmanager

    built: list[Any] = []

    def factory() -> Any:
        client = fake_secret_manager.client()
        built.append(client)
        return client

    monkeypatch.setattr(secretmanager, "SecretManagerServiceClient", factory)
    fake_secret_manager.put(PROJECT, "twenty_api_key", "lazy")

    assert resolve_api_key(settings()) == "lazy"
    assert len(built) == 1
    assert fake_secret_manager.calls == ALL_CALLS[:2]
    # The resolver owned that client, so it closed the channel: further calls fail.
    with pytest.raises(ValueError, match="Cannot invoke RPC on closed channel"):
        built[0].access_secret_version(name=version("twenty_api_key"), retry=None, timeout=1)


def test_importing_the_module_does_not_import_secret_manager() -> None:
    import subprocess
    import sys

    code = "import sys, truth_forge.core.secrets; print('google.cloud.secretmanager' in sys.modules)"
    repo = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=repo
    )
    assert out.stdout.strip() == "False"


# --- the not-found error, logging, repr, redact ------------------------------------------------


def test_not_found_error_lists_every_place_and_why(
    fake_secret_manager: FakeSecretManager, secret_manager_client: Any
) -> None:
    fake_secret_manager.put(PROJECT, "TWENTY_CRM_API_KEY", "   ")  # exists but blank

    with pytest.raises(ValueError) as info:
        resolve_api_key(settings(), secret_client=secret_manager_client)

    message = str(info.value)
    assert message.startswith("Twenty CRM API key not found")
    lines = message.splitlines()
    expected_starts = [
        f"  - Secret Manager secret twenty-crm-api-key in project {PROJECT}: NotFound",
        f"  - Secret Manager secret twenty_api_key in project {PROJECT}: NotFound",
        f"  - Secret Manager secret TWENTY_CRM_API_KEY in project {PROJECT}: secret is empty",
        f"  - Secret Manager secret twenty-api-key in project {PROJECT}: NotFound",
        "  - environment variable TWENTY_CRM_API_KEY: not set",
        "  - environment variable TWENTY_API_KEY: not set",
    ]
    assert len(lines) >= 1 + len(expected_starts)
    for line, start in zip(lines[1:], expected_starts):
        assert line.startswith(start), (line, start)


def test_not_found_error_without_project_and_with_blank_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWENTY_API_KEY", "  ")

    with pytest.raises(ValueError) as info:
        resolve_api_key(settings(project=None))

    message = str(info.value)
    assert message.startswith("Twenty CRM API key not found")
    assert "skipped, no GCP project configured" in message
    for name in NAMES:
        assert name in message
    assert "environment variable TWENTY_CRM_API_KEY: not set" in message
    assert "environment variable TWENTY_API_KEY: set but empty" in message


def test_error_never_contains_a_secret_value(
    monkeypatch: pytest.MonkeyPatch, fake_secret_manager: FakeSecretManager, secret_manager_client: Any
) -> None:
    # Values that are present but unusable must not be echoed back in the error.
    fake_secret_manager.put(PROJECT, "twenty-crm-api-key", b"\xffNOT-UTF8-SECRET")
    fake_secret_manager.put(PROJECT, "twenty_api_key", "CORRUPT-SECRET")
    fake_secret_manager.corrupt_crc(PROJECT, "twenty_api_key")

    with pytest.raises(ValueError) as info:
        resolve_api_key(settings(), secret_client=secret_manager_client)

    message = str(info.value)
    assert "payload is not valid UTF-8" in message
    assert "CRC32C" in message
    assert "SECRET" not in message


def test_log_names_the_source_but_never_the_key(
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    fake_secret_manager: FakeSecretManager,
    secret_manager_client: Any,
) -> None:
    caplog.set_level(logging.DEBUG, logger="truth_forge.core.secrets")
    fake_secret_manager.put(PROJECT, "twenty_api_key", "sm-key-SHOULD-NOT-APPEAR")

    resolve_api_key(settings(), secret_client=secret_manager_client)

    infos = [r for r in caplog.records if r.name == "truth_forge.core.secrets" and r.levelno == logging.INFO]
    assert [r.getMessage() for r in infos] == [
        f"Twenty CRM API key loaded from Secret Manager secret twenty_api_key in project {PROJECT}"
    ]
    assert "SHOULD-NOT-APPEAR" not in caplog.text


@pytest.mark.timeout(20)  # a regression to the client's 60 s retry must fail, not stall
def test_log_names_env_source_but_never_the_key(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, dead_secret_manager_client: Any
) -> None:
    caplog.set_level(logging.DEBUG, logger="truth_forge.core.secrets")
    monkeypatch.setenv("TWENTY_API_KEY", "env-key-SHOULD-NOT-APPEAR")

    resolve_api_key(settings(), secret_client=dead_secret_manager_client)

    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert "Twenty CRM API key loaded from environment variable TWENTY_API_KEY" in infos
    assert "SHOULD-NOT-APPEAR" not in caplog.text


def test_repr_hides_the_value() -> None:
    found = ResolvedApiKey(value="super-secret-value", source="environment variable TWENTY_API_KEY")

    assert "super-secret-value" not in repr(found)
    assert "super-secret-value" not in str(found)
    assert "super-secret-value" not in f"{found!r} {found} {[found]}"
    assert "environment variable TWENTY_API_KEY" in repr(found)


def test_resolved_api_key_is_frozen() -> None:
    found = ResolvedApiKey(value="v", source="s")
    with pytest.raises(AttributeError):
        found.value = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "hidden", "expected"),
    [
        ("Authorization: Bearer abc123", ("abc123",), "Authorization: Bearer ***"),
        ("k=abc123 again abc123", ("abc123",), "k=*** again ***"),
        ("a=one b=two", ("one", "two"), "a=*** b=***"),
        ("nothing to hide", ("", "absent"), "nothing to hide"),
        # A secret containing another must not leave its tail visible.
        ("token=abcdef", ("abc", "abcdef"), "token=***"),
        ("no secrets given", (), "no secrets given"),
    ],
)
def test_redact(text: str, hidden: tuple[str, ...], expected: str) -> None:
    assert redact(text, *hidden) == expected



def test_key_in_a_dotenv_file_is_found(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("TWENTY_API_KEY=from-dotenv-123\n")
    found = find_api_key(Settings(gcp_project_id=None))
    assert found.value == "from-dotenv-123"
    assert found.source == "environment variable TWENTY_API_KEY (from .env)"
