"""Failures that explain themselves: one table from what went wrong to an exit code and a fix.

Why it exists: a scheduler (cron, systemd, Cloud Scheduler) reads only the exit code, and a person
reads one line. Every command maps the errors it expects through `explain` so that both agree:
0 all went through, 1 some records failed (they are retried next run), 2 the command could not run.
Each line names the setting to change (`TWENTY_BASE_URL`, `TRUTH_FORGE_WAREHOUSE_URL`, ...) and
what was tried; the traceback is kept for `-v`. An error `explain` does not know is a bug and keeps
its traceback.
"""

from __future__ import annotations

import errno
import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported where an error is explained: `--help` need not load pydantic
    from pydantic import ValidationError
    from pydantic_settings import SettingsError

EXIT_OK = 0
EXIT_RECORDS_FAILED = 1
EXIT_COULD_NOT_RUN = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells expect of a process stopped by Ctrl-C
EXIT_STOPPED = 143  # 128 + SIGTERM, what service managers expect of a process that stopped when told

# What happened -> exit code -> what to do. Rendered into `--help` and docs/operating.md.
EXIT_CODES: tuple[tuple[str, int, str], ...] = (
    ("every record synced (or the check passed)", EXIT_OK, "nothing"),
    ("some records failed; the rest synced", EXIT_RECORDS_FAILED,
     "`truth-forge errors --open`; they are retried on the next run"),
    ("a setting is invalid", EXIT_COULD_NOT_RUN, "fix the variable the message names"),
    ("the warehouse is missing, unreadable or busy", EXIT_COULD_NOT_RUN,
     "TRUTH_FORGE_WAREHOUSE_URL; `--create` or `truth-forge init` for a new one"),
    ("the warehouse cannot write (disk full, I/O error)", EXIT_COULD_NOT_RUN,
     "free space (or mend the device) where TRUTH_FORGE_WAREHOUSE_URL points; the next run goes on from there"),
    ("Twenty unreachable, wrong URL, or key refused", EXIT_COULD_NOT_RUN,
     "TWENTY_BASE_URL, TWENTY_API_KEY (or the Secret Manager secret)"),
    ("the workspace lacks truth-forge's fields", EXIT_COULD_NOT_RUN, "`truth-forge setup`"),
    ("the run stopped early (an outage outlasted the retries)", EXIT_COULD_NOT_RUN,
     "nothing: the next run goes on from where this one stopped"),
    ("another sync is running in this process", EXIT_COULD_NOT_RUN, "wait for it"),
    ("stopped by Ctrl-C (SIGINT): the run row closed as interrupted", EXIT_INTERRUPTED,
     "nothing: the next run goes on from where this one stopped"),
    ("stopped by SIGTERM: requests on the wire were recorded, the run row closed as aborted", EXIT_STOPPED,
     "nothing: the next run goes on from where this one stopped"),
)


def exit_codes_text() -> str:
    """The table as three short paragraphs (one per code), for `--help` epilogs."""
    lines = ["Exit codes:"]
    for code in sorted({c for _, c, _ in EXIT_CODES}):
        whats = [what for what, c, _ in EXIT_CODES if c == code]
        lines.append(f"{code} = " + "; ".join(whats) + ".")
    lines.append("docs/operating.md's table says what to do for each.")
    return "\n".join(lines)


def exit_codes_markdown() -> str:
    """The table for docs/operating.md ("Failures that explain themselves")."""
    rows = ["| exit | when | what to do |", "|---|---|---|"]
    rows += [f"| {code} | {what} | {fix} |" for what, code, fix in EXIT_CODES]
    return "\n".join(rows)


@dataclass(frozen=True)
class Explanation:
    message: str
    exit_code: int = EXIT_COULD_NOT_RUN


class CommandFailed(Exception):
    """A failure a command has already put into words (and its exit code)."""

    def __init__(self, message: str, exit_code: int = EXIT_COULD_NOT_RUN) -> None:
        self.exit_code = exit_code
        super().__init__(message)


