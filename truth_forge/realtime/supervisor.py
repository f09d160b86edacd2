"""The server's hold on its writer process (truth_forge/realtime/writer.py): it starts the writer
with serve, starts a new one when it dies unasked, and stops it when serve stops.

Why a supervisor: the writer is a child process of its own (it applies the inbox on another core,
without the request path's interpreter lock), and a process can die: an out-of-memory kill, a crash
in a native library, a warehouse that failed its start-up. Before, serve then kept acknowledging
into an inbox nobody applied until someone restarted it. Now a writer that exits while serve is not
stopping is replaced after a pause that doubles with each quick failure (`restart_backoff` up to
`restart_backoff_max`, back to the start once a writer has run for that long); the new writer takes
the lease (a dead holder's pid frees it at once), records the exit as a run-level `writer` error row
in the warehouse, and applies what waited. Meanwhile `/readyz` says `restarting`, with why.

Only the supervising thread waits on the process (two threads reaping one child would race), so
`stop()` asks and then waits for that thread. Each writer gets a pipe of its own to be told to
stop (closing the server's end; a SIGKILLed server closes it too, so its writer learns at once).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
from typing import Any

from truth_forge.realtime.inbox import Inbox
from truth_forge.realtime.writer import WriterSpec, writer_main

log = logging.getLogger(__name__)

WATCH_SECONDS = 0.5  # how often the supervising thread looks up from waiting on the writer


class WriterProcess:
    """Start with `start()`, stop with `stop()`; `status()` is what the writer last reported, from the inbox."""

    def __init__(self, spec: WriterSpec, inbox: Inbox) -> None:
        self.spec = spec
        self.inbox = inbox
        self._context = multiprocessing.get_context("spawn")  # a fresh interpreter: no inherited threads or sockets
        self._stop_end: Any = None  # the server's end of the current writer's stop pipe
        self._spawning = threading.Lock()  # a writer is started, or serve stops, not both at once
        self._stopping = threading.Event()
        self._process: Any = None
        self._started_at = 0.0
        self._supervisor: threading.Thread | None = None
        self.restarts = 0
        self.last_exit: str | None = None  # why the last writer ended unasked
        self._restart_at: float | None = None  # monotonic time the next writer starts, while waiting for it

    def start(self) -> None:
        self.inbox.clear_writer_status()
        self._spawn(previous_exit=None)
        self._supervisor = threading.Thread(target=self._supervise, name="truth-forge-writer-supervisor", daemon=True)
        self._supervisor.start()

    def _spawn(self, previous_exit: str | None) -> None:
        with self._spawning:
            if self._stopping.is_set():
                return
            writer_end, server_end = self._context.Pipe(duplex=False)
            process = self._context.Process(target=writer_main, args=(self.spec, writer_end, os.getpid(), previous_exit),
                                            name="truth-forge-writer", daemon=False)
            try:
                process.start()
            except BaseException:
                writer_end.close()  # no writer got them: each failed attempt would leak two descriptors
                server_end.close()
                raise
            writer_end.close()  # the writer has its copy; the pipe's end of file is then the server's doing alone
            if self._stop_end is not None:
                self._stop_end.close()  # the pipe of the writer that died
            self._process, self._stop_end = process, server_end
            self._started_at, self._restart_at = time.monotonic(), None

    def _supervise(self) -> None:
        options = self.spec.options
        quick_failures = 0
        while not self._stopping.is_set():
            self._process.join(WATCH_SECONDS)
            if self._stopping.is_set() or self._process.is_alive():
                continue
            ran = time.monotonic() - self._started_at
            quick_failures = 1 if ran >= options.restart_backoff_max else quick_failures + 1
            pause = restart_pause(quick_failures, options.restart_backoff, options.restart_backoff_max)
            self.last_exit = f"the writer process exited ({_describe_exit(self._process.exitcode)}) after {ran:.0f} s"
            log.error("%s; a new one starts in %.0f s", self.last_exit, pause)
            self._restart_at = time.monotonic() + pause
            if self._stopping.wait(pause):
                return
            self.restarts += 1
            try:
                self._spawn(previous_exit=f"{self.last_exit}; restarted (restart {self.restarts})")
            except Exception as exc:  # no process could be made (memory, process limit...): try again, later each time
                log.error("Could not start a new writer process: %s: %s", type(exc).__name__, exc)
                self._started_at = time.monotonic()
        self._finish()

    def _finish(self) -> None:
        """Serve is stopping: the writer drains (bounded), then exits; one that does not is killed."""
        options = self.spec.options
        self._process.join(options.drain_seconds + options.lease_ttl.total_seconds() + 30)
        if self._process.is_alive():
            log.error("The writer did not stop in time; terminating it (the inbox keeps what it had not applied)")
            self._process.kill()
            self._process.join(10)

    def stop(self) -> None:
        """Let the writer finish its work and drain the inbox (bounded), then wait for it to exit."""
        with self._spawning:
            self._stopping.set()
            if self._stop_end is not None:
                self._stop_end.close()
        if self._supervisor is not None:
            self._supervisor.join()

    @property
    def alive(self) -> bool:
        """The writer lives, or a new one is on its way (serve is not stopping)."""
        if self._process is None:
            return False
        supervised = self._supervisor is not None and self._supervisor.is_alive() and not self._stopping.is_set()
        return self._process.is_alive() or supervised

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def status(self) -> dict[str, Any]:
        reported: dict[str, Any] = dict(self.inbox.writer_status() or {"state": "starting", "detail": ""})
        restart_at = self._restart_at
        if restart_at is not None:
            why = self.last_exit or "the writer process exited"
            if reported.get("state") == "failed" and reported.get("detail"):
                why = f"{why}: {reported['detail']}"
            reported.update(state="restarting",
                            detail=f"{why}; a new one starts in {max(0.0, restart_at - time.monotonic()):.0f} s")
        elif self._process is not None and not self._process.is_alive() \
                and reported.get("state") not in ("stopped", "failed"):
            reported.update(state="failed", detail=f"the writer process exited ({self._process.exitcode})")
        reported["process"] = {"pid": self.pid, "restarts": self.restarts, "last_exit": self.last_exit}
        return reported


def restart_pause(quick_failures: int, first: float, most: float) -> float:
    """Seconds before starting the next writer: `first` after one failure, doubled after each
    further quick one, never more than `most`."""
    return float(min(most, first * 2 ** min(max(0, quick_failures - 1), 32)))


def _describe_exit(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"
