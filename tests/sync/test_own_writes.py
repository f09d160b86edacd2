"""What the sync learns from the answers to its own writes, kept in the warehouse (own_writes.py)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from truth_forge.sync import own_writes
from truth_forge.sync.objects import PERSON
from truth_forge.sync.pull import changes_query

URL = "http://twenty.example"


def stamped(*actors: dict[str, Any] | None) -> list[dict[str, Any]]:
    return [{"id": str(n), "updatedBy": actor} for n, actor in enumerate(actors)]


def api(name: str) -> dict[str, Any]:
    return {"source": "API", "name": name, "workspaceMemberId": None, "context": {}}


def test_nothing_is_left_out_before_a_write_has_answered(store: Any) -> None:
    assert own_writes.filter_clause(store, URL) is None
    assert own_writes.status(store, URL).startswith("not known yet")


def test_our_api_actor_is_learnt_from_a_write_and_named_in_the_filter(store: Any) -> None:
    own_writes.observe(store, URL, stamped(api("truth-forge"), api("truth-forge")))
    clause = own_writes.filter_clause(store, URL)
    assert clause == ('or(updatedBy.source[neq]:API,updatedBy.source[is]:NULL,'
                      'updatedBy.name[neq]:"truth-forge",updatedBy.name[is]:NULL)')
    assert own_writes.filter_clause(store, "http://another.example") is None  # per workspace


@pytest.mark.parametrize("answer", [
    stamped(api("truth-forge"), {"source": "MANUAL", "name": "Ada Lovelace", "workspaceMemberId": "m-1"}),
    stamped({"source": "MANUAL", "name": "", "workspaceMemberId": None}),  # the column's default: never stamped
    stamped(api("truth-forge"), api("someone else")),
    stamped(None),
])
def test_an_answer_not_stamped_by_us_alone_turns_the_filter_off_for_good(store: Any, answer: list[dict[str, Any]]) -> None:
    own_writes.observe(store, URL, stamped(api("truth-forge")))
    own_writes.observe(store, URL, answer)
    assert own_writes.filter_clause(store, URL) is None
    own_writes.observe(store, URL, stamped(api("truth-forge")))  # a later clean answer does not undo it
    assert own_writes.filter_clause(store, URL) is None
    assert own_writes.status(store, URL).startswith("off: a write of ours came back")
    own_writes.forget(store, URL)
    own_writes.observe(store, URL, stamped(api("truth-forge")))
    assert own_writes.filter_clause(store, URL) is not None


def test_a_key_name_that_would_break_the_filter_is_never_put_in_it(store: Any) -> None:
    own_writes.observe(store, URL, stamped(api('sync, "prod" (main)')))
    assert own_writes.filter_clause(store, URL) is None
    assert "rename the key" in own_writes.status(store, URL)


def test_answers_without_updated_by_teach_nothing(store: Any) -> None:
    own_writes.observe(store, URL, [{"id": "1", "name": {"firstName": "A"}}])
    assert own_writes.status(store, URL).startswith("not known yet")


def test_the_filter_narrows_edits_never_deletions(store: Any) -> None:
    store.set_watermark("pull:person", "2026-11-30T10:00:00.000Z")
    query = changes_query(store, PERSON, dt.timedelta(minutes=2), "NOT_OURS")
    assert query == ('or(and(updatedAt[gte]:"2026-11-30T09:58:00.000Z",NOT_OURS),'
                     'deletedAt[gte]:"2026-11-30T09:58:00.000Z")')
