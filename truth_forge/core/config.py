"""Settings for every part of truth-forge, read from the environment, an optional `.env` file and an
optional config file, `truth-forge.toml`.

Each setting can be given as `TRUTH_FORGE_<NAME>`; the few that users already know under another
name (`TWENTY_BASE_URL`, `GOOGLE_CLOUD_PROJECT`) are accepted under that name too. The config file
(beside `.env`, or where `TRUTH_FORGE_CONFIG_FILE` says) holds settings by their lower-case name,
`warehouse_url = "duckdb:///contacts.duckdb"`, for what a team keeps in git; the environment and
`.env` override it. A file that does not parse, or names no setting, stops every command with one line.
"""

from __future__ import annotations

import difflib
import os
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

DEFAULT_TWENTY_BASE_URL = "https://api.twenty.com"
DEFAULT_WAREHOUSE_URL = "duckdb:///truth_forge.duckdb"
# serve on BigQuery works in rounds, not per event: each webhook batch's merge reads its records'
# rows and state by key, and a few hundred random keys touch every storage block of
# contact_identifiers and of the state (1.5-2 GB at 10M contacts, whatever the batch's size), so
# the bill follows the number of batches. Pulled values reach `contacts` only when they land
# (BIGQUERY_SERVE_FOLD_MINUTES) anyway; the window delays the history, conflicts and key write-backs.
BIGQUERY_SERVE_BATCH_WINDOW = 300.0
BIGQUERY_SERVE_BATCH_EVENTS = 2_000  # events one batch merges at most
# The scheduled sync behind the webhooks: each reads the state of what changed since the last one.
BIGQUERY_SERVE_SYNC_INTERVAL_MINUTES = 30.0
SERVE_SYNC_INTERVAL_MINUTES = 10.0
# How long pulled values wait in crm_sync_pending under serve on BigQuery: each landing is a MERGE
# billing contacts whole (warehouse/pending_rows.py).
BIGQUERY_SERVE_FOLD_MINUTES = 30.0

CONFIG_FILE = "truth-forge.toml"
CONFIG_FILE_VARIABLE = "TRUTH_FORGE_CONFIG_FILE"


class ConfigFileError(ValueError):
    """The config file does not parse or names something that is not a setting (one line, exit 2)."""


def config_file_path() -> Path:
    return Path(os.environ.get(CONFIG_FILE_VARIABLE) or CONFIG_FILE)


def read_config_file(path: Path | None = None) -> dict[str, Any]:
    """The settings the config file holds ({} when there is none; a named file must exist)."""
    path = path or config_file_path()
    if not path.is_file():
        if os.environ.get(CONFIG_FILE_VARIABLE):
            raise ConfigFileError(f"{CONFIG_FILE_VARIABLE}={path}: no such file")
        return {}
    try:
        values = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigFileError(f"the config file {path} is not valid TOML: {exc}") from None
    known = sorted(Settings.model_fields)
    for name, value in values.items():
        if name not in Settings.model_fields:
            close = difflib.get_close_matches(name, known, n=1, cutoff=0.75)
            raise ConfigFileError(f"the config file {path}: {name!r} is not a truth-forge setting"
                                  + (f" (did you mean {close[0]!r}?)" if close else f"; known: {', '.join(known)}"))
        if isinstance(value, dict):
            raise ConfigFileError(f"the config file {path}: {name!r} is a table; settings are plain keys "
                                  f"({name} = ...)")
    return values


