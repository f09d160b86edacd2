"""One writer per warehouse: a lease row that the webhook applier, the scheduled sync and a
hand-started `truth-forge sync` must hold before they write.

Why it exists: DuckDB's file lock keeps out other processes but not other threads of the same
process, and BigQuery has no lock at all, so two writers could interleave their MERGEs and
bookkeeping. The lease is a row in `crm_sync_leases` with an owner and an expiry (the engine's
clock), claimed with one conditional UPDATE, renewed by a background thread while work goes on and
released at the end. A holder that crashes stops renewing, so its lease expires and the next
writer proceeds; on the same machine a dead holder is recognised at once by its process id. A second writer waits up to a given time, then refuses with `WarehouseBusy`,
naming who holds the lease and until when.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

log = logging.getLogger(__name__)

WRITER = "writer"
DEFAULT_TTL = dt.timedelta(seconds=60)
DEFAULT_POLL_SECONDS = 1.0


class WarehouseBusy(RuntimeError):
    """Another writer holds the warehouse's lease: wait for it, stop it, or let its lease expire."""

    def __init__(self, holder: dict[str, Any], waited: float) -> None:
        self.holder = holder
        expires = holder.get("expires_at")
        until = expires.isoformat(timespec="seconds") if isinstance(expires, dt.datetime) else "unknown"
        super().__init__(
            f"the warehouse is being written by {holder.get('owner')!r} (lease held until {until}, renewed while "
            f"it works); gave up after waiting {waited:.0f}s. Wait for it to finish, stop it (a `truth-forge serve` "
            "runs the scheduled sync itself), or, if it crashed, wait for the lease to expire."
        )


class LeaseLost(RuntimeError):
    """The lease was taken over while we held it (we paused longer than its time to live)."""


def describe_owner(purpose: str) -> str:
    """Who we are, readable in a refusal message: purpose, host, process and a unique suffix."""
    return f"{purpose} on {socket.gethostname()} pid {os.getpid()} ({uuid.uuid4().hex[:8]})"


_OWNER = re.compile(r" on (?P<host>\S+) pid (?P<pid>\d+) \(")


def holder_is_gone(owner: str) -> bool:
    """True when `owner` names a process on this machine that no longer runs."""
    found = _OWNER.search(owner)
    if found is None or found["host"] != socket.gethostname():
        return False  # another machine's process: only its lease's expiry tells
    try:
        os.kill(int(found["pid"]), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # it runs, as another user
    return False


class WriterLease:
    """The right to write one warehouse, held by one owner; see the module docstring."""

    def __init__(self, warehouse: Any, *, purpose: str, ttl: dt.timedelta = DEFAULT_TTL, name: str = WRITER,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if ttl.total_seconds() < 1:
            raise ValueError(f"a writer lease must last at least a second, not {ttl}")
        self.warehouse = warehouse
        self.name = name
        self.ttl = ttl
        self.owner = describe_owner(purpose)
        self.held = False
        self.lost = False
        self._sleep = sleep
        self._stop_renewing = threading.Event()
        self._renewer: threading.Thread | None = None

    # --- claiming --------------------------------------------------------------------------------

    def try_acquire(self) -> dict[str, Any]:
        """One attempt; returns the lease row as it stands (ours when `held`).

        A holder on this machine whose process is gone (a sync killed by hand, say) is not waited
        for until its lease expires: its lease is freed (only if it still names that holder) and
        claimed at once.
        """
        row = self.warehouse.claim_lease(self.name, self.owner, self.ttl)
        holder = row.get("owner")
        if holder and holder != self.owner and holder_is_gone(holder):
            log.info("Writer lease of %s freed: that process is no longer running on this machine", holder)
            self.warehouse.release_lease(self.name, holder)
            row = self.warehouse.claim_lease(self.name, self.owner, self.ttl)
        self.held = row.get("owner") == self.owner
        self.lost = False
        return row

    def acquire(self, wait: float = 0.0, *, poll: float = DEFAULT_POLL_SECONDS,
                give_up: threading.Event | None = None) -> None:
        """Claim the lease, retrying every `poll` seconds for up to `wait`; raise WarehouseBusy after."""
        started = time.monotonic()
        while True:  # bounded by `wait`
            row = self.try_acquire()
            if self.held:
                log.info("Writer lease taken by %s", self.owner)
                return
            waited = time.monotonic() - started
            if waited >= wait or (give_up is not None and give_up.is_set()):
                raise WarehouseBusy(row, waited)
            log.info("Warehouse busy (held by %s); waiting", row.get("owner"))
            self._sleep(min(poll, max(0.0, wait - waited)))

    def renew(self, warehouse: Any = None) -> None:
        """Push the expiry on; raise LeaseLost when someone took the lease over meanwhile."""
        if not (warehouse or self.warehouse).renew_lease(self.name, self.owner, self.ttl):
            self.held, self.lost = False, True
            raise LeaseLost(f"the writer lease of {self.owner!r} was taken over; stop writing")

    def release(self) -> None:
        self.stop_renewing()
        if self.held:
            self.held = False
            if not self.warehouse.release_lease(self.name, self.owner):
                log.warning("Writer lease of %s had been taken over before release", self.owner)
            else:
                log.info("Writer lease released by %s", self.owner)

    # --- renewing in the background --------------------------------------------------------------

    def start_renewing(self) -> None:
        """Renew every third of the time to live on a thread of its own (own warehouse handle)."""
        if self._renewer is not None:
            return
        self._stop_renewing.clear()
        self._renewer = threading.Thread(target=self._renew_until_stopped, name="writer-lease", daemon=True)
        self._renewer.start()

    def stop_renewing(self) -> None:
        if self._renewer is not None:
            self._stop_renewing.set()
            self._renewer.join(timeout=self.ttl.total_seconds())
            self._renewer = None

    def _renew_until_stopped(self) -> None:
        handle = self.warehouse.for_another_thread()
        interval = self.ttl.total_seconds() / 3
        try:
            while not self._stop_renewing.wait(interval):
                try:
                    self.renew(handle)
                except LeaseLost:
                    log.error("Writer lease of %s was taken over; writes must stop", self.owner)
                    return
                except Exception:  # a warehouse hiccup: try again next interval, before the lease expires
                    log.exception("Renewing the writer lease failed; retrying")
        finally:
            if handle is not self.warehouse:
                handle.close()

    def __enter__(self) -> WriterLease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


@contextlib.contextmanager
def writing(warehouse: Any, *, purpose: str, held: WriterLease | None = None, wait: float = 0.0,
            ttl: dt.timedelta = DEFAULT_TTL) -> Iterator[WriterLease]:
    """Hold the writer lease for the block: the caller's (`held`, renewed by its owner) or a new one."""
    if held is not None and held.held:
        yield held
        return
    lease = WriterLease(warehouse, purpose=purpose, ttl=ttl)
    lease.acquire(wait)
    lease.start_renewing()
    try:
        yield lease
    finally:
        lease.release()
