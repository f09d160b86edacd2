"""The writer lease on both engines (DuckDB file, BigQuery on bqemulator): claimed by one owner,
refused to another with a clear message, renewed, released, and taken over once it expires; a holder
that lost it writes nothing more (the fence); a holder is declared gone only by proof that a second
PID namespace cannot fake."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from truth_forge.core.crm_schema import CrmSchema
from truth_forge.core.lease import LeaseLost, WarehouseBusy, WriterLease, _boot_id, _pid_namespace, writing
from truth_forge.sync.runner import run_sync
from truth_forge.twenty import TwentyClient
from truth_forge.warehouse.sample_data import generate_sample_data

ROOT = Path(__file__).resolve().parents[2]

SHORT = dt.timedelta(seconds=1)


def test_one_owner_at_a_time(warehouse: Any) -> None:
    first = warehouse.claim_lease("writer", "first", dt.timedelta(minutes=1))
    assert first["owner"] == "first" and first["expired"] is False
    second = warehouse.claim_lease("writer", "second", dt.timedelta(minutes=1))
    assert second["owner"] == "first"  # refused: the row still names the holder
    again = warehouse.claim_lease("writer", "first", dt.timedelta(minutes=1))
    assert again["owner"] == "first" and again["token"] == first["token"]  # re-entrant: the same grant
    assert warehouse.renew_lease("writer", "first", dt.timedelta(minutes=1), first["token"])
    assert not warehouse.renew_lease("writer", "second", dt.timedelta(minutes=1), first["token"])
    assert not warehouse.release_lease("writer", "second")
    assert warehouse.release_lease("writer", "first")
    second = warehouse.claim_lease("writer", "second", dt.timedelta(minutes=1))
    assert second["owner"] == "second" and second["token"] > first["token"]  # a new grant, a new token


def test_an_expired_lease_is_taken_over_and_its_holder_cannot_renew(warehouse: Any) -> None:
    crashed = warehouse.claim_lease("writer", "crashed", SHORT)
    assert crashed["owner"] == "crashed"
    deadline = time.monotonic() + 10
    while warehouse.claim_lease("writer", "next", SHORT)["owner"] != "next":
        assert time.monotonic() < deadline, "the lease never expired"
        time.sleep(0.2)
    assert not warehouse.renew_lease("writer", "crashed", SHORT, crashed["token"])
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


def dead_pid() -> int:
    """The process id of a process that has finished (nothing reuses it within a test)."""
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    return int(gone.stdout)


def owner_of(pid: int, *, host: str | None = None, pidns: str | None = None) -> str:
    """An owner string as another truth-forge process would write it."""
    return (f"sync on {host or socket.gethostname()} pid {pid} "
            f"(boot {_boot_id()} pidns {pidns or _pid_namespace()} deadbeef)")


def test_a_holder_whose_process_died_on_this_machine_is_not_waited_for(warehouse: Any) -> None:
    pid = dead_pid()
    dead_owner = owner_of(pid)
    assert warehouse.claim_lease("writer", dead_owner, dt.timedelta(minutes=10))["owner"] == dead_owner
    taker = WriterLease(warehouse, purpose="sync")
    taker.acquire(wait=0)  # no WarehouseBusy, no ten-minute wait
    assert taker.held and warehouse.read_lease("writer")["owner"] == taker.owner
    taker.release()
    # A holder on another machine is only ever waited for (its process cannot be seen from here).
    warehouse.claim_lease("writer", owner_of(pid, host="another-host.invalid"), dt.timedelta(minutes=10))
    with pytest.raises(WarehouseBusy, match="another-host.invalid"):
        WriterLease(warehouse, purpose="sync").acquire(wait=0)


def test_a_holder_in_another_pid_namespace_is_waited_for_though_its_pid_is_free_here(warehouse: Any) -> None:
    # Two containers with one host name: the holder's pid means nothing in our namespace.
    elsewhere = owner_of(dead_pid(), pidns="4026599999")
    assert warehouse.claim_lease("writer", elsewhere, dt.timedelta(minutes=10))["owner"] == elsewhere
    with pytest.raises(WarehouseBusy, match="pidns 4026599999"):
        WriterLease(warehouse, purpose="sync").acquire(wait=0)
    assert warehouse.read_lease("writer")["owner"] == elsewhere
    # Nor is an owner string without a boot and namespace (written by an older release) proof of anything.
    older = f"sync on {socket.gethostname()} pid {dead_pid()} (cafef00d)"
    warehouse.release_lease("writer", elsewhere)
    warehouse.claim_lease("writer", older, dt.timedelta(minutes=10))
    with pytest.raises(WarehouseBusy):
        WriterLease(warehouse, purpose="sync").acquire(wait=0)


# A writer in a PID namespace of its own: its python forks until the next pid is `target`, so the lease
# names a pid that does not run in ours; that process claims the lease, then lives until stdin closes.
_NAMESPACED_HOLDER = """
import os, sys
from truth_forge.core.lease import WriterLease
from truth_forge.warehouse import open_warehouse
target = int(sys.argv[1])
while True:
    child = os.fork()
    if child == 0:
        if os.getpid() != target:
            os._exit(0)
        break
    os.waitpid(child, 0)
    if child >= target:
        sys.exit("the pid %d was passed without reaching %d" % (child, target))