class _ConfigFileSource(PydanticBaseSettingsSource):
    """The config file, below the environment and `.env` (see `Settings.settings_customise_sources`)."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ hands over the whole file

    def __call__(self) -> dict[str, Any]:
        return read_config_file()


def _env(name: str, *aliases: str) -> AliasChoices:
    return AliasChoices(f"TRUTH_FORGE_{name}", *aliases)


class Settings(BaseSettings):
    """Everything configurable. Construct with keyword arguments to override the environment."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", populate_by_name=True)

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource,
                                   dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource,
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Arguments, then the environment, then .env, then the config file: the first that has a value wins.
        return init_settings, env_settings, dotenv_settings, _ConfigFileSource(settings_cls), file_secret_settings

    twenty_base_url: str = Field(
        DEFAULT_TWENTY_BASE_URL,
        validation_alias=_env("TWENTY_BASE_URL", "TWENTY_BASE_URL"),
        description="Twenty server: https://api.twenty.com or a self-hosted URL",
    )
    warehouse_url: str = Field(
        DEFAULT_WAREHOUSE_URL,
        validation_alias=_env("WAREHOUSE_URL"),
        description="duckdb:///path/file.duckdb (default) or bigquery://PROJECT/DATASET",
    )
    gcp_project_id: str | None = Field(
        None,
        validation_alias=_env("GCP_PROJECT_ID", "GOOGLE_CLOUD_PROJECT", "GCP_PROJECT"),
        description="Project holding the Secret Manager secrets; unset means Secret Manager is skipped",
    )
    twenty_batch_size: int = Field(
        60,
        ge=1,
        le=200,
        validation_alias=_env("TWENTY_BATCH_SIZE"),
        description="Records per batch write; Twenty documents 60, its server code accepts 200",
    )
    twenty_requests_per_minute: int = Field(
        100,
        ge=1,
        validation_alias=_env("TWENTY_REQUESTS_PER_MINUTE"),
        description="Client-side request budget per workspace (Twenty allows about 100 a minute)",
    )
    sync_targets: list[str] = Field(
        default_factory=list,
        validation_alias=_env("SYNC_TARGETS"),
        description="Plug-in targets (entry point names) that `sync_contact_to_all` sends to after Twenty",
    )
    twenty_timeout_seconds: float = Field(
        30.0, gt=0, validation_alias=_env("TWENTY_TIMEOUT_SECONDS"),
        description="Bound on each step of a request (connecting, sending, each read of the answer)",
    )
    twenty_request_deadline_seconds: float = Field(
        120.0, gt=0, validation_alias=_env("TWENTY_REQUEST_DEADLINE_SECONDS"),
        description="Bound on a whole request, answer included (a server sending a byte at a time is cut off); "
                    "a request past it is retried like a broken connection",
    )
    twenty_max_request_line: int = Field(
        8000, ge=1024, validation_alias=_env("TWENTY_MAX_REQUEST_LINE"),
        description="Longest request line sent to Twenty, in bytes (method, path, encoded query, HTTP version); "
                    "lists of ids are split into more requests to stay within it (nginx and Apache refuse over "
                    "8 KB by default); a read refused as too long (414/431) lowers it for the rest of the run",
    )
    twenty_max_retries: int = Field(
        6,
        ge=0,
        validation_alias=_env("TWENTY_MAX_RETRIES"),
        description="Retries of one request on 429, 5xx and connection errors before giving up",
    )
    warehouse_tables: dict[str, str] = Field(
        default_factory=dict,
        validation_alias=_env("WAREHOUSE_TABLES"),
        description='Rename warehouse tables, as JSON: {"contacts": "people_master"}',
    )
    crm_schema_file: Path | None = Field(
        None,
        validation_alias=_env("CRM_SCHEMA_FILE"),
        description="JSON or TOML file adding user-defined custom fields to the CRM schema",
    )

    # --- `truth-forge serve` and the writer lease ---------------------------------------------------
    serve_host: str = Field(
        "127.0.0.1", validation_alias=_env("SERVE_HOST"),
        description="Address `serve` binds; loopback by default (put a TLS reverse proxy in front)",
    )
    serve_port: int = Field(8787, ge=0, le=65535, validation_alias=_env("SERVE_PORT"), description="Port `serve` binds")
    console_token: SecretStr | None = Field(
        None, validation_alias=_env("CONSOLE_TOKEN"),
        description="Token the console and /metrics ask for when `serve` or `console` binds beyond loopback",
    )
    serve_sync_interval_minutes: float | None = Field(
        None, gt=0, validation_alias=_env("SERVE_SYNC_INTERVAL_MINUTES"),
        description="Minutes between the scheduled two-way syncs that catch what webhooks missed; by default 10, "
                    "and 30 on BigQuery, where each reads the sync state of everything changed since the last",
    )
    serve_batch_window_seconds: float | None = Field(
        None, ge=0, validation_alias=_env("SERVE_BATCH_WINDOW_SECONDS"),
        description="How long `serve` lets webhook events gather before applying them together; by default 0.25 s, "
                    "and 300 s on BigQuery, where every apply reads whole storage blocks of the tables it merges",
    )
    serve_fold_minutes: float | None = Field(
        None, ge=0, validation_alias=_env("SERVE_FOLD_MINUTES"),
        description="On BigQuery, how long values pulled by `serve` wait beside contacts before landing in it "
                    "(one MERGE billing the whole table each time); by default 30, and 0 (at once) on DuckDB",
    )
    history_retention_days: int = Field(
        365, ge=0, validation_alias=_env("HISTORY_RETENTION_DAYS"),
        description="Days of record history (crm_sync_history) kept; older days are deleted once a day by the "
                    "sync (on BigQuery that DELETE bills only the expired day partitions); 0 keeps it forever",
    )
    serve_inbox_path: Path = Field(
        Path("truth_forge_inbox.sqlite3"), validation_alias=_env("SERVE_INBOX_PATH"),
        description="SQLite file where verified webhook events wait to be applied",
    )
    webhook_tolerance_seconds: int = Field(
        300, ge=1, validation_alias=_env("WEBHOOK_TOLERANCE_SECONDS"),
        description="How far a delivery's signed timestamp may be from now before it is refused",
    )
    webhook_max_body_bytes: int = Field(
        1_048_576, ge=1024, validation_alias=_env("WEBHOOK_MAX_BODY_BYTES"),
        description="Larger webhook bodies are refused with 413",
    )
    lease_ttl_seconds: float = Field(
        60.0, ge=1, validation_alias=_env("LEASE_TTL_SECONDS"),
        description="How long a writer's lease (serve, sync) lasts unless renewed: how long a writer that crashed "
                    "blocks others (one in this machine's PID namespace is recognised as gone at once), and the "
                    "longest a paused writer can be sure of its lease without renewing it first",
    )

    # --- change detection (truth_forge/warehouse/detection.py) ------------------------------------
    detection_audit_hours: float = Field(
        24.0, ge=0, validation_alias=_env("DETECTION_AUDIT_HOURS"),
        description="Hours between full comparisons of the warehouse with the sync state (the audit that finds "
                    "rows written without updated_at, or removed outright); 0 audits every run",
    )
    detection_overlap_minutes: float = Field(
        10.0, ge=0, validation_alias=_env("DETECTION_OVERLAP_MINUTES"),
        description="How far before the last detection's start the next one looks for updated_at stamps (writers' "
                    "statements commit after the time they stamp)",
    )

    # --- the rolling sweep (truth_forge/sync/sweep.py) ---------------------------------------------
    sweep_window_hours: float = Field(
        24.0, ge=0, validation_alias=_env("SWEEP_WINDOW_HOURS"),
        description="Every Twenty record is re-read within this many hours (plus one run interval), to catch edits "
                    "the pull cannot tell from ours (merges, unstamped workflow steps, restores); 0 turns it off",
    )
    sweep_max_requests: int = Field(
        50, ge=0, validation_alias=_env("SWEEP_MAX_REQUESTS"),
        description="Requests one sync run may spend on that re-read (200 records a request); 0 turns it off",
    )

    def serve_fold_minutes_or_default(self) -> float:
        if self.serve_fold_minutes is not None:
            return self.serve_fold_minutes
        return BIGQUERY_SERVE_FOLD_MINUTES if self._on_bigquery() else 0.0

    def serve_batch_window(self) -> float:
        if self.serve_batch_window_seconds is not None:
            return self.serve_batch_window_seconds
        return BIGQUERY_SERVE_BATCH_WINDOW if self._on_bigquery() else 0.25

    def serve_batch_events(self) -> int:
        return BIGQUERY_SERVE_BATCH_EVENTS if self._on_bigquery() else 500

    def serve_sync_interval(self) -> float:
        """Minutes between serve's scheduled syncs."""
        if self.serve_sync_interval_minutes is not None:
            return self.serve_sync_interval_minutes
        return BIGQUERY_SERVE_SYNC_INTERVAL_MINUTES if self._on_bigquery() else SERVE_SYNC_INTERVAL_MINUTES

    def _on_bigquery(self) -> bool:
        return self.warehouse_url.startswith("bigquery://")

    @field_validator("twenty_base_url")
    @classmethod
    def _strip_trailing_slash(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https:// (e.g. https://api.twenty.com)")
        return value

    # --- operating it: warehouse timeouts and alerts (truth_forge/operations/alerts.py) ------------------------
    warehouse_timeout_seconds: float = Field(
        30.0, gt=0, validation_alias=_env("WAREHOUSE_TIMEOUT_SECONDS"),
        description="Bound on each BigQuery call, retries included (an unreachable endpoint fails after this)",
    )
    alert_min_errors: int = Field(
        1, ge=1, validation_alias=_env("ALERT_MIN_ERRORS"),
        description="Alert after a run that opened new errors when at least this many are open (a stopped run "
                    "alerts whatever the count)",
    )
    alert_webhook_url: SecretStr | None = Field(
        None, validation_alias=_env("ALERT_WEBHOOK_URL"),
        description="HTTP endpoint for alerts, Slack-compatible body {\"text\": ...} (e.g. a Slack incoming webhook)",
    )
    alert_email_to: str | None = Field(
        None, validation_alias=_env("ALERT_EMAIL_TO"), description="Alert recipients, comma-separated",
    )
    alert_email_from: str = Field(
        "truth-forge@localhost", validation_alias=_env("ALERT_EMAIL_FROM"), description="Sender of alert emails",
    )
    alert_smtp_host: str | None = Field(None, validation_alias=_env("ALERT_SMTP_HOST"), description="SMTP server")
    alert_smtp_port: int = Field(587, ge=1, le=65535, validation_alias=_env("ALERT_SMTP_PORT"),
                                 description="SMTP port (587: submission with STARTTLS)")
    alert_smtp_starttls: bool = Field(True, validation_alias=_env("ALERT_SMTP_STARTTLS"),
                                      description="Upgrade the SMTP connection with STARTTLS before logging in")
    alert_smtp_username: str | None = Field(None, validation_alias=_env("ALERT_SMTP_USERNAME"),
                                            description="SMTP login (none: send without AUTH)")
    alert_smtp_password: SecretStr | None = Field(None, validation_alias=_env("ALERT_SMTP_PASSWORD"),
                                                  description="SMTP password")
    alert_smtp_ca_file: Path | None = Field(
        None, validation_alias=_env("ALERT_SMTP_CA_FILE"),
        description="CA bundle that signs the SMTP server's certificate (default: the system's)",
    )
    alert_timeout_seconds: float = Field(10.0, gt=0, validation_alias=_env("ALERT_TIMEOUT_SECONDS"),
                                         description="Bound on each alert delivery")


# TRUTH_FORGE_* variables that are not settings: where the config file is, and the project's own test suite's.
_NOT_SETTINGS = (CONFIG_FILE_VARIABLE, "TRUTH_FORGE_SOAK", "TRUTH_FORGE_TEST_")


def unknown_variables(names: Iterable[str]) -> list[str]:
    """A line for each TRUTH_FORGE_* name no setting reads (pydantic ignores them, so a typo would
    silently leave the default in force), with the closest setting's name when one is close."""
    known = {choice for f in Settings.model_fields.values() if isinstance(f.validation_alias, AliasChoices)
             for choice in f.validation_alias.choices if isinstance(choice, str)}
    lines = []
    for name in sorted(set(names)):
        if name.startswith("TRUTH_FORGE_") and name not in known and not name.startswith(_NOT_SETTINGS):
            close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.75)
            lines.append(f"{name} is not a truth-forge setting and is ignored"
                         + (f" (did you mean {close[0]}?)" if close else ""))
    return lines


def get_settings() -> Settings:
    """Settings as the environment says now (cheap; read afresh so a changed env is seen)."""
    return Settings()


def __getattr__(name: str) -> Settings:
    # `from truth_forge.core.config import settings` reads `settings.twenty_base_url`, as the seed does.
    if name == "settings":
        return get_settings()
    raise AttributeError(name)
