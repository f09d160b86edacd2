"""`truth-forge webhooks register|list|remove` against the sandbox, the older route on a server
that lacks the metadata one, and the secret stored where the API key is looked up."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tests.fixtures.secret_manager import FakeSecretManager
from truth_forge.cli.main import app
from truth_forge.core.config import Settings
from truth_forge.core.secrets import find_webhook_secret, store_webhook_secret
from truth_forge.realtime.webhooks import OPERATIONS, list_webhooks, register_webhook, remove_webhook
from truth_forge.twenty import TwentyClient


@pytest.fixture
def cli_env(sandbox: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for var in ("TWENTY_CRM_API_KEY", "TWENTY_WEBHOOK_SECRET", "TRUTH_FORGE_GCP_PROJECT_ID", "GOOGLE_CLOUD_PROJECT",
                "GCP_PROJECT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("TWENTY_API_KEY", sandbox.api_key)
    monkeypatch.setenv("TWENTY_BASE_URL", sandbox.base_url)
    monkeypatch.chdir(tmp_path)  # .env is read and written here
    return tmp_path


def test_register_stores_the_secret_in_dotenv_and_list_and_remove_work(cli_env: Path, sandbox: Any) -> None:
    runner = CliRunner()
    made = runner.invoke(app, ["webhooks", "register", "--url", "https://sync.example.test/webhooks/twenty"])
    assert made.exit_code == 0, made.output
    stored = (cli_env / ".env").read_text()
    secret = stored.split("TWENTY_WEBHOOK_SECRET=", 1)[1].strip()
    assert len(secret) == 64 and secret not in made.output
    assert oct(os.stat(cli_env / ".env").st_mode & 0o777) == "0o600"
    hook = sandbox.runtime.webhooks.list()[0]
    assert hook["secret"] == secret and hook["operations"] == OPERATIONS
    assert hook["targetUrl"] == "https://sync.example.test/webhooks/twenty"

    again = runner.invoke(app, ["webhooks", "register", "--url", "https://other.example.test/hook"])
    assert again.exit_code == 0 and "reusing the secret" in again.output
    assert {h["secret"] for h in sandbox.runtime.webhooks.list()} == {secret}

    listed = runner.invoke(app, ["webhooks", "list"])
    assert listed.exit_code == 0 and hook["id"] in listed.output and secret not in listed.output
    removed = runner.invoke(app, ["webhooks", "remove", hook["id"]])
    assert removed.exit_code == 0, removed.output
    remaining = [h["id"] for h in sandbox.runtime.webhooks.list()]
    assert len(remaining) == 1 and hook["id"] not in remaining


class _LegacyOnly(BaseHTTPRequestHandler):
    """A server from before webhooks moved to the metadata API: only /rest/webhooks answers."""

    hooks: dict[str, dict[str, Any]] = {}

    def _send(self, status: int, body: Any) -> None:
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def do_POST(self) -> None:  # noqa: N802
        if self.path != "/rest/webhooks":
            return self._send(404, {"statusCode": 404, "messages": ["Cannot POST " + self.path]})
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        hook = {"id": f"hook-{len(self.hooks) + 1}", **body}
        self.hooks[hook["id"]] = hook
        self._send(201, {"data": {"createWebhook": hook}})

    def do_GET(self) -> None:  # noqa: N802
        if not self.path.startswith("/rest/webhooks"):
            return self._send(404, {"statusCode": 404, "messages": ["Cannot GET " + self.path]})
        self._send(200, {"data": {"webhooks": list(self.hooks.values())}, "pageInfo": {"hasNextPage": False}})

    def do_DELETE(self) -> None:  # noqa: N802
        hook_id = self.path.rsplit("/", 1)[-1]
        if not self.path.startswith("/rest/webhooks/") or self.hooks.pop(hook_id, None) is None:
            return self._send(404, {"statusCode": 404, "messages": ["not found"]})
        self._send(200, {"data": {"deleteWebhook": {"id": hook_id}}})

    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.fixture
def legacy_server() -> Iterator[str]:
    _LegacyOnly.hooks = {}
    server = ThreadingHTTPServer(("127.0.0.1", 0), _LegacyOnly)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_an_older_server_gets_the_older_route(legacy_server: str) -> None:
    with TwentyClient(legacy_server, "k", max_retries=0) as client:
        hook = register_webhook(client, "https://x.example.test/hook", "s" * 64)
        assert hook["id"] == "hook-1" and _LegacyOnly.hooks["hook-1"]["secret"] == "s" * 64
        assert [h["id"] for h in list_webhooks(client)] == ["hook-1"]
        assert "secret" not in list_webhooks(client)[0]
        remove_webhook(client, "hook-1")
        assert _LegacyOnly.hooks == {}


def test_with_a_gcp_project_the_secret_goes_to_secret_manager(fake_secret_manager: FakeSecretManager,
                                                              secret_manager_client: Any, cli_env: Path) -> None:
    settings = Settings(gcp_project_id="proj-1")
    where = store_webhook_secret("f" * 64, settings, secret_client=secret_manager_client)
    assert where == "Secret Manager secret twenty-webhook-secret in project proj-1"
    assert not (cli_env / ".env").exists()
    found = find_webhook_secret(settings, secret_client=secret_manager_client)
    assert found.value == "f" * 64 and "Secret Manager" in found.source
    # Storing again adds a version to the existing secret.
    store_webhook_secret("e" * 64, settings, secret_client=secret_manager_client)
    assert find_webhook_secret(settings, secret_client=secret_manager_client).value == "e" * 64


def test_serve_without_a_secret_says_how_to_get_one(cli_env: Path) -> None:
    result = CliRunner().invoke(app, ["serve", "--port", "0"])
    assert result.exit_code == 2
    assert "webhook secret not found" in result.output and "webhooks register" in result.output
