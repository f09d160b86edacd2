"""The writer lease on both engines (DuckDB file, BigQuery on bqemulator): claimed by one owner,
refused to another with a clear message, renewed, released, and taken over once it expires."""

from __future__ import annotations

import datetime as dt
import threading
import time
from typing import Any

import pytest

from truth_forge.lease import WarehouseBusy, WriterLease, writing

SHORT = dt.timedelta(seconds=1)


def test_one_owner_at_a_time(warehouse: Any) -> None:
    first = warehouse.claim_lease("writer", "first", dt.timedelta(minutes=1))
    assert first["owner"] == "first" and first["expired"] is False
    second = warehouse.claim_lease("writer", "second", dt.timedelta(minutes=1))
    assert second["owner"] == "first"  # refused: the row still names the holder
    assert warehouse.claim_lease("writer", "first", dt.timedelta(minutes=1))["owner"] == "first"  # re-entrant
    assert warehouse.renew_lease("writer", "first", dt.timedelta(minutes=1))
    assert not warehouse.renew_lease("writer", "second", dt.timedelta(minutes=1))
    assert not warehouse.release_lease("writer", "second")
    assert warehouse.release_lease("writer", "first")
    assert warehouse.claim_lease("writer", "second", dt.timedelta(minutes=1))["owner"] == "second"


def test_an_expired_lease_is_taken_over_and_its_holder_cannot_renew(warehouse: Any) -> None:
    assert warehouse.claim_lease("writer", "crashed", SHORT)["owner"] == "crashed"
    deadline = time.monotonic() + 10
    while warehouse.claim_lease("writer", "next", SHORT)["owner"] != "next":
        assert time.monotonic() < deadline, "the lease never expired"
        time.sleep(0.2)
    assert not warehouse.renew_lease("writer", "crashed", SHORT)
    assert warehouse.read_lease("writer")["owner"] == "next"


def test_a_second_writer_refuses_with_the_holders_name(warehouse: Any) -> None:
    with writing(warehouse, purpose="serve"):
        busy = WriterLease(warehouse, purpose="sync")
        with pytest.raises(WarehouseBusy) as refused:
            busy.acquire(wait=0)
        assert "serve on" in str(refused.value) and "pid" in str(refused.value)
    assert warehouse.read_lease("writer")["owner"] is None


def test_a_waiting_writer_proceeds_when_the_holder_releases(warehouse: Any) -> None:
    holder = WriterLease(warehouse.for_another_thread(), purpose="serve", ttl=dt.timedelta(seconds=30))
    holder.acquire()
    release = threading.Timer(1.0, holder.release)
    release.start()
    try:
        waiter = WriterLease(warehouse, purpose="sync")
        waiter.acquire(wait=20, poll=0.2)
        assert waiter.held and warehouse.read_lease("writer")["owner"] == waiter.owner
        waiter.release()
    finally:
        release.join()


def test_renewing_keeps_a_short_lease_alive(warehouse: Any) -> None:
    lease = WriterLease(warehouse, purpose="serve", ttl=dt.timedelta(seconds=1.5))
    lease.acquire()
    lease.start_renewing()
    try:
        for _ in range(4):  # well past the 1.5 s time to live
            time.sleep(0.75)
            assert warehouse.claim_lease("writer", "intruder", SHORT)["owner"] == lease.owner
    finally:
        lease.release()
    assert not lease.lost


def test_a_holder_whose_process_died_on_this_machine_is_not_waited_for(warehouse: Any) -> None:
    import socket
    import subprocess
    import sys

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    dead_owner = f"sync on {socket.gethostname()} pid {int(gone.stdout)} (deadbeef)"
    assert warehouse.claim_lease("writer", dead_owner, dt.timedelta(minutes=10))["owner"] == dead_owner
    taker = WriterLease(warehouse, purpose="sync")
    taker.acquire(wait=0)  # no WarehouseBusy, no ten-minute wait
    assert taker.held and warehouse.read_lease("writer")["owner"] == taker.owner
    taker.release()
    # A holder on another machine is only ever waited for (its process cannot be seen from here).
    elsewhere = f"sync on another-host.invalid pid {int(gone.stdout)} (cafef00d)"
    warehouse.claim_lease("writer", elsewhere, dt.timedelta(minutes=10))
    with pytest.raises(WarehouseBusy, match="another-host.invalid"):
        WriterLease(warehouse, purpose="sync").acquire(wait=0)
