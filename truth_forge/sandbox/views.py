"""Paging views: the sorted keys of the rows one query matches, kept up to date on writes.

A cursor walk (`starting_after`) repeats one filter and one order page after page. Filtering
and sorting every row on every page made a walk over N rows cost N log N per page; a view does
that once, then answers each page with a bisect and `totalCount` with its length. The table
tells its views about every row it stores or removes (rollbacks included), so a view always
equals a fresh filter-and-sort: records written between pages move to their new place exactly
as they would in Postgres. Only walks that need a second page keep a view (`ViewCache.keep`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Iterable
from typing import Any

from truth_forge.sandbox.filters import Node, evaluate
from truth_forge.sandbox.query import OrderItem, sort_key
from truth_forge.sandbox.sortedkeys import SortedKeys

_MAX_VIEWS = 4  # per table; each costs one key per matching row and work on every write


class View:
    def __init__(self, node: Node | None, include_deleted: bool, order: list[OrderItem],
                 rows: Iterable[dict[str, Any]]) -> None:
        self.node = node
        self.include_deleted = include_deleted
        self.order = order
        self.keys = SortedKeys(sort_key(r, order) for r in rows if self.matches(r))

    def matches(self, rec: dict[str, Any]) -> bool:
        if rec.get("deletedAt") is not None and not self.include_deleted:
            return False
        return self.node is None or evaluate(self.node, rec)

    def on_change(self, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        if old is not None and self.matches(old):
            self.keys.discard(sort_key(old, self.order))
        if new is not None and self.matches(new):
            self.keys.add(sort_key(new, self.order))


class ViewCache:
    """A table's live views, least recently used first."""

    def __init__(self) -> None:
        self._views: OrderedDict[Hashable, View] = OrderedDict()

    def get(self, key: Hashable) -> View | None:
        view = self._views.get(key)
        if view is not None:
            self._views.move_to_end(key)
        return view

    def keep(self, key: Hashable, view: View) -> None:
        self._views[key] = view
        while len(self._views) > _MAX_VIEWS:
            self._views.popitem(last=False)

    def on_change(self, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        for key, view in list(self._views.items()):
            try:
                view.on_change(old, new)
            except Exception:
                # A row the filter cannot evaluate: forget the view; the next read rebuilds it
                # and answers the error itself.
                del self._views[key]

    def clear(self) -> None:
        self._views.clear()
