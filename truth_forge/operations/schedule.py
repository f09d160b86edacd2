"""`truth-forge sync --every 5m`: runs on a fixed schedule, never two at once, within the request budget.

Why it exists: a sync is useful only when it runs again and again. The loop here starts a run every
interval, measured from the start of the previous one; a run that takes longer than the interval is
followed by the next at once, never by two (missed ticks are skipped and logged, not queued).

Overlap is refused inside the process (`exclusive_run`); across processes DuckDB allows one writer
per file, and the warehouse lease (`truth-forge serve`'s "one writer per warehouse") covers BigQuery.

The interval has a floor set by the request budget: a run that finds nothing to do still spends a
few requests (a metadata check, and a live and a deleted-records query per object); at most half of
`TRUTH_FORGE_TWENTY_REQUESTS_PER_MINUTE` goes to these, so that edits still have room, and never
more often than once a minute.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from truth_forge.core import shutdown
from truth_forge.operations.failures import EXIT_INTERRUPTED, EXIT_STOPPED, CommandFailed

log = logging.getLogger(__name__)

QUIET_RUN_REQUESTS = 6  # a run with nothing to do: metadata check + 2 pull queries per object (+ slack)
MIN_INTERVAL_SECONDS = 60.0
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_RUN_LOCK = threading.Lock()


class SyncAlreadyRunning(CommandFailed):
    """Another sync of this process has not finished."""


def parse_interval(text: str) -> float:
    """'90s', '5m', '1h', '1d' -> seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd])\s*", text or "")
    if not match:
        raise CommandFailed(f"--every {text!r}: give a number and a unit, e.g. 90s, 5m, 1h or 1d")
    return float(match.group(1)) * _UNITS[match.group(2)]


def minimum_interval(requests_per_minute: float) -> float:
    """The shortest interval the budget allows: quiet runs take at most half of it, at most one a minute."""
    return max(MIN_INTERVAL_SECONDS, math.ceil(QUIET_RUN_REQUESTS * 2 * 60.0 / requests_per_minute))


def check_interval(seconds: float, requests_per_minute: float) -> None:
    floor = minimum_interval(requests_per_minute)
    if seconds < floor:
        raise CommandFailed(
            f"--every {seconds:g}s is shorter than {floor:g}s, the shortest interval a budget of "
            f"{requests_per_minute:g} requests a minute allows (TRUTH_FORGE_TWENTY_REQUESTS_PER_MINUTE); "
            "a run with nothing to do still spends about "
            f"{QUIET_RUN_REQUESTS} requests")


@contextmanager
def exclusive_run() -> Iterator[None]:
    """Hold the process's one sync slot, or refuse at once."""
    if not _RUN_LOCK.acquire(blocking=False):
        raise SyncAlreadyRunning("another sync is still running in this process; runs never overlap")
    try:
        yield
    finally:
        _RUN_LOCK.release()


def run_every(
    interval: float,
    run_once: Callable[[], int],
    *,
    max_runs: int | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = shutdown.pause,
) -> int:
    """Call `run_once` every `interval` seconds (from start to start) until `max_runs`, Ctrl-C or SIGTERM
    (under `shutdown.stop_on_sigterm`: the run under way stops at its next request, none follows).

    Returns the exit code of the last run (`EXIT_STOPPED` once stopped by SIGTERM, `EXIT_INTERRUPTED` by Ctrl-C). A run that could
    not run (exit 2) does not end the schedule: the next tick tries again, as cron would."""
    runs, code = 0, 0
    next_start = clock()
    try:
        while max_runs is None or runs < max_runs:
            wait = next_start - clock()
            if wait > 0:
                sleep(wait)
            if shutdown.stop_requested():
                return EXIT_STOPPED
            started = clock()
            with exclusive_run():
                code = run_once()
            runs += 1
            if shutdown.interrupted():  # Ctrl-C in a run that then ended another way
                raise KeyboardInterrupt
            if shutdown.stop_requested():
                log.info("Stopped (%s) after %d runs", shutdown.stop_requested(), runs)
                return EXIT_STOPPED
            next_start = started + interval
            late = clock() - next_start
            if late > 0:
                skipped = int(late // interval) + 1
                log.warning("The run took longer than the interval (%.0f s); %d start(s) skipped, the next "
                            "starts now", interval, skipped)
                next_start = clock()
            elif max_runs is None or runs < max_runs:
                log.info("Next run in %.0f s", next_start - clock())
    except BaseException as exc:
        if not (isinstance(exc, KeyboardInterrupt) or shutdown.interrupted()):
            raise
        log.info("Stopped by Ctrl-C after %d finished runs (a run under way was closed as interrupted)", runs)
        return EXIT_INTERRUPTED
    return code
