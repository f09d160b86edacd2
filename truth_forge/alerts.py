"""Alerts after a sync run: one message per run that stopped or left errors open, never one per record.

Why it exists: a scheduled sync fails where nobody looks. After each run, when the run stopped early
or at least `TRUTH_FORGE_ALERT_MIN_ERRORS` errors are open (new in this run or still open from
earlier ones), one message goes to each configured channel: email over SMTP (STARTTLS and AUTH by
default, the standard library's `smtplib`) and an HTTP webhook whose body is Slack's
`{"text": ...}` (an incoming webhook posts it as it is). The message says what failed, how many,
since when, and the command that lists them.

Delivering an alert must never break the run: a channel that fails is logged and recorded as a
run-level `alert` error row (closed by the next successful run), and the other channels still go.
Secrets (the Twenty key, the SMTP password, the webhook URL, whose path is its credential) are
redacted from everything an alert says and from every failure it reports.
"""

from __future__ import annotations

import logging
import smtplib
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any
from urllib.parse import urlsplit

import httpx

from truth_forge.config import Settings
from truth_forge.secrets import redact

log = logging.getLogger(__name__)

LATEST_SHOWN = 5  # error messages quoted in an alert; the command lists the rest


@dataclass(frozen=True)
class Alert:
    subject: str
    text: str


@dataclass(frozen=True)
class Delivery:
    channel: str
    ok: bool
    detail: str = ""


def compose_alert(result: Any, open_kinds: Sequence[Mapping[str, Any]], latest: Sequence[Mapping[str, Any]],
                  *, min_errors: int, where: str) -> Alert | None:
    """The alert for a finished run, or None when it needs none. `open_kinds` is
    `Warehouse.open_error_kinds()`, `latest` the newest open errors (`error_lifecycles(open_only=True)`)."""
    open_now = sum(int(k["open_errors"]) for k in open_kinds)
    new = int(result.counts.get("errors", 0))
    stopped = result.status == "aborted"
    if not stopped and open_now < min_errors:
        return None
    older = max(0, open_now - new)
    headline = (f"sync stopped early, {open_now} errors open" if stopped
                else f"sync {result.status}, {new} new errors, {open_now} open")
    lines = [f"truth-forge run {result.run_id} on {where}: {result.status}.",
             f"New in this run: {new}. Open now: {open_now} ({older} from earlier runs)."]
    if open_kinds:
        lines.append("Open errors by kind:")
        for kind in open_kinds:
            what = " ".join(str(x) for x in (kind["operation"], kind.get("object_type"), kind["error_class"]) if x)
            lines.append(f"  {what}: {kind['open_errors']} ({kind['attempts']} attempts, first seen "
                         f"{_when(kind['first_seen'])}, last {_when(kind['last_seen'])})")
    if latest:
        lines.append("Latest:")
        for error in latest[:LATEST_SHOWN]:
            who = " ".join(str(x) for x in (error["operation"], error.get("object_type"),
                                            error.get("record_key") or error.get("crm_id")) if x)
            lines.append(f"  {who}: {error['error_message']}")
    lines.append(f"See them: truth-forge errors --open   (this run: truth-forge errors --run {result.run_id})")
    return Alert(subject=f"[truth-forge] {headline}", text="\n".join(lines))


