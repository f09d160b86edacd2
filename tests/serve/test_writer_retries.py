"""How serve's writer retries webhook batches that fail (a retry/backoff unit test: the failure is
injected in place of `apply_events`; the inbox is a real SQLite file, the warehouse a DuckDB file).

A batch failing whole says nothing of any one event: an outage must not set aside a window's worth
of events within seconds (they would only come back with the next scheduled sync, and `destroyed`
events never would). The next attempt takes half the batch, so an event that cannot be applied
ends up alone, and only an event failing alone is counted against it."""

from __future__ import annotations

import json
import secrets
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from truth_forge.core.crm_schema import CrmSchema
from truth_forge.core.reporting import ErrorReporter
from truth_forge.realtime import writer as writer_module
from truth_forge.realtime.applier import ApplyStats
from truth_forge.realtime.inbox import MAX_ATTEMPTS, Arrival, Inbox
from truth_forge.realtime.webhooks import SignedDelivery, WebhookEvent, parse_event
from truth_forge.realtime.writer import ServeOptions, StopSignal, Writer
from truth_forge.sync.context import SyncContext
from truth_forge.twenty.client import TwentyClient
from truth_forge.warehouse import open_warehouse


class _NeverStop:
    def is_set(self) -> bool:
        return False

    def wait(self, timeout: float | None = None) -> bool:
        time.sleep(min(timeout or 0.0, 0.01))
        return False


def _arrival(n: int) -> Arrival:
    record = {"id": str(uuid.uuid4()), "name": {"firstName": f"P{n}", "lastName": "Hook"}}
    body = json.dumps({"record": record, "eventName": "person.updated", "eventDate": "2026-01-02T03:04:05.000Z"}).encode()
    received = time.time_ns() // 1_000_000 - 60_000  # arrived a minute ago: no batch waits to gather
    return Arrival(SignedDelivery(received, secrets.token_hex(16), secrets.token_hex(32)), parse_event(body), body,
                   received)


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Callable[..., tuple[Writer, SyncContext, Inbox]]]:
    opened: list[Any] = []

    def make(events: int, **options: Any) -> tuple[Writer, SyncContext, Inbox]:
        inbox = Inbox(tmp_path / "inbox.sqlite3")
        assert inbox.accept_group([_arrival(n) for n in range(events)]) == ["stored"] * events
        client = TwentyClient("http://127.0.0.1:9", "key-for-no-server")  # never called
        warehouse = open_warehouse(f"duckdb:///{tmp_path / 'w.duckdb'}")
        opened.extend([inbox, client, warehouse])
        stop: StopSignal = _NeverStop()
        writer = Writer(inbox=inbox, open_warehouse=lambda: warehouse, client=client, schema=CrmSchema.load(None),
                        options=ServeOptions(batch_window=0.0, **options), stop=stop, parent_pid=0)
        ctx = SyncContext(warehouse, client, CrmSchema.load(None), ErrorReporter("run-1", ()), via="webhook")
        return writer, ctx, inbox

    yield make
    for thing in reversed(opened):
        thing.close()


def _apply_with(monkeypatch: pytest.MonkeyPatch, fails: Callable[[Sequence[WebhookEvent]], bool]) -> list[int]:
    """apply_events replaced: raises when `fails(events)`, else applies nothing and succeeds.
    Returns the sizes of the batches it was given."""
    sizes: list[int] = []

    def apply(_ctx: SyncContext, events: Sequence[WebhookEvent]) -> ApplyStats:
        sizes.append(len(events))
        if fails(events):
            raise RuntimeError("the warehouse is unavailable")
        return ApplyStats(events=len(events))

    monkeypatch.setattr(writer_module, "apply_events", apply)
    return sizes


def _drive(writer: Writer, ctx: SyncContext, attempts: int) -> None:
    for _ in range(attempts):
        writer._retry_at = 0.0  # the backoff itself is tested apart
        writer._apply_next_batch(ctx)


def test_an_outage_sets_aside_no_event_of_a_failing_batch(
        rig: Callable[..., tuple[Writer, SyncContext, Inbox]], monkeypatch: pytest.MonkeyPatch) -> None:
    writer, ctx, inbox = rig(40, batch_size=40)
    sizes = _apply_with(monkeypatch, lambda events: True)
    _drive(writer, ctx, 6 + MAX_ATTEMPTS)  # 40, 20, 10, 5, 2, 1, then the one event alone
    assert sizes == [40, 20, 10, 5, 2, 1] + [1] * MAX_ATTEMPTS
    # Only the event that failed alone MAX_ATTEMPTS times is set aside; before, all 40 were.
    assert inbox.counts() == {"pending": 39, "applied": 0, "failed": 1}
    assert writer.status.failed_batches == 6 + MAX_ATTEMPTS


def test_an_event_that_cannot_be_applied_is_isolated_and_the_rest_applied(
        rig: Callable[..., tuple[Writer, SyncContext, Inbox]], monkeypatch: pytest.MonkeyPatch) -> None:
    writer, ctx, inbox = rig(12, batch_size=12)
    poison = inbox.pending(12)[4].event.record_id
    _apply_with(monkeypatch, lambda events: any(e.record_id == poison for e in events))
    for _ in range(60):
        if inbox.counts()["pending"] == 0:
            break
        _drive(writer, ctx, 1)
    counts = inbox.counts()
    assert counts == {"pending": 0, "applied": 11, "failed": 1}, counts
    failed = [row for row in inbox._reads.execute("SELECT record_id FROM events WHERE status = 'failed'")]
    assert failed == [(poison,)]


def test_failures_in_a_row_back_off_and_a_success_resets_it(
        rig: Callable[..., tuple[Writer, SyncContext, Inbox]], monkeypatch: pytest.MonkeyPatch) -> None:
    writer, ctx, inbox = rig(4, batch_size=4, retry_pause=30.0)
    failing = [True]
    sizes = _apply_with(monkeypatch, lambda events: failing[0])
    waits = []
    for _ in range(4):
        writer._retry_at = 0.0
        writer._apply_next_batch(ctx)
        waits.append(round(writer._retry_at - time.monotonic()))
    assert waits == [30, 60, 60, 60]  # doubled, up to RETRY_PAUSE_MAX
    assert writer._apply_next_batch(ctx) is False and len(sizes) == 4  # backing off: nothing tried
    failing[0] = False
    writer._retry_at = 0.0
    assert writer._apply_next_batch(ctx) is True
    assert writer._batch_limit == 4 and writer._failed_in_a_row == 0
    writer._apply_next_batch(ctx)
    assert inbox.counts()["pending"] == 0
