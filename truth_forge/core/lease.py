"""One writer per warehouse: a lease row that the webhook applier, the scheduled sync and a
hand-started `truth-forge sync` must hold before they write, and a fence that stops a holder which
lost it.

Why it exists: DuckDB's file lock keeps out other processes but not other threads of the same
process, and BigQuery has no lock at all, so two writers could interleave their MERGEs and
bookkeeping. The lease is a row in `crm_sync_leases` with an owner, an expiry and a heartbeat (the
engine's clock), claimed with one conditional UPDATE, renewed by a background thread while work goes
on and released at the end. A holder that crashes stops renewing, so its lease expires and the next
writer proceeds. A second writer waits up to a given time, then refuses with `WarehouseBusy`, naming
who holds the lease and until when.

Fencing. A holder can be paused (SIGSTOP, a frozen VM, a long GC) past its expiry while another
writer takes the lease over; on waking it must not write one more row. Every grant moves the row's
`token` on, and a renewal succeeds only with the token it was granted. Before every write (the
warehouse calls `Warehouse.before_write` before each fenced statement, the Twenty transport before
each write request) the holder checks, by a clock that keeps running while the process is stopped,
that its last successful renewal is recent enough that the lease cannot have expired since; when that
is not certain it renews first, and a failed renewal raises `LeaseLost` before the write. The check
costs no statement while the renewing thread keeps up (on BigQuery each statement bills at least
10 MB). What the fence cannot stop is a write already on the wire when the pause began.

Liveness is proven by the heartbeat alone: a lease is taken over once it has expired by the
engine's clock. The one shortcut, freeing the lease of a holder whose process is gone, is taken only
when the owner string names this machine's boot and this PID namespace as well as a process id that
no longer runs: a second container with the same host name has a PID namespace of its own, where
our "no such process" says nothing.
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
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from truth_forge.warehouse.errors import WarehouseLockedError

log = logging.getLogger(__name__)

WRITER = "writer"
DEFAULT_TTL = dt.timedelta(seconds=60)
DEFAULT_POLL_SECONDS = 1.0
# Of a lease's time to live, how much the fence keeps in hand: a write is let through only while a
# renewal sent less than two thirds of the time to live ago stands (the renewing thread renews every
# third), which leaves a third for the write to land and for clocks that tick at slightly other rates.
FENCE_MARGIN = 1 / 3
T = TypeVar("T")


def lease_clock() -> float:
    """Seconds on a clock that keeps running while this process is stopped and while the machine
    sleeps (CLOCK_BOOTTIME), where the engine's clock runs on too; the monotonic clock elsewhere."""
    boottime = getattr(time, "CLOCK_BOOTTIME", None)
    return time.clock_gettime(boottime) if boottime is not None else time.monotonic()


class WarehouseBusy(RuntimeError):
    """Another writer holds the warehouse's lease: wait for it, stop it, or let its lease expire."""

    def __init__(self, holder: dict[str, Any], waited: float) -> None:
        self.holder = holder
        until, renewed = (_shown(holder.get(k)) for k in ("expires_at", "renewed_at"))
        super().__init__(
            f"the warehouse is being written by {holder.get('owner')!r} (lease held until {until}, renewed while "
            f"it works, last at {renewed}); gave up after waiting {waited:.0f}s. Wait for it to finish, stop it (a `truth-forge serve` "
            "runs the scheduled sync itself), or, if it crashed, wait for the lease to expire."
        )


def _shown(moment: Any) -> str:
    return moment.isoformat(timespec="seconds") if isinstance(moment, dt.datetime) else "unknown"


class LeaseLost(RuntimeError):
    """The lease was granted to another writer while we held it (we paused longer than its time to
    live, or could not renew it): nothing more may be written."""


def _boot_id() -> str | None:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()[:8] or None
    except OSError:
        return None