def explain(exc: BaseException) -> Explanation | None:
    """The one line and exit code for an expected failure; None for one nobody expected (a bug)."""
    from pydantic import ValidationError
    from pydantic_settings import SettingsError

    from truth_forge.core.config import ConfigFileError
    from truth_forge.core.crm_schema import CrmSchemaError
    from truth_forge.core.lease import WarehouseBusy
    from truth_forge.core.shutdown import RunStopped
    from truth_forge.twenty.errors import TwentyError
    from truth_forge.warehouse.errors import WarehouseError, WarehouseLockedError

    if isinstance(exc, CommandFailed):
        return Explanation(str(exc), exc.exit_code)
    if isinstance(exc, RunStopped):
        return Explanation(str(exc), EXIT_STOPPED)
    if isinstance(exc, ConfigFileError):
        return Explanation(str(exc))
    if isinstance(exc, ValidationError):
        return Explanation(settings_error_line(exc))
    if isinstance(exc, SettingsError):
        return Explanation(unparsable_setting_line(exc))
    if isinstance(exc, CrmSchemaError):
        return Explanation(_with_hint(str(exc), "fix the file TRUTH_FORGE_CRM_SCHEMA_FILE names, or unset it"))
    if isinstance(exc, TwentyError):
        return Explanation(_with_hint(str(exc), twenty_hint(exc)))
    # A file another process holds is busy, not broken: its own message (below), not a storage failure.
    storage = None if isinstance(exc, WarehouseLockedError) else (
        _storage_failure(exc) or (_storage_failure(exc.__cause__) if exc.__cause__ is not None else None))
    if storage is not None:
        return Explanation(_with_hint(storage, _warehouse_hint(storage)))
    if isinstance(exc, WarehouseError):
        message = " ".join(str(exc).split())  # engines' messages can span lines; the explanation is one
        return Explanation(_with_hint(message, _warehouse_hint(message)))
    if isinstance(exc, ValueError) and str(exc).startswith("Twenty CRM API key not found"):
        return Explanation(str(exc))
    if isinstance(exc, WarehouseBusy):
        return Explanation(f"{exc} [sync --wait-for-lease SECONDS waits for it]")
    return None


# OS-level reasons a warehouse cannot write: the disk (or quota) is full, the device failed, it went read-only.
_STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS}
_STORAGE_WORDS = ("no space left on device", "disk quota exceeded", "input/output error", "read-only file system")


def _storage_failure(exc: BaseException) -> str | None:
    """One line for a warehouse that failed to write to its storage (a full disk, a failed device).

    DuckDB reports these as IOException, or, once a checkpoint failed, as FatalException ("database has
    been invalidated") from whatever statement comes next; Python's own file calls raise OSError."""
    import duckdb

    if isinstance(exc, OSError) and exc.errno in _STORAGE_ERRNOS:
        return f"the warehouse cannot write to its storage: {exc}"
    if not isinstance(exc, duckdb.Error):
        return None
    said = " ".join(str(exc).split())
    found = next((w for w in _STORAGE_WORDS if w in said.lower()), None)
    if found is None and not isinstance(exc, (duckdb.IOException, duckdb.FatalException)):
        return None  # a statement DuckDB refused for another reason
    reason = f" ({found})" if found else ""
    return (f"the DuckDB warehouse could not write{reason}; nothing after the failure was saved and the next run "
            f"goes on from where this one stopped once the storage has room. DuckDB said: {said[:400]}")


def _with_hint(message: str, hint: str | None) -> str:
    return message if not hint or hint in message else f"{message} [{hint}]"


def twenty_hint(exc: BaseException) -> str | None:
    """Which setting most likely fixes this Twenty error."""
    return hint_for(type(exc).__name__, str(exc))


def hint_for(error_class: str, message: str) -> str | None:
    """The same, from an error row (a recorded error keeps its class name and message)."""
    if error_class == "TwentyAuthError":
        return "check the key in TWENTY_API_KEY / TWENTY_CRM_API_KEY or Secret Manager twenty-crm-api-key"
    if error_class in ("TwentySchemaMismatch", "SetupIncomplete"):
        return "run `truth-forge setup`"
    if error_class in ("TwentyProtocolError", "TwentyNotFound") and "/rest/metadata" in message:
        return ("TWENTY_BASE_URL must be the server's root URL, e.g. https://api.twenty.com, "
                "without /rest or /graphql")
    if error_class == "TwentyProtocolError":
        return "TWENTY_BASE_URL points at something that is not Twenty"
    if error_class == "TwentyTransientError" and "connect" in message.lower():
        return "check TWENTY_BASE_URL and that the server is up"
    return None


