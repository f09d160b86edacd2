"""A sorted list of unique keys that stays cheap to change at a million entries.

Kept in chunks of a few hundred keys (a simple B+ leaf level): adding or removing one key costs
a bisect plus a short list shift instead of moving the whole list, and finding a position is a
bisect over the chunks' last keys. Enough for the sandbox's paging views (views.py).
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterable
from typing import Any

_LOAD = 500  # keys per chunk after a split; a chunk splits at twice this


class SortedKeys:
    def __init__(self, keys: Iterable[Any] = ()) -> None:
        ordered = sorted(keys)
        self._chunks: list[list[Any]] = [ordered[i:i + _LOAD]
                                         for i in range(0, len(ordered), _LOAD)]
        self._maxes: list[Any] = [chunk[-1] for chunk in self._chunks]
        self._len = len(ordered)
        self._offsets: list[int] | None = None

    def __len__(self) -> int:
        return self._len

    def _changed(self) -> None:
        self._offsets = None

    def add(self, key: Any) -> None:
        self._changed()
        self._len += 1
        if not self._chunks:
            self._chunks.append([key])
            self._maxes.append(key)
            return
        i = bisect.bisect_left(self._maxes, key)
        if i == len(self._chunks):
            i -= 1  # beyond every chunk: goes at the end of the last one
        chunk = self._chunks[i]
        bisect.insort(chunk, key)
        self._maxes[i] = chunk[-1]
        if len(chunk) > 2 * _LOAD:
            self._chunks[i:i + 1] = [chunk[:_LOAD], chunk[_LOAD:]]
            self._maxes[i:i + 1] = [chunk[_LOAD - 1], chunk[-1]]

    def discard(self, key: Any) -> bool:
        i = bisect.bisect_left(self._maxes, key)
        if i == len(self._chunks):
            return False
        chunk = self._chunks[i]
        j = bisect.bisect_left(chunk, key)
        if j == len(chunk) or chunk[j] != key:
            return False
        self._changed()
        self._len -= 1
        del chunk[j]
        if chunk:
            self._maxes[i] = chunk[-1]
        else:
            del self._chunks[i]
            del self._maxes[i]
        return True

    def _offset(self, i: int) -> int:
        if self._offsets is None:
            self._offsets = [0, *itertools.accumulate(len(c) for c in self._chunks)]
        return self._offsets[i]

    def bisect_left(self, key: Any) -> int:
        """How many keys are < key."""
        i = bisect.bisect_left(self._maxes, key)
        if i == len(self._chunks):
            return self._len
        return self._offset(i) + bisect.bisect_left(self._chunks[i], key)

    def bisect_right(self, key: Any) -> int:
        """How many keys are <= key."""
        i = bisect.bisect_right(self._maxes, key)
        if i == len(self._chunks):
            return self._len
        return self._offset(i) + bisect.bisect_right(self._chunks[i], key)

    def slice(self, start: int, stop: int) -> list[Any]:
        """Keys at positions start..stop-1."""
        start, stop = max(start, 0), min(stop, self._len)
        out: list[Any] = []
        if start >= stop:
            return out
        self._offset(0)
        assert self._offsets is not None
        i = bisect.bisect_right(self._offsets, start) - 1
        pos = start - self._offsets[i]
        while len(out) < stop - start and i < len(self._chunks):
            need = stop - start - len(out)
            out += self._chunks[i][pos:pos + need]
            i, pos = i + 1, 0
        return out