def _pid_namespace() -> str | None:
    try:
        found = re.search(r"\d+", os.readlink("/proc/self/ns/pid"))
    except OSError:
        return None
    return found.group(0) if found else None


def describe_owner(purpose: str) -> str:
    """Who we are, readable in a refusal message: purpose, host, process, and (in parentheses) the
    machine's boot, the PID namespace the process id belongs to, and a unique suffix."""
    where = f"boot {_boot_id() or '?'} pidns {_pid_namespace() or '?'} "
    return f"{purpose} on {socket.gethostname()} pid {os.getpid()} ({where}{os.urandom(4).hex()})"


_OWNER = re.compile(r" on (?P<host>\S+) pid (?P<pid>\d+) \((?:boot (?P<boot>\S+) pidns (?P<pidns>\S+) )?")


def holder_is_gone(owner: str) -> bool:
    """True when `owner` names a process of this machine's boot, in our PID namespace, that no longer
    runs. Anything less (another host, another boot, another namespace, an owner string of an older
    release without them) is not proof: only the lease's expiry tells."""
    found = _OWNER.search(owner)
    if found is None or found["host"] != socket.gethostname():
        return False
    boot, namespace = _boot_id(), _pid_namespace()
    if boot is None or namespace is None or found["boot"] != boot or found["pidns"] != namespace:
        return False  # its process ids are not ours to look up
    try:
        os.kill(int(found["pid"]), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # it runs, as another user
    return False


def open_when_free(open_warehouse: Callable[[], T], wait: float, *, poll: float = DEFAULT_POLL_SECONDS,
                   sleep: Callable[[float], None] = time.sleep) -> T:
    """Open the warehouse, waiting up to `wait` seconds while another process holds a DuckDB file's
    lock (DuckDB lets one process open a file for writing: the lock answers before the lease could);
    the `WarehouseLockedError` of the last attempt after that."""
    started = time.monotonic()
    while True:  # bounded by `wait`
        try:
            return open_warehouse()
        except WarehouseLockedError as exc:
            waited = time.monotonic() - started
            if waited >= wait:
                raise
            log.info("Warehouse busy: the file %s is open in another process (a sync or a serve); waiting up to "
                     "%.0fs more", exc.path, wait - waited)
            sleep(min(poll, max(0.0, wait - waited)))


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
        self.token: int | None = None  # the grant we hold (crm_sync_leases.token)
        self._sleep = sleep
        # Until when (lease_clock) a write needs no renewal first: the last successful claim or
        # renewal was sent before then minus (1 - FENCE_MARGIN) of the time to live.
        self._certain_until = float("-inf")
        self._renewing = threading.Lock()  # one renewal at a time, on one handle
        self._handle: Any = None  # the renewing thread's warehouse handle
        self._stop_renewing = threading.Event()
        self._renewer: threading.Thread | None = None
        self._fenced: list[Any] = []  # what calls check() before writing (the warehouse, transports)

    @property
    def _trusted(self) -> float:
        return self.ttl.total_seconds() * (1 - FENCE_MARGIN)

    # --- claiming --------------------------------------------------------------------------------

    def try_acquire(self) -> dict[str, Any]:
        """One attempt; returns the lease row as it stands (ours when `held`).

        A holder of this machine and PID namespace whose process is gone (a sync killed by hand,
        say) is not waited for until its lease expires: its lease is freed (only if it still names
        that holder) and claimed at once. Once held, the warehouse checks the lease before every write.
        """
        sent = lease_clock()
        row = self.warehouse.claim_lease(self.name, self.owner, self.ttl)
        holder = row.get("owner")
        if holder and holder != self.owner and holder_is_gone(holder):
            log.info("Writer lease of %s freed: that process is no longer running on this machine", holder)
            self.warehouse.release_lease(self.name, holder)
            sent = lease_clock()
            row = self.warehouse.claim_lease(self.name, self.owner, self.ttl)
        self.held = row.get("owner") == self.owner
        self.lost = False
        if self.held:
            self.token = int(row["token"])
            self._certain_until = sent + self._trusted
            self.fence(self.warehouse)
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
        """Push the expiry on; raise LeaseLost when the lease was granted to another meanwhile."""
        with self._renewing:
            self._renew_on(warehouse or self._handle or self.warehouse)

    def _renew_on(self, handle: Any) -> None:
        if self.lost or self.token is None:
            raise self._lost()
        sent = lease_clock()
        if not handle.renew_lease(self.name, self.owner, self.ttl, self.token):
            self.held, self.lost = False, True
            raise self._lost()
        self._certain_until = max(self._certain_until, sent + self._trusted)

    def _lost(self) -> LeaseLost:
        return LeaseLost(f"the writer lease of {self.owner!r} (grant {self.token}) was taken over by another "
                         f"writer: this process paused or could not renew it for longer than its "
                         f"{self.ttl.total_seconds():.0f}s time to live; stopped before writing")

    # --- the fence -------------------------------------------------------------------------------

    def check(self) -> None:
        """Prove that the lease is still ours before a write: by the clock when that is certain (no
        statement), else by renewing it; raise LeaseLost, before the write, when it is not ours."""
        if self.held and lease_clock() < self._certain_until:
            return
        with self._renewing:
            if self.held and lease_clock() < self._certain_until:
                return  # another thread renewed meanwhile
            if not self.held:
                raise self._lost()
            log.info("Writer lease of %s not renewed lately; renewing before the next write", self.owner)
            self._renew_on(self._handle or self.warehouse)

    def fence(self, target: Any) -> None:
        """Have `target` (a warehouse, a Twenty transport) call check() before each of its writes."""
        target.before_write = self.check
        if not any(t is target for t in self._fenced):
            self._fenced.append(target)

    def unfence(self, target: Any) -> None:
        if getattr(target, "before_write", None) == self.check:
            target.before_write = None
        self._fenced = [t for t in self._fenced if t is not target]

    @contextlib.contextmanager
    def fencing(self, target: Any) -> Iterator[None]:
        """Fence `target` for the block (one fenced already by this lease stays fenced after it)."""
        if getattr(target, "before_write", None) == self.check:
            yield
            return
        self.fence(target)
        try:
            yield
        finally:
            self.unfence(target)

    def release(self) -> None:
        self.stop_renewing()
        for target in list(self._fenced):
            self.unfence(target)
        if self.held:
            self.held = False
            if not self.warehouse.release_lease(self.name, self.owner):
                log.warning("Writer lease of %s had been taken over before release", self.owner)
            else:
                log.info("Writer lease released by %s", self.owner)

    # --- renewing in the background --------------------------------------------------------------

    def start_renewing(self) -> None:
        """Renew every third of the time to live on a thread of its own (own warehouse handle)."""
        if self._renewer is not None and self._renewer.is_alive():
            return
        self._stop_renewing.clear()
        if self._handle is None:
            self._handle = self.warehouse.for_another_thread()
        self._renewer = threading.Thread(target=self._renew_until_stopped, name="writer-lease", daemon=True)
        self._renewer.start()

    def stop_renewing(self) -> None:
        if self._renewer is not None:
            self._stop_renewing.set()
            self._renewer.join(timeout=self.ttl.total_seconds())
            self._renewer = None
        with self._renewing:
            handle, self._handle = self._handle, None
        if handle is not None and handle is not self.warehouse:
            handle.close()

    def _renew_until_stopped(self) -> None:
        interval = self.ttl.total_seconds() * FENCE_MARGIN
        while not self._stop_renewing.wait(interval):
            try:
                self.renew()
            except LeaseLost:
                log.error("Writer lease of %s was taken over; writes must stop", self.owner)
                return
            except Exception:  # a warehouse hiccup: try again next interval, before the lease expires
                log.exception("Renewing the writer lease failed; retrying")

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
