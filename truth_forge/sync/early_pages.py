"""An object's pages of changes since the last pull, whose first page may be asked for ahead of its turn.

Why it exists: a run used to send, one after another, the setup check, the companies' first page
of changes, then the people's: three round trips (600 ms each against a slow Twenty) before the
first write. Their answers do not depend on each other; only what is done with them does. So the
runner asks for every object's first page on the client's request pool, then checks the setup,
and each pull reads its page when its turn comes. Nothing is merged before the setup's verdict (a
workspace without our key fields would make every record look new), and a page is merged only if
the query it answered is still the one the pull would send now (`pull.changed_pages` compares them).

The signpost (where the next pull may start when this one finds nothing newer) must be no later
than the moment Twenty ran the query. With requests on the wire together, the transport's last
`Date` may come from another answer, up to a round trip later; so the signpost is that `Date` less
the time since this page was asked for, never later than Twenty's clock when the request left.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future

from truth_forge.twenty.errors import TwentyRecordRejected, TwentySchemaMismatch
from truth_forge.twenty.pool import RequestPool, settle
from truth_forge.twenty.records import Page
from truth_forge.twenty.transport import Transport


class ChangedPages:
    """The pages of `query` (`walk` yields them), read in turn; with `pool`, the first is asked for now.

    `fallback`, given the refusal of the first page, returns the pages to read instead (read on the
    caller's thread: it may write to the warehouse). Only the first page's request may run on the
    pool, and it touches nothing but HTTP; every later page is read on the thread that iterates."""

    def __init__(self, query: str, walk: Iterator[Page], transport: Transport, *, pool: RequestPool | None = None,
                 fallback: Callable[[TwentyRecordRejected | TwentySchemaMismatch], ChangedPages] | None = None) -> None:
        self.query = query
        self._walk, self._transport, self._fallback = walk, transport, fallback
        self._signpost: dt.datetime | None = None
        self._instead: ChangedPages | None = None
        self._first: Future[Page | None] | None = pool.submit(self._read_first) if pool is not None else None
        self._started = False

    @property
    def signpost(self) -> dt.datetime | None:
        """Twenty's time, no later than when it ran the first page's query (None before it answered)."""
        return self._instead.signpost if self._instead is not None else self._signpost

    def _read_first(self) -> Page | None:
        asked = time.monotonic()
        page = next(self._walk, None)
        said = self._transport.server_time
        if said is not None:
            self._signpost = said - dt.timedelta(seconds=time.monotonic() - asked)
        return page

    def __iter__(self) -> Iterator[Page]:
        if self._started:
            raise RuntimeError("changed pages are read once")
        self._started = True
        try:
            first = self._first.result() if self._first is not None else self._read_first()
        except (TwentyRecordRejected, TwentySchemaMismatch) as refused:
            if self._fallback is None:
                raise
            self._instead = self._fallback(refused)
            yield from self._instead
            return
        if first is None:
            return
        yield first
        yield from self._walk

    @staticmethod
    def close_unread(pages: Mapping[str, ChangedPages]) -> None:
        """Close the pages asked for ahead that no pull read (the run stopped before their turn)."""
        for each in pages.values():
            each.close()

    def close(self) -> None:
        """Not to be read (the run stops, or the pull asks again): a first request on the wire is
        waited for, one not sent yet is not sent, and its answer or error is dropped."""
        if self._first is not None and not self._started:
            self._started = True
            settle([self._first])