def _when(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if hasattr(value, "strftime") else str(value)


# --- channels ---------------------------------------------------------------------------------------


def configured_channels(settings: Settings) -> list[str]:
    channels = []
    if settings.alert_smtp_host and settings.alert_email_to:
        channels.append("email")
    if settings.alert_webhook_url is not None:
        channels.append("webhook")
    return channels


def alert_secrets(settings: Settings) -> tuple[str, ...]:
    values = [settings.alert_smtp_password, settings.alert_webhook_url]
    return tuple(v.get_secret_value() for v in values if v is not None)


def send_email(settings: Settings, alert: Alert) -> str:
    """Send over SMTP (STARTTLS unless turned off, implicit TLS on port 465, AUTH when a user is set)."""
    recipients = [r.strip() for r in (settings.alert_email_to or "").split(",") if r.strip()]
    message = EmailMessage()
    message["Subject"] = alert.subject
    message["From"] = settings.alert_email_from
    message["To"] = ", ".join(recipients)
    message.set_content(alert.text)
    context = ssl.create_default_context(cafile=str(settings.alert_smtp_ca_file) if settings.alert_smtp_ca_file else None)
    host, port, timeout = settings.alert_smtp_host or "", settings.alert_smtp_port, settings.alert_timeout_seconds
    smtp = (smtplib.SMTP_SSL(host, port, timeout=timeout, context=context) if port == 465
            else smtplib.SMTP(host, port, timeout=timeout))
    with smtp:
        if port != 465 and settings.alert_smtp_starttls:
            smtp.starttls(context=context)
        if settings.alert_smtp_username:
            password = settings.alert_smtp_password.get_secret_value() if settings.alert_smtp_password else ""
            smtp.login(settings.alert_smtp_username, password)
        smtp.send_message(message)
    return f"email to {', '.join(recipients)} via {host}:{port}"


def send_webhook(settings: Settings, alert: Alert) -> str:
    """POST Slack's body, `{"text": ...}`, to the webhook URL."""
    url = settings.alert_webhook_url.get_secret_value() if settings.alert_webhook_url else ""
    shown = _shown_url(url)
    # httpx logs every request line with its URL (under -v): the webhook's token must not be in it.
    hidden = _RedactLog(url, shown)
    logging.getLogger("httpx").addFilter(hidden)
    try:
        response = httpx.post(url, json={"text": f"*{alert.subject}*\n{alert.text}"},
                              timeout=settings.alert_timeout_seconds)
    except httpx.HTTPError as exc:
        raise AlertFailed(f"webhook {shown}: {type(exc).__name__}: {exc}") from None
    finally:
        logging.getLogger("httpx").removeFilter(hidden)
    if response.status_code >= 300:
        raise AlertFailed(f"webhook {shown} answered HTTP {response.status_code}: {response.text[:200]}")
    return f"webhook {shown}"


class _RedactLog(logging.Filter):
    """Replaces a secret in log records with what may be shown of it."""

    def __init__(self, secret: str, shown: str) -> None:
        super().__init__()
        self.secret, self.shown = secret, shown

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if self.secret in message:
            record.msg, record.args = message.replace(self.secret, self.shown), ()
        return True


def _shown_url(url: str) -> str:
    """Scheme and host only: a webhook URL's path is its credential (Slack's are)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}{':' + str(parts.port) if parts.port else ''}/..."


class AlertFailed(Exception):
    """A channel could not deliver (its message is already free of secrets)."""


_SENDERS = {"email": send_email, "webhook": send_webhook}


def deliver(settings: Settings, alert: Alert, *, secrets: Sequence[str] = ()) -> list[Delivery]:
    """Send to every configured channel; one that fails is reported, never raised."""
    hidden = (*secrets, *alert_secrets(settings))
    safe = Alert(redact(alert.subject, *hidden), redact(alert.text, *hidden))
    outcomes = []
    for channel in configured_channels(settings):
        try:
            detail = _SENDERS[channel](settings, safe)
        except (AlertFailed, OSError, smtplib.SMTPException, ssl.SSLError, ValueError) as exc:
            reason = redact(f"{type(exc).__name__}: {exc}" if not isinstance(exc, AlertFailed) else str(exc), *hidden)
            log.warning("Alert by %s failed: %s", channel, reason)
            outcomes.append(Delivery(channel, False, reason))
        else:
            log.info("Alert sent: %s", detail)
            outcomes.append(Delivery(channel, True, detail))
    return outcomes


def alert_after_run(settings: Settings, warehouse: Any, result: Any, *, where: str,
                    secrets: Sequence[str] = ()) -> list[Delivery]:
    """Compose and send the run's alert if it needs one; record failed channels. Never raises."""
    if not configured_channels(settings):
        return []
    try:
        alert = compose_alert(result, warehouse.open_error_kinds(),
                              warehouse.error_lifecycles(open_only=True, limit=LATEST_SHOWN),
                              min_errors=settings.alert_min_errors, where=where)
    except Exception as exc:  # the warehouse may be what broke the run; the run's outcome stands
        log.warning("Could not read the errors to alert on: %s", redact(str(exc), *secrets))
        return []
    if alert is None:
        return []
    outcomes = deliver(settings, alert, secrets=secrets)
    failed = [o for o in outcomes if not o.ok]
    if failed:
        _record_failures(warehouse, result.run_id, failed)
    return outcomes


def _record_failures(warehouse: Any, run_id: str, failed: Sequence[Delivery]) -> None:
    try:
        warehouse.record_errors([{"run_id": run_id, "operation": "alert", "error_class": "AlertFailed",
                                  "error_message": f"{o.channel} alert not delivered: {o.detail}"} for o in failed])
        warehouse.checkpoint()
    except Exception as exc:
        log.warning("Could not record the failed alert: %s", exc)