warehouse = open_warehouse(sys.argv[2])
lease = WriterLease(warehouse, purpose="sync", ttl=__import__("datetime").timedelta(minutes=10))
lease.acquire()
warehouse.close()  # DuckDB: let the test open the file; the lease row stays ours
print(lease.owner, flush=True)
sys.stdin.read()
"""


def _unshare_works() -> bool:
    if shutil.which("unshare") is None:
        return False
    tried = subprocess.run(["unshare", "--pid", "--fork", "true"], capture_output=True)
    return tried.returncode == 0


def test_a_live_writer_in_a_second_pid_namespace_keeps_its_lease(
        warehouse_backend: tuple[str, str, Any], open_test_warehouse: Any, request: pytest.FixtureRequest) -> None:
    if not _unshare_works():
        pytest.skip("`unshare --pid --fork` is not allowed here (needs root or user namespaces)")
    name, url, _client = warehouse_backend
    open_test_warehouse().close()  # create the tables
    target = next(p for p in range(50, 5000) if not os.path.exists(f"/proc/{p}"))
    full_url = f"{url}?endpoint={request.getfixturevalue('bqemulator_endpoint')}" if name == "bigquery" else url
    holder = subprocess.Popen(["unshare", "--pid", "--fork", sys.executable, "-c", _NAMESPACED_HOLDER,
                               str(target), full_url], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        owner = holder.stdout.readline().strip()  # type: ignore[union-attr]
        assert f" pid {target} " in owner, holder.stderr.read()  # type: ignore[union-attr]
        assert not os.path.exists(f"/proc/{target}")  # here, that pid runs nothing
        warehouse = open_test_warehouse()
        with pytest.raises(WarehouseBusy, match=f"pid {target} "):
            WriterLease(warehouse, purpose="sync").acquire(wait=0)
        assert warehouse.read_lease("writer")["owner"] == owner
    finally:
        holder.stdin.close()  # type: ignore[union-attr]
        holder.wait(30)


# --- the fence ------------------------------------------------------------------------------------


def test_a_paused_holder_writes_nothing_once_its_lease_was_taken_over(open_test_warehouse: Any) -> None:
    warehouse = open_test_warehouse()
    paused = WriterLease(warehouse, purpose="sync", ttl=SHORT)  # no renewing thread: as if stopped
    paused.acquire()
    warehouse.set_watermark("fenced", "before")
    taker = WriterLease(open_test_warehouse(), purpose="sync", ttl=dt.timedelta(minutes=1))
    taker.acquire(wait=15, poll=0.1)  # once the paused holder's lease has expired
    with pytest.raises(LeaseLost, match="taken over"):
        warehouse.set_watermark("fenced", "after")
    with pytest.raises(LeaseLost):
        warehouse.upsert_sync_state([{"object_type": "person", "record_key": "1", "status": "synced"}])
    assert warehouse.get_watermark("fenced") == "before"
    assert warehouse.read_sync_state("person", ["1"]) == {}
    assert paused.lost and not paused.held
    # The run's own log is not fenced: a run that lost the lease still closes as aborted.
    run_id = warehouse.start_run()
    warehouse.finish_run(run_id, "aborted", {})
    paused.release()
    assert warehouse.read_lease("writer")["owner"] == taker.owner
    taker.release()


def test_a_paused_holder_whose_lease_nobody_took_renews_and_writes_on(warehouse: Any) -> None:
    paused = WriterLease(warehouse, purpose="sync", ttl=SHORT)
    paused.acquire()
    deadline = time.monotonic() + 10
    while not warehouse.read_lease("writer")["expired"]:
        assert time.monotonic() < deadline, "the lease never expired"
        time.sleep(0.1)
    warehouse.set_watermark("fenced", "after a pause")  # renewed first: nobody was granted it meanwhile
    assert warehouse.get_watermark("fenced") == "after a pause"
    assert warehouse.read_lease("writer")["expired"] is False
    paused.release()


def test_the_fence_sends_no_statement_while_the_renewals_keep_up(warehouse: Any) -> None:
    lease = WriterLease(warehouse, purpose="sync", ttl=dt.timedelta(minutes=1))
    lease.acquire()
    before = warehouse.statements.snapshot()
    for n in range(20):
        warehouse.set_watermark("fenced", str(n))
    assert warehouse.statements.since(before)["statements"] == 20  # the writes, and nothing else
    lease.release()
    warehouse.set_watermark("fenced", "no lease, no fence")  # released: the hook is gone with it


def test_a_sync_that_lost_its_lease_stops_before_its_next_write_and_ends_aborted(
        open_test_warehouse: Any, crm: TwentyClient, sandbox: Any) -> None:
    warehouse = open_test_warehouse()
    generate_sample_data(warehouse, 30, 5, seed=7)
    held = WriterLease(warehouse, purpose="sync", ttl=SHORT)  # never renewed in the background
    held.acquire()
    taker = WriterLease(open_test_warehouse(), purpose="sync", ttl=dt.timedelta(minutes=1))
    seen: dict[str, int] = {}

    def pause_before_the_push(event: Any) -> None:
        if event.kind == "phase_started" and event.phase == "push" and not seen:
            taker.acquire(wait=15, poll=0.1)  # the holder "pauses" here until its lease was taken over
            seen["requests"] = len(sandbox.request_log)
            seen["states"] = warehouse.count_rows("crm_sync_state")

    result = run_sync(warehouse, crm, CrmSchema.load(), on_event=pause_before_the_push, lease=held)
    assert seen, "the push never started"
    assert result.status == "aborted"
    assert [e["error_class"] for e in result.sync_errors] == ["LeaseLost"]
    writes = [e for e in sandbox.request_log[seen["requests"]:] if e.method in ("POST", "PATCH", "DELETE")]
    assert writes == []
    assert warehouse.count_rows("crm_sync_state") == seen["states"]
    run = warehouse.get_run(result.run_id)
    assert run["status"] == "aborted"
    assert [e["error_class"] for e in warehouse.open_errors() if e["run_id"] == result.run_id] == ["LeaseLost"]
    held.release()
    taker.release()


@pytest.mark.parametrize(("template", "is_fenced"), [
    ("MERGE {crm_sync_state} AS t USING ...", True),
    ("  INSERT INTO {crm_sync_journal} (x) VALUES (1)", True),
    ("UPDATE {crm_sync_errors} AS t SET resolved_at = ...", True),  # closing errors is shared bookkeeping
    ("DELETE FROM {contacts} WHERE TRUE", True),
    ("SELECT 1 FROM {crm_sync_state}", False),
    ("CREATE TABLE {crm_sync_kv} (key STRING)", False),
    ("UPDATE {crm_sync_leases} AS t SET owner = NULL", False),  # the lease's own statements
    ("MERGE {crm_sync_leases} AS t USING ...", False),
    ("INSERT INTO {crm_sync_runs} (run_id) VALUES (@run_id)", False),  # the run's own log
    ("UPDATE {crm_sync_runs} AS t SET status = @status", False),
    ("INSERT INTO {crm_sync_errors} (error_id) SELECT ...", False),
])
def test_the_fence_covers_every_write_but_the_leases_and_the_runs_own_log(template: str, is_fenced: bool) -> None:
    from truth_forge.warehouse.base import fenced

    assert fenced(template) is is_fenced
