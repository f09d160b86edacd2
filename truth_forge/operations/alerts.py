"""Alerts after a sync run: one message when errors open that were not open before, one when they
have all closed ("recovered"); never one per record, never the same open errors again every run.

Why it exists: a scheduled sync fails where nobody looks, and an alert that repeats every minute
under `--every 1m` is soon ignored. After each run, when errors opened that the last run did not
leave open (and at least `TRUTH_FORGE_ALERT_MIN_ERRORS` are open, or the run stopped early), one
message goes to each configured channel: email over SMTP (STARTTLS and AUTH by default, the
standard library's `smtplib`) and an HTTP webhook whose body is Slack's `{"text": ...}` (an incoming
webhook posts it as it is). It says what failed, how many, since when, and the command that lists
them. Which errors were open is kept between runs in crm_sync_kv (hashed identities, `Announced`).

Delivering an alert must never break the run: a channel that fails is logged and recorded as a
run-level `alert` error row (closed by the next successful run), and the other channels still go.
Secrets (the Twenty key, the SMTP password, the webhook URL, whose path is its credential) are
redacted from everything an alert says and from every failure it reports.
"""

from __future__ import annotations

import hashlib
import json
import logging
import smtplib
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any
from urllib.parse import urlsplit

import httpx

from truth_forge.core.config import Settings
from truth_forge.core.secrets import redact

log = logging.getLogger(__name__)

LATEST_SHOWN = 5  # error messages quoted in an alert; the command lists the rest
# The open errors compared with the last alert's, newest first: past this many, the oldest count as announced.
OPEN_ERRORS_READ = 10_000
ANNOUNCED_KEY = "alerts:announced"  # crm_sync_kv: the open errors the last run left, hashed (error_identity)


@dataclass(frozen=True)
class Alert:
    subject: str
    text: str


@dataclass(frozen=True)
class Delivery:
    channel: str
    ok: bool
    detail: str = ""


def error_identity(error: Mapping[str, Any]) -> str:
    """Which error this is across runs: one record's failure in one operation, or one kind of run-level
    failure (a row of `error_lifecycles`). Hashed short: the set of them is kept in crm_sync_kv."""
    run_level = error.get("record_key") is None and error.get("crm_id") is None
    parts = (error.get("operation"), error.get("object_type"), error.get("record_key"), error.get("crm_id"),
             error.get("error_class") if run_level else None)
    return hashlib.sha1("|".join("" if p is None else str(p) for p in parts).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Announced:
    """The open errors as the last run left them, and whether an alert told someone about them."""

    keys: frozenset[str] = frozenset()
    alerted: bool = False


def compose_alert(result: Any, open_kinds: Sequence[Mapping[str, Any]], open_errors: Sequence[Mapping[str, Any]],
                  *, announced: Announced, min_errors: int, where: str) -> tuple[Alert | None, Announced]:
    """The alert for a finished run (None when it needs none) and what is announced afterwards.

    `open_kinds` is `Warehouse.open_error_kinds()`, `open_errors` the open errors newest first
    (`error_lifecycles(open_only=True)`), `announced` what earlier runs left. An alert goes out when
    errors opened that were not open before (never again for the same open errors), and once, as
    "recovered", when every error an alert announced has closed."""
    open_errors = [e for e in open_errors if e.get("operation") != "alert"]  # a channel's own failures
    keys = frozenset(error_identity(e) for e in open_errors)
    if not keys:
        if not announced.alerted:
            return None, Announced()
        text = (f"truth-forge run {result.run_id} on {where}: {result.status}.\n"
                f"Every error open at the last alert is closed ({len(announced.keys)} were open then); "
                "nothing is open now.")
        return Alert(subject="[truth-forge] sync recovered, no errors open", text=text), Announced()
    new = [e for e in open_errors if error_identity(e) not in announced.keys]
    open_now = max(len(open_errors), sum(int(k["open_errors"]) for k in open_kinds if k["operation"] != "alert"))
    stopped = result.status == "aborted"
    if not new or (not stopped and open_now < min_errors):
        # Only what an alert named stays announced: errors kept back under the threshold are new
        # to the alert that crosses it.
        return None, Announced(announced.keys & keys, announced.alerted)
    headline = (f"sync stopped early, {len(new)} new errors, {open_now} open" if stopped
                else f"sync {result.status}, {len(new)} new errors, {open_now} open")
    lines = [f"truth-forge run {result.run_id} on {where}: {result.status}.",
             f"New since the last alert: {len(new)}. Open now: {open_now} ({open_now - len(new)} already announced)."]
    if open_kinds:
        lines.append("Open errors by kind:")
        for kind in open_kinds:
            what = " ".join(str(x) for x in (kind["operation"], kind.get("object_type"), kind["error_class"]) if x)
            lines.append(f"  {what}: {kind['open_errors']} ({kind['attempts']} attempts, first seen "
                         f"{_when(kind['first_seen'])}, last {_when(kind['last_seen'])})")
    lines.append("New:")
    for error in new[:LATEST_SHOWN]:
        who = " ".join(str(x) for x in (error["operation"], error.get("object_type"),
                                        error.get("record_key") or error.get("crm_id")) if x)
        lines.append(f"  {who}: {error['error_message']}")
    lines.append(f"See them: truth-forge errors --open   (this run: truth-forge errors --run {result.run_id})")
    return Alert(subject=f"[truth-forge] {headline}", text="\n".join(lines)), Announced(keys, True)


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
        announced = load_announced(warehouse)
        alert, after = compose_alert(result, warehouse.open_error_kinds(),
                                     warehouse.error_lifecycles(open_only=True, limit=OPEN_ERRORS_READ),
                                     announced=announced, min_errors=settings.alert_min_errors, where=where)
    except Exception as exc:  # the warehouse may be what broke the run; the run's outcome stands
        log.warning("Could not read the errors to alert on: %s", redact(str(exc), *secrets))
        return []
    outcomes = deliver(settings, alert, secrets=secrets) if alert is not None else []
    failed = [o for o in outcomes if not o.ok]
    if failed:
        _record_failures(warehouse, result.run_id, failed)
    if alert is None or len(failed) < len(outcomes):  # an alert no channel delivered is tried again next run
        _save_announced(warehouse, announced, after)
    return outcomes


def load_announced(warehouse: Any) -> Announced:
    said = warehouse.get_bookkeeping(ANNOUNCED_KEY)
    if not said:
        return Announced()
    value = json.loads(said)
    return Announced(frozenset(value.get("keys") or ()), bool(value.get("alerted")))


def _save_announced(warehouse: Any, before: Announced, after: Announced) -> None:
    if after == before:
        return  # nothing changed: no write
    try:
        warehouse.set_bookkeeping(ANNOUNCED_KEY, json.dumps({"keys": sorted(after.keys), "alerted": after.alerted},
                                                            separators=(",", ":")))
        warehouse.checkpoint()
    except Exception as exc:
        log.warning("Could not keep which errors were announced (the next run may alert on them again): %s", exc)


def _record_failures(warehouse: Any, run_id: str, failed: Sequence[Delivery]) -> None:
    try:
        warehouse.record_errors([{"run_id": run_id, "operation": "alert", "error_class": "AlertFailed",
                                  "error_message": f"{o.channel} alert not delivered: {o.detail}"} for o in failed])
        warehouse.checkpoint()
    except Exception as exc:
        log.warning("Could not record the failed alert: %s", exc)
