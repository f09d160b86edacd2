"""Stopping a run when the process is told to stop (SIGTERM), as cleanly as Ctrl-C or cleaner.

Why it exists: systemd, Kubernetes and Cloud Run stop a process with SIGTERM, and Python's default
for it is to die on the spot: the run row stays `running` and answers already on the wire are never
recorded. Here SIGTERM only sets a flag. The one place that sends requests to Twenty
(`twenty/transport.py`) looks at it before every request and raises `RunStopped` instead of
sending; requests already on the wire finish (each is bounded by its deadline) and are recorded as
usual, the runner closes the run as aborted with an error row naming the signal, and the command
exits with `EXIT_STOPPED`. Warehouse statements are never cut in half: the flag is read only at a
request boundary. A second SIGTERM is not special; SIGKILL remains the way to stop at once.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

_stop = threading.Event()
_reason: list[str] = []
_interrupted = threading.Event()


class RunStopped(Exception):
    """The process was asked to stop: no new request leaves; the run ends as aborted."""


def request_stop(reason: str) -> None:
    """From now on no request leaves this process (the first reason given is kept)."""
    if not _reason:
        _reason.append(reason)
    _stop.set()


def stop_requested() -> str | None:
    """Why the process is stopping, or None while it is not."""
    return _reason[0] if _stop.is_set() and _reason else None


def check() -> None:
    """Raise `RunStopped` when the process is stopping (called before each request)."""
    reason = stop_requested()
    if reason is not None:
        raise RunStopped(f"the run was stopped: {reason}; requests already sent were recorded, "
                         "the next run goes on from here")


def pause(seconds: float) -> None:
    """`time.sleep` that ends early when the process is told to stop."""
    _stop.wait(max(0.0, seconds))


def reset() -> None:
    """Forget a stop (a process that goes on after one, like a test)."""
    _reason.clear()
    _stop.clear()
    _interrupted.clear()


def interrupted() -> bool:
    """Whether Ctrl-C was pressed (under `notice_ctrl_c`). DuckDB turns a KeyboardInterrupt that lands
    in the middle of a statement into its own "Query interrupted" error: this tells the two apart."""
    return _interrupted.is_set()


@contextmanager
def notice_ctrl_c() -> Iterator[None]:
    """While inside, Ctrl-C raises KeyboardInterrupt as usual and is remembered (`interrupted`)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_sigint(signum: int, frame: FrameType | None) -> None:
        _interrupted.set()
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """While inside, SIGTERM asks the run to stop instead of killing the process (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        request_stop(f"{signal.Signals(signum).name} received")

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
