"""Rows a filter can only match, found through the primary key or a unique index.

A lookup such as `id[in]:[...]` or `emails.primaryEmail[eq]:"x"` (what a sync sends before it
writes) would otherwise evaluate the filter on every row of the table. The answer is always a
superset of the matches, never a guess: the caller still evaluates the whole filter on each
candidate, so this only decides how many rows are looked at.
"""

from __future__ import annotations

from truth_forge.sandbox.filters import Condition, Conjunction, Node
from truth_forge.sandbox.metadata import UNIQUE_SUBFIELDS
from truth_forge.sandbox.store import RecordTable


def candidate_ids(node: Node, table: RecordTable) -> set[str] | None:
    """Ids of every row that can match, or None when any row might (a full scan is needed)."""
    if isinstance(node, Conjunction):
        if node.kind == "and":
            # Every child must hold: the smallest known candidate set bounds them all.
            known = [ids for ids in (candidate_ids(c, table) for c in node.children)
                     if ids is not None]
            return min(known, key=len) if known else None
        if node.kind == "or":
            found: set[str] = set()
            for child in node.children:
                ids = candidate_ids(child, table)
                if ids is None:
                    return None
                found |= ids
            return found
        return None  # not(): matches are everything the child does not match
    return _condition_ids(node, table)


def _condition_ids(cond: Condition, table: RecordTable) -> set[str] | None:
    if cond.comparator not in ("eq", "in"):
        return None
    values = cond.value if cond.comparator == "in" else [cond.value]
    if cond.path == ["id"]:
        return {v for v in values if isinstance(v, str) and v in table.rows}
    name = cond.path[0]
    f = table.obj.fields.get(name)
    if f is None or not table.has_index(name) or cond.leaf_type not in ("TEXT", "EMAIL_TEXT"):
        return None
    subs = UNIQUE_SUBFIELDS.get(f.type)
    if cond.path[1:] != (list(subs) if subs else []) or (subs and len(subs) != 1):
        return None
    if any(not isinstance(v, str) or v in ("", "NULL") for v in values):
        return None  # empty values are not indexed, and they also match NULL
    found: set[str] = set()
    for value in values:
        found |= table.lookup(name, value)
    return found