def run_stopped_lines(sync_errors: list[dict[str, object]]) -> list[str]:
    """Why a run stopped early, from its run-level errors, each with the setting to fix."""
    lines = []
    for error in sync_errors:
        if error.get("record_key") is None and error.get("crm_id") is None and error.get("resolved_at") is None:
            message = str(error.get("error_message") or "")
            lines.append(_with_hint(message, hint_for(str(error.get("error_class")), message)))
    return lines


def _warehouse_hint(message: str) -> str | None:
    if "TRUTH_FORGE_WAREHOUSE_URL" in message or "warehouse_url" in message:
        return None
    return f"TRUTH_FORGE_WAREHOUSE_URL={os.environ.get('TRUTH_FORGE_WAREHOUSE_URL') or '(default)'}"


def settings_error_line(exc: ValidationError) -> str:
    """One line per invalid setting, naming the variable the user actually set and its value."""
    from truth_forge.core.config import Settings

    lines = []
    for error in exc.errors():
        field = _field_named(Settings, str(error["loc"][0]) if error.get("loc") else "")
        variable = setting_source(Settings, field)
        reason = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        value = error.get("input")
        shown = "" if _is_secret_field(Settings, field) or isinstance(value, dict) else f"={value!r}"
        lines.append(f"{variable}{shown}: {reason}")
    return "invalid setting: " + "; ".join(lines)


def unparsable_setting_line(exc: SettingsError) -> str:
    """One line for a setting pydantic-settings could not even parse (malformed JSON in a dict or list
    setting such as TRUTH_FORGE_WAREHOUSE_TABLES): the variable, why, and the shape it takes."""
    from truth_forge.core.config import Settings

    found = re.search(r'field "([^"]+)"', str(exc))
    field = found.group(1) if found else ""
    variable = setting_source(Settings, field) if field else "a TRUTH_FORGE_* setting"
    reason = f"not valid JSON ({exc.__cause__})" if exc.__cause__ is not None else str(exc)
    info = Settings.model_fields.get(field)
    example = ""
    if info is not None and info.description and "{" in info.description:
        example = "; e.g. " + info.description[info.description.index("{"):]
    elif info is not None and "list" in str(info.annotation):
        example = '; e.g. ["name"]'
    return f"invalid setting: {variable}: {reason}{example}"


def _aliases(settings_class: type, field: str) -> list[str]:
    info = settings_class.model_fields.get(field)  # type: ignore[attr-defined]
    choices = getattr(info.validation_alias, "choices", None) if info is not None else None
    return [str(c) for c in choices or [field]]


def _field_named(settings_class: type, name: str) -> str:
    """pydantic names an invalid setting by its field or by its first alias: the field, either way."""
    for field in settings_class.model_fields:  # type: ignore[attr-defined]
        if name == field or name in _aliases(settings_class, field):
            return field
    return name


def setting_source(settings_class: type, field: str) -> str:
    """The environment variable that set `field` (the first alias present), the config file's key when
    only that file set it, else its main name."""
    from truth_forge.core.config import config_file_path

    names = _aliases(settings_class, field)
    dotenv = _dotenv_names()
    for name in names:
        if name in os.environ or name.upper() in os.environ or name in dotenv:
            return name
    if field in _config_file_names():
        return f"{field} in {config_file_path()}"
    return names[0]


def _config_file_names() -> set[str]:
    from truth_forge.core.config import ConfigFileError, read_config_file

    try:
        return set(read_config_file())
    except ConfigFileError:
        return set()


def _dotenv_names() -> set[str]:
    if not os.path.isfile(".env"):
        return set()
    from dotenv import dotenv_values

    return set(dotenv_values(".env"))


def _is_secret_field(settings_class: type, field: str) -> bool:
    info = settings_class.model_fields.get(field)  # type: ignore[attr-defined]
    if info is not None and "Secret" in str(info.annotation):
        return True
    return "password" in field or "secret" in field or "webhook_url" in field
