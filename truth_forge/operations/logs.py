"""Log lines for people (text) and for log collectors (JSON), the same for every command.

Why it exists: `sync`, `serve` (and its writer process) and `doctor` all log; a collector needs each
line as one JSON object whose time sorts and converts (milliseconds and the zone) and that says which
sync run it belongs to, so that a run's lines can be found from its `run_id` in `truth-forge runs`.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from collections.abc import Callable
from typing import Any

LOG_FORMATS = ("text", "json")
# The run whose work is being logged (one per process at a time: runs never overlap in a process).
# A plain global, not a contextvar: the run's requests are logged from worker threads too.
_active_run: list[str | None] = [None]


def current_run_id() -> str | None:
    return _active_run[0]


def set_run_id(run_id: str | None) -> str | None:
    """Tag the lines logged from now on with `run_id` (None: no run); returns the tag it replaced."""
    previous, _active_run[0] = _active_run[0], run_id
    return previous


def tracking_run_id(on_event: Callable[[Any], None] | None) -> Callable[[Any], None]:
    """A sync event subscriber that tags log lines with the run between its `run_started` and
    `run_finished` events (restoring the tag before, as `serve`'s webhook run has one), then passes
    each event on to `on_event`."""
    outer: list[str | None] = []

    def on(event: Any) -> None:
        if event.kind == "run_started":
            outer.append(set_run_id(str(event.detail.get("run_id") or "") or None))
        if on_event is not None:
            on_event(event)
        if event.kind == "run_finished":
            set_run_id(outer.pop() if outer else None)

    return on


class JsonLogFormatter(logging.Formatter):
    """One JSON object a line: time (UTC, milliseconds, zone), level, logger, message, run_id."""

    def format(self, record: logging.LogRecord) -> str:
        when = dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds")
        line: dict[str, Any] = {"time": when, "level": record.levelname, "logger": record.name,
                                "message": record.getMessage()}
        run_id = current_run_id()
        if run_id is not None:
            line["run_id"] = run_id
        if record.exc_info:
            line["traceback"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def check_log_format(log_format: str, allowed: tuple[str, ...] = LOG_FORMATS) -> None:
    from truth_forge.operations.failures import CommandFailed

    if log_format not in allowed:
        raise CommandFailed(f"--log-format must be {', '.join(allowed[:-1])} or {allowed[-1]}, not {log_format!r}")


def use_json_logs() -> None:
    """Every log line from now on as one JSON object on stderr (replacing the root's handlers)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLogFormatter())
    logging.getLogger().handlers[:] = [handler]
