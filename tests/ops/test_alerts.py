"""Alerts: one message per run that leaves errors open, received by a real SMTP server (STARTTLS and
AUTH required) and a loopback webhook; a dead channel never breaks the run; no secret is ever in a
log line, an error row or an alert."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.alert_receivers import SMTP_PASSWORD, SmtpServer, WebhookReceiver, free_port
from tests.ops.conftest import Cli, clean_env
from truth_forge.warehouse import open_warehouse


def bad_phones(url: str, *keys: int) -> None:
    with open_warehouse(url) as wh:
        wh.upsert_contacts([{"contact_id": k, "primary_phone": "12", "additional_phones": []} for k in keys])


def test_a_run_with_failures_sends_one_email_and_one_webhook(ready_cli: Cli, warehouse_url: str,
                                                             smtp_server: SmtpServer,
                                                             webhook_receiver: WebhookReceiver) -> None:
    bad_phones(warehouse_url, 3, 4, 5)
    done = ready_cli("sync", "--quiet", **smtp_server.settings(),
                     TRUTH_FORGE_ALERT_WEBHOOK_URL=webhook_receiver.url)
    assert done.returncode == 1, done.stderr
    [mail] = smtp_server.messages  # one per run, not one per record
    assert mail.over_tls and mail.authenticated_as == "alerts@example.test"
    assert mail.recipients == ["ops@example.test", "oncall@example.test"]
    assert "Subject: [truth-forge] sync partial, 3 new errors, 3 open" in mail.content
    assert "push person" in mail.content and "truth-forge errors --open" in mail.content
    assert "New since the last alert: 3. Open now: 3 (0 already announced)." in mail.content
    [post] = webhook_receiver.posts
    assert set(post) == {"text"}  # Slack's body: an incoming webhook posts it as it is
    assert "sync partial, 3 new errors" in post["text"] and "truth-forge errors --run" in post["text"]


def good_phones(url: str, *keys: int) -> None:
    with open_warehouse(url) as wh:
        wh.upsert_contacts([{"contact_id": k, "primary_phone": "+14155552671", "additional_phones": []} for k in keys])


def test_only_new_errors_alert_and_their_closing_says_recovered_once(ready_cli: Cli, warehouse_url: str,
                                                                     webhook_receiver: WebhookReceiver) -> None:
    hook = {"TRUTH_FORGE_ALERT_WEBHOOK_URL": webhook_receiver.url}
    assert ready_cli("sync", "--quiet", **hook).returncode == 0
    assert webhook_receiver.posts == []  # nothing open: no alert
    bad_phones(warehouse_url, 6)
    assert ready_cli("sync", "--quiet", **hook).returncode == 1
    assert ready_cli("sync", "--quiet", **hook).returncode == 1  # the same error still open: no second alert
    assert len(webhook_receiver.posts) == 1 and "1 new errors, 1 open" in webhook_receiver.posts[0]["text"]
    bad_phones(warehouse_url, 7)
    assert ready_cli("sync", "--quiet", **hook).returncode == 1
    assert len(webhook_receiver.posts) == 2
    second = webhook_receiver.posts[1]["text"]
    assert "1 new errors, 2 open" in second and "push person 7:" in second and "push person 6:" not in second
    good_phones(warehouse_url, 6, 7)
    assert ready_cli("sync", "--quiet", **hook).returncode == 0
    assert ready_cli("sync", "--quiet", **hook).returncode == 0
    assert len(webhook_receiver.posts) == 3  # one "recovered", not one a run
    assert "sync recovered, no errors open" in webhook_receiver.posts[2]["text"]
    bad_phones(warehouse_url, 6)  # broken again after it closed: new again
    assert ready_cli("sync", "--quiet", **hook).returncode == 1
    assert len(webhook_receiver.posts) == 4 and "1 new errors, 1 open" in webhook_receiver.posts[3]["text"]


def test_a_twenty_outage_alerts_once_and_then_recovered(ready_cli: Cli, webhook_receiver: WebhookReceiver) -> None:
    hook = {"TRUTH_FORGE_ALERT_WEBHOOK_URL": webhook_receiver.url}
    down = {**hook, "TWENTY_BASE_URL": f"http://127.0.0.1:{free_port()}"}
    assert ready_cli("sync", "--quiet", **down).returncode == 2
    assert ready_cli("sync", "--quiet", **down).returncode == 2
    assert [p["text"].splitlines()[0] for p in webhook_receiver.posts] == \
        ["*[truth-forge] sync stopped early, 1 new errors, 1 open*"]
    assert ready_cli("sync", "--quiet", **hook).returncode == 0
    assert len(webhook_receiver.posts) == 2 and "sync recovered" in webhook_receiver.posts[1]["text"]


def test_below_the_threshold_no_alert_goes_out(ready_cli: Cli, warehouse_url: str,
                                               webhook_receiver: WebhookReceiver) -> None:
    bad_phones(warehouse_url, 3, 4)
    done = ready_cli("sync", "--quiet", TRUTH_FORGE_ALERT_WEBHOOK_URL=webhook_receiver.url,
                     TRUTH_FORGE_ALERT_MIN_ERRORS="3")
    assert done.returncode == 1 and webhook_receiver.posts == []
    # A third bad record crosses it: the alert names all three, the two kept back included.
    bad_phones(warehouse_url, 5)
    done = ready_cli("sync", "--quiet", TRUTH_FORGE_ALERT_WEBHOOK_URL=webhook_receiver.url,
                     TRUTH_FORGE_ALERT_MIN_ERRORS="3")
    assert done.returncode == 1 and len(webhook_receiver.posts) == 1
    assert "3 new errors, 3 open" in webhook_receiver.posts[0]["text"]


def test_dead_channels_are_logged_and_recorded_and_the_run_stands(ready_cli: Cli, warehouse_url: str,
                                                                  smtp_server: SmtpServer,
                                                                  webhook_receiver: WebhookReceiver) -> None:
    bad_phones(warehouse_url, 3)
    webhook_receiver.status = 500
    done = ready_cli("sync", "--log-format", "json", **smtp_server.settings(TRUTH_FORGE_ALERT_SMTP_PORT=str(free_port())),
                     TRUTH_FORGE_ALERT_WEBHOOK_URL=webhook_receiver.url)
    assert done.returncode == 1  # partial, as the run was: the alerts' failure changes nothing
    summary = json.loads(done.stdout.splitlines()[-1])
    assert summary["event"] == "summary" and summary["counts"]["push_person"]["failed"] == 1
    warnings = [json.loads(line)["message"] for line in done.stderr.splitlines()]
    assert any(m.startswith("Alert by email failed: ConnectionRefusedError") for m in warnings)
    assert any("Alert by webhook failed: webhook http://127.0.0.1" in m and "HTTP 500" in m for m in warnings)
    with open_warehouse(warehouse_url) as wh:
        alerts = [e for e in wh.open_errors() if e["operation"] == "alert"]
    assert sorted(e["error_message"].split(" ")[0] for e in alerts) == ["email", "webhook"]
    assert all(e["run_id"] == summary["run_id"] and e["error_class"] == "AlertFailed" for e in alerts)


def test_one_dead_channel_does_not_keep_the_other_from_delivering(ready_cli: Cli, warehouse_url: str,
                                                                  webhook_receiver: WebhookReceiver) -> None:
    bad_phones(warehouse_url, 3)
    done = ready_cli("sync", "--quiet", TRUTH_FORGE_ALERT_SMTP_HOST="127.0.0.1",
                     TRUTH_FORGE_ALERT_SMTP_PORT=str(free_port()), TRUTH_FORGE_ALERT_EMAIL_TO="ops@example.test",
                     TRUTH_FORGE_ALERT_WEBHOOK_URL=webhook_receiver.url)
    assert done.returncode == 1 and len(webhook_receiver.posts) == 1


def test_a_wrong_smtp_password_is_reported_without_the_password(ready_cli: Cli, warehouse_url: str,
                                                                 smtp_server: SmtpServer) -> None:
    bad_phones(warehouse_url, 3)
    done = ready_cli("sync", "--log-format", "json",
                     **smtp_server.settings(TRUTH_FORGE_ALERT_SMTP_PASSWORD="wrong-pass-91c2"))
    assert done.returncode == 1 and smtp_server.messages == []
    assert "SMTPAuthenticationError" in done.stderr and "wrong-pass-91c2" not in done.stderr


# --- no secret anywhere ------------------------------------------------------------------------------

LEAKY_KEY = "tf-live-key-5e0c2b7a9d41"


class _EchoesTheKey(http.server.BaseHTTPRequestHandler):
    """A Twenty that refuses the key and quotes it back in its error, as some proxies do."""

    def do_GET(self) -> None:  # noqa: N802 (the standard library's name)
        token = self.headers.get("Authorization", "").partition(" ")[2]
        body = json.dumps({"statusCode": 401, "error": "UNAUTHENTICATED",
                           "messages": [f"Token {token} is invalid or expired"]}).encode()
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Echo", token)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        return None


@pytest.fixture
def key_echoing_twenty() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _EchoesTheKey)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def every_error_row(url: str) -> list[str]:
    with open_warehouse(url, read_only=True) as wh:
        rows, _ = wh._run("SELECT * FROM {crm_sync_errors}", (), fetch=True)
        runs, _ = wh._run("SELECT run_id, status, TO_JSON_STRING(counts) AS counts FROM {crm_sync_runs}", (),
                          fetch=True)
    assert rows and runs  # something to scan
    return [json.dumps(r, default=str) for r in rows + runs]


def test_no_secret_in_any_log_line_error_row_or_alert(ready_cli: Cli, sandbox: Any, warehouse_url: str,
                                                      tmp_path: Path, key_echoing_twenty: str,
                                                      smtp_server: SmtpServer,
                                                      webhook_receiver: WebhookReceiver) -> None:
    alerts = {**smtp_server.settings(), "TRUTH_FORGE_ALERT_WEBHOOK_URL": webhook_receiver.url}
    # 1. A run whose every request is refused by a server that quotes the key back, verbose.
    refused = Cli(clean_env(TWENTY_API_KEY=LEAKY_KEY, TWENTY_BASE_URL=key_echoing_twenty,
                            TRUTH_FORGE_WAREHOUSE_URL=warehouse_url, **alerts), tmp_path)("-v", "sync")
    assert refused.returncode == 2 and "Token *** is invalid" in refused.stdout + refused.stderr
    # 2. A run against the sandbox with records that fail, verbose, with every output format.
    bad_phones(warehouse_url, 3, 4)
    partial = ready_cli("-v", "sync", "--log-format", "text", **alerts)
    assert partial.returncode == 1
    logs = [refused.stdout, refused.stderr, partial.stdout, partial.stderr]
    mails = [m.content for m in smtp_server.messages]
    hooks = [json.dumps(p) for p in webhook_receiver.posts]
    assert len(mails) == 2 and len(hooks) == 2  # both runs alerted, by both channels
    secrets = [LEAKY_KEY, sandbox.api_key, SMTP_PASSWORD, "hook-token-4b1d9a"]
    for text in logs + every_error_row(warehouse_url) + mails + hooks:
        for secret in secrets:
            assert secret not in text
    assert all(path.endswith("hook-token-4b1d9a") for path in webhook_receiver.paths)  # it was used, not shown


def test_a_write_outage_is_one_run_level_error_and_one_alert(ready_cli: Cli, sandbox: Any, warehouse_url: str,
                                                             webhook_receiver: WebhookReceiver) -> None:
    """Every people write refused (HTTP 502 after the retries): the push stops after three batches in a
    row, and the run records one error, not one error row and warning per record of those batches."""
    sandbox.set_faults(error_rate=1.0, error_statuses=(502,), path_prefix="/rest/batch/people")
    try:
        done = ready_cli("sync", "--log-format", "json", TRUTH_FORGE_TWENTY_BATCH_SIZE="3",
                         TRUTH_FORGE_TWENTY_MAX_RETRIES="0", TRUTH_FORGE_ALERT_WEBHOOK_URL=webhook_receiver.url)
    finally:
        sandbox.clear_faults()
    assert done.returncode == 2, done.stderr[-2000:]
    summary = json.loads(done.stdout.splitlines()[-1])
    assert summary["status"] == "aborted" and summary["counts"]["push_person"]["failed"] >= 9
    logged = [json.loads(line) for line in done.stderr.splitlines() if not line.startswith("error: ")]
    warnings = [e for e in logged if e["level"] == "WARNING"]
    assert len(warnings) == 1 and "502" in warnings[0]["message"], warnings
    with open_warehouse(warehouse_url) as wh:
        [error] = wh.open_errors()
    assert error["record_key"] is None and error["operation"] == "push" and error["http_status"] == 502
    [post] = webhook_receiver.posts
    assert "sync stopped early, 1 new errors, 1 open" in post["text"]
