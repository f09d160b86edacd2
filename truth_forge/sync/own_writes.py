"""Our own writes, recognised by Twenty's `updatedBy`, so the pull does not read them back.

Current Twenty stamps `updatedBy` with the caller's actor on every create and update, the batch
upsert included (`created-by.create-many.pre-query-hook.ts` calls `injectActorFieldsOnCreate`,
which overwrites `updatedBy`; `updated-by.update-one/-many` hooks do the same for PATCH). An API
key's actor is `{source: API, name: <the key's name>, workspaceMemberId: null}`. So a record whose
`updatedBy` is that actor was last written by us, and the pull can leave it out at the server.

The actor is learnt from the answers to our own writes (no extra request). It is trusted only while
every record a write of ours returns carries the same API actor: a server that leaves `updatedBy`
alone on a batch upsert (older releases) answers with other actors, and then the filter is switched
off for good in this workspace (until `forget`), because on such a server a later writer could also
leave our stamp in place and its edit would be skipped. Deletions, destroys and restores do not
stamp `updatedBy`; the pull's filter never applies the exclusion to deletions, and restores are the
one case it can miss (see `filter_clause`).

Our stamp alone does not make a record's values ours. Some of Twenty's writers leave `updatedBy`
as it was (a merge of duplicates, a restore, older workflow steps, imports and updates made past
the API: docs/twenty-facts.md §8), so a record we wrote last may hold someone's later edit under our
stamp. The merge takes Twenty's values for a write of ours (`unsaved_write`: the values become its
base, so a newer warehouse value goes out with no conflict) only where a write of ours can have
landed without its answer being saved, which is the one case where the sync state does not already
know them: Twenty's `updatedAt` inside the span of a run that did not end cleanly (killed, aborted,
interrupted: `UnsavedWindows`, read from `crm_sync_runs` once per run), or just before the failure
of a write whose outcome the run never learnt (the record's state `failed`), or a record we created
that nothing wrote since (`updatedAt` is its `createdAt`). Anything else under our stamp is someone's
edit, merged field by field, and a field the warehouse changed too is a conflict settled by policy
and recorded. Where the actor is not known, or the filter is off because this server does not stamp
our writes, nothing is recognised and such a record is merged as an edit.
"""

from __future__ import annotations

import bisect
import datetime as dt
import json
import logging
import re
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from truth_forge.sync.objects import parse_timestamp
from truth_forge.sync.store import SyncStore, per_server
from truth_forge.twenty.client import TwentyClient
from truth_forge.twenty.errors import TwentyAuthError, TwentyError, TwentyNotFound

log = logging.getLogger(__name__)

# Names we can put in a filter value as they are. Twenty's filter parser (parse-filter-content.util.ts)
# tracks brackets, parentheses and quotes by counting and toggling, whatever encloses them: a comma,
# bracket, parenthesis or `"` in a name would change the filter's meaning. An apostrophe is allowed
# because `clause_for` puts the name last (see there).
_FILTERABLE_NAME = re.compile(r"^[\w .@'-]{1,100}$")


MARK_PREFIX = "own-writes:"
# The name each warehouse already holds as ours, per server, as this process last read or wrote it:
# `observe` runs after every write request, and an answer that agrees with it needs no warehouse
# read (on BigQuery, a query per write).
_agreed: weakref.WeakKeyDictionary[Any, dict[str, str]] = weakref.WeakKeyDictionary()
# The name the merge recognises as ours (`our_api_key_name`), as this process last read it; kept by
# `forget`, dropped by `disable`.
_recognised: weakref.WeakKeyDictionary[Any, dict[str, str]] = weakref.WeakKeyDictionary()


def _mark(base_url: str) -> str:
    return per_server(MARK_PREFIX.rstrip(":"), base_url)


def _read(warehouse: SyncStore, base_url: str) -> dict[str, Any]:
    return _parse(warehouse.get_watermark(_mark(base_url)))


def _parse(raw: str | None) -> dict[str, Any]:
    try:
        value = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def observe(warehouse: SyncStore, base_url: str, records: Iterable[Mapping[str, Any]]) -> None:
    """Look at the records one write of ours stored: learn our actor, or switch the filter off."""
    actors = {_actor(r.get("updatedBy")) for r in records if "updatedBy" in r}
    if not actors:
        return  # a server without `updatedBy` (or an answer without it): nothing to learn
    name = _api_name(next(iter(actors))) if len(actors) == 1 else None
    if name is not None and _agreed.get(warehouse, {}).get(base_url) == name:
        return
    known = _read(warehouse, base_url)
    if "off" in known:
        return
    if name is None:
        disable(warehouse, base_url, f"a write of ours came back with updatedBy {sorted(map(str, actors))}, "
                                     "not our API key's actor alone: this Twenty does not stamp batch upserts, "
                                     "so our own writes are read back")
        return
    if not filterable(name):
        disable(warehouse, base_url, f"the API key's name {name!r} cannot be put in a Twenty filter (commas, "
                                     "brackets or quotes); rename the key in Twenty's settings to let the pull "
                                     "skip our own writes")
        return
    if known.get("name") != name:
        log.info("Our writes are stamped updatedBy {source: API, name: %r}; the pull leaves them out", name)
        warehouse.set_watermark(_mark(base_url), json.dumps({"source": "API", "name": name}))
    _agreed.setdefault(warehouse, {})[base_url] = name


def disable(warehouse: SyncStore, base_url: str, reason: str) -> None:
    """Read our own writes back from now on (until `forget`), saying why (once: it is off after this)."""
    log.warning("The pull reads truth-forge's own writes back from now on (safe, but every write is read "
                "once more): %s", reason)
    _agreed.get(warehouse, {}).pop(base_url, None)
    _recognised.get(warehouse, {}).pop(base_url, None)
    warehouse.set_watermark(_mark(base_url), json.dumps({"off": reason}))


def _actor(value: Any) -> tuple[Any, Any, Any] | None:
    if not isinstance(value, Mapping):
        return None
    return value.get("source"), value.get("name") or "", value.get("workspaceMemberId")


def _api_name(actor: tuple[Any, Any, Any] | None) -> str | None:
    """The key name of an API key's actor; None for anyone else."""
    return actor[1] if actor is not None and actor[0] == "API" and actor[2] is None else None


def our_api_key_name(warehouse: SyncStore, base_url: str) -> str | None:
    """The name our writes are stamped with on this server, or None when it cannot be trusted.

    Kept across `forget` (as "was"): a full pass forgets the filter to learn it again, but still
    needs to tell our landed writes from edits before its own first write answers.
    """
    agreed = _agreed.get(warehouse, {}).get(base_url) or _recognised.get(warehouse, {}).get(base_url)
    if agreed is not None:
        return agreed
    known = _read(warehouse, base_url)
    if "off" in known:
        return None
    name = known.get("name") or known.get("was")
    if not isinstance(name, str) or not name:
        return None
    _recognised.setdefault(warehouse, {})[base_url] = name  # every page merged asks: one read per process
    return name


def created_by_us(record: Mapping[str, Any], name: str | None) -> bool:
    """Whether Twenty says this record was created with our API key (its `createdBy` actor)."""
    return name is not None and _api_name(_actor(record.get("createdBy"))) == name


def last_written_by_us(record: Mapping[str, Any], name: str | None) -> bool:
    """Whether Twenty says this record's last stamped create or update was ours (our API key's
    actor): not that its values are ours (`unsaved_write`)."""
    return name is not None and _api_name(_actor(record.get("updatedBy"))) == name


# --- which stamped values are ours -----------------------------------------------------------------
# Our stamp says who wrote last through the API hooks, not who wrote last. A write of ours whose answer
# was saved is in the sync state (its base, its hash: the record is not even merged again). The
# values of one whose answer was lost can only have landed while a run was going wrong, so that is
# where the merge takes stamped values for ours; the clocks involved are the warehouse's or this
# machine's (run rows, the state's `last_synced_at`) against Twenty's (`updatedAt`), hence the skew.

CLOCK_SKEW = dt.timedelta(minutes=5)  # between Twenty's clock and ours, either way
# A write sent before its run's recorded end may land after it: one request's deadline
# (twenty/transport.py DEFAULT_DEADLINE_SECONDS, 120 s), rounded up.
LANDING_MARGIN = dt.timedelta(minutes=3)
# A write that failed as a whole may have landed at its first attempt: seven attempts of up to 120 s
# and six backoffs of up to 60 s (transport.RetryPolicy) before the failure was saved.
FAILED_WRITE_SPAN = dt.timedelta(minutes=30)
# How long a long-lived context (serve's webhook applier) trusts the runs it read.
_REREAD_RUNS_SECONDS = 600.0


@dataclass(frozen=True)
class UnsavedWindows:
    """The spans of time in which a write of ours may have landed in Twenty with its answer never
    saved: each run that did not end cleanly, from its start to its recorded end (for a killed run,
    when the next writer closed it as stale) or to the start of a later run, whichever comes first,
    widened by the clock skew and the landing margin.

    A run that ended `succeeded` or `partial` saved the answer of every write that landed (a batch
    that failed as a whole leaves its records `failed`, judged by `unsaved_write` on their own); a
    `running` row is the lease holder's own (the run going on, or serve's webhook run), and a
    killed one is closed by the next writer before it pulls (runner.py, realtime/writer.py).

    Why a later run's start ends the span: a run of another writer starts only once the lease has
    moved, after which the fence lets none of the first run's writes leave (core/lease.py); and the
    only run with others starting inside it is serve's webhook run, around its scheduled syncs (each
    a run of its own), whose own writes carry record keys alone, which the merge never takes from
    Twenty. That matters for a killed serve: its webhook run, closed when the next writer starts,
    would otherwise span the server's whole life. A later start within the clock skew of the run's
    own may be a misreading of two clocks (a BigQuery run row's start is the engine's), so only one
    later than that counts, among the next three (`Warehouse.unclean_runs`); none: the recorded end.
    """

    starts: tuple[dt.datetime, ...] = ()
    ends: tuple[dt.datetime, ...] = ()  # merged spans, sorted and disjoint

    @classmethod
    def from_runs(cls, runs: Iterable[Mapping[str, Any]]) -> UnsavedWindows:
        spans = sorted((_utc(r["started_at"]) - CLOCK_SKEW, _last_write(r) + LANDING_MARGIN + CLOCK_SKEW)
                       for r in runs if r.get("started_at") is not None and r.get("finished_at") is not None)
        merged: list[list[dt.datetime]] = []
        for start, end in spans:
            if merged and start <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], end)
            else:
                merged.append([start, end])
        return cls(tuple(s for s, _ in merged), tuple(e for _, e in merged))

    def covers(self, moment: dt.datetime) -> bool:
        at = bisect.bisect_right(self.starts, moment) - 1
        return at >= 0 and moment <= self.ends[at]


def _last_write(run: Mapping[str, Any]) -> dt.datetime:
    """When a run sent its last write at the latest: its end, or the first later run's start."""
    started, end = _utc(run["started_at"]), _utc(run["finished_at"])
    later = [_utc(s) for s in run.get("later_starts") or () if _utc(s) > started + CLOCK_SKEW]
    return min([end, *later[:1]])


def _utc(moment: dt.datetime) -> dt.datetime:
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)


# Per warehouse: (the run that read them, when, the windows). Read once per run, and again after a
# while for a context that outlives runs (serve's webhook run, while scheduled syncs come and go).
_windows: weakref.WeakKeyDictionary[Any, tuple[str, float, UnsavedWindows]] = weakref.WeakKeyDictionary()


def unsaved_windows(warehouse: SyncStore, run_id: str) -> UnsavedWindows:
    """The windows of unsaved writes, as `run_id` last read them (one small query per run)."""
    cached = _windows.get(warehouse)
    if cached is not None and cached[0] == run_id and time.monotonic() - cached[1] < _REREAD_RUNS_SECONDS:
        return cached[2]
    windows = UnsavedWindows.from_runs(warehouse.unclean_runs())
    _windows[warehouse] = (run_id, time.monotonic(), windows)
    return windows


def unsaved_write(record: Mapping[str, Any], name: str | None, state: Mapping[str, Any] | None,
                  windows: Callable[[], UnsavedWindows]) -> bool:
    """Whether Twenty's values on this record may be taken for a write of ours whose answer was never
    saved (the merge then takes them as its base: `merge.base_after_our_write`).

    Only for a record stamped by our key, and only when the write that stamped it can be ours with
    the answer lost: nothing wrote the record since we created it (`updatedAt` is its `createdAt`),
    or its state is `failed` and `updatedAt` falls within the failed write's attempts, or
    `updatedAt` falls within a run that did not end cleanly (`windows`, called only then). Anything
    else under our stamp is an edit by a writer that does not stamp (see the module docstring).
    """
    if not last_written_by_us(record, name):
        return False
    updated = parse_timestamp(record.get("updatedAt"))
    if updated is None:
        return False
    updated = _utc(updated)
    if created_by_us(record, name) and record.get("createdAt") == record.get("updatedAt"):
        return True
    failed_at = parse_timestamp(state.get("last_synced_at")) if state is not None and state.get("status") == "failed" \
        else None
    if failed_at is not None and _utc(failed_at) - FAILED_WRITE_SPAN - CLOCK_SKEW <= updated <= _utc(failed_at) + CLOCK_SKEW:
        return True
    return windows().covers(updated)


def filter_clause(warehouse: SyncStore, base_url: str) -> str | None:
    """A Twenty filter matching records NOT last written by us, or None when we cannot tell.

    Written for SQL's NULLs: `neq` never matches a NULL, so records with no actor are named
    explicitly. A record restored from the trash by someone else keeps the `updatedBy` of its last
    update; if that was us, this clause leaves the restore out (Twenty's restore stamps nothing).
    Webhooks (`serve`) and `sync --full` see those.
    """
    known = _read(warehouse, base_url)
    name = known.get("name")
    if "off" in known or not name:
        return None
    return clause_for(name)


def clause_for(name: str) -> str:
    """The filter leaving out records last written by the API key called `name`.

    The name comes last, and the clause must come last in every conjunction around it (the pull's
    query does so): Twenty's parser flips "inside single quotes" on every apostrophe, even inside a
    double-quoted value, and then splits no later comma of that conjunction. With nothing after
    it, an apostrophe in the key's name ("O'Brien sync") changes nothing. Put earlier, it made the
    rest of the query one condition on a field called `and(updatedAt`: a 400, and the filter off.
    """
    return (f'or(updatedBy.source[neq]:API,updatedBy.source[is]:NULL,'
            f'updatedBy.name[is]:NULL,updatedBy.name[neq]:"{name}")')


def filterable(name: str) -> bool:
    return bool(_FILTERABLE_NAME.match(name))


def status(warehouse: SyncStore, base_url: str) -> str:
    """One line for `status`/`doctor`: whether the pull skips our own writes, and why not."""
    return describe(warehouse.get_watermark(_mark(base_url)))


def describe(raw: str | None) -> str:
    """`status` for a stored value (what `truth-forge status` finds in the bookkeeping)."""
    known = _parse(raw)
    if "off" in known:
        return f"off: {known['off']}"
    if known.get("name"):
        checked = {"unique": "; no other API key has that name",
                   "unknown": "; whether another API key has that name could not be checked"}
        return (f"on: records last updated by API key {known['name']!r} are not read back"
                + (checked.get(known.get("check", ""), "") if known.get("checked") == known["name"] else ""))
    return "not known yet: learnt from the first write's answer"


def forget(warehouse: SyncStore, base_url: str) -> None:
    """Learn again from the next write (after a server upgrade, or a renamed API key). The filter
    is off until then; the name last learnt is kept for `our_api_key_name` alone."""
    _agreed.get(warehouse, {}).pop(base_url, None)
    known = _read(warehouse, base_url)
    was = known.get("name") or known.get("was")
    warehouse.set_watermark(_mark(base_url), json.dumps({"was": was}) if was and "off" not in known else "")


# --- one name, one key ---------------------------------------------------------------------------
# Twenty does not make API key names unique (api-key.entity.ts indexes the workspace only) and the
# actor in `updatedBy` carries the name alone. Another key with our key's name would have its edits
# taken for ours: left out by the pull, merged as our own values. So the name is checked against
# the workspace's key list once per learnt name (the first sync that learns it, and every `doctor`).


@dataclass(frozen=True)
class NameCheck:
    outcome: Literal["unique", "shared", "unknown"]
    said: str  # plain words for the person running truth-forge
    same_name: int = 0  # keys listed under our name (ours included)


def _why_it_matters(name: str) -> str:
    return f"another API key named {name!r} would have its edits skipped as truth-forge's own"


def unlisted(exc: TwentyError, name: str | None) -> NameCheck:
    """What to say when the key may not (or cannot) list the workspace's API keys (`name` None:
    our key's name is not known yet)."""
    if isinstance(exc, TwentyAuthError):
        why = (f"Twenty refused to list the workspace's API keys (HTTP {exc.status}; the key's role lacks the "
               "'API keys and webhooks' permission)")
    elif isinstance(exc, TwentyNotFound):
        why = f"this Twenty has no API key list (HTTP {exc.status})"
    else:
        why = f"listing the workspace's API keys failed ({exc.summary})"
    if name is None:
        return NameCheck("unknown", f"cannot check that no other API key shares truth-forge's key's name: {why}. "
                                    "Make sure by hand that the name is unique: another API key with that name "
                                    "would have its edits skipped as truth-forge's own")
    return NameCheck("unknown", f"cannot check that no other API key is named {name!r}: {why}. Make sure by hand "
                                f"that the name is unique: {_why_it_matters(name)}")


def judge_key_name(keys: Iterable[Mapping[str, Any]], name: str) -> NameCheck:
    """Our key's name against the workspace's key list (keys not revoked, ours among them)."""
    same = sum(1 for key in keys if key.get("name") == name)
    if same > 1:
        return NameCheck("shared", f"{same} API keys in this workspace are named {name!r}, and Twenty's updatedBy "
                                   f"carries the name only: {_why_it_matters(name)}. Rename the other keys in "
                                   "Twenty (Settings > APIs & Webhooks) so the pull can leave out truth-forge's "
                                   "own writes", same)
    if same == 0:
        return NameCheck("unknown", f"no API key named {name!r} is listed (renamed since it last wrote?); "
                                    f"{_why_it_matters(name)}", 0)
    return NameCheck("unique", f"no other API key in this workspace is named {name!r}", 1)


def check_key_name(client: TwentyClient, name: str) -> NameCheck:
    """Whether our key is the only API key of the workspace named `name`, as far as the key may see."""
    try:
        keys = client.metadata.list_api_keys()
    except TwentyError as exc:
        return unlisted(exc, name)
    return judge_key_name(keys, name)


def name_to_check(warehouse: SyncStore, base_url: str) -> str | None:
    """The learnt name that has not been checked yet (None: nothing to check)."""
    known = _read(warehouse, base_url)
    name = known.get("name")
    if "off" in known or not isinstance(name, str) or not name or known.get("checked") == name:
        return None
    return name


def check_key_name_once(warehouse: SyncStore, client: TwentyClient,
                        checked: tuple[str, NameCheck] | None = None) -> NameCheck | None:
    """After a run: check a newly learnt name once. A shared name turns the filter off (and stops
    the merge taking that actor's values for ours); a check that cannot be made is said, once.
    `checked`: a name and its check made earlier in the run (used if that is still the name)."""
    base_url = client.transport.base_url
    known = _read(warehouse, base_url)
    name = name_to_check(warehouse, base_url)
    if name is None:
        return None
    result = checked[1] if checked is not None and checked[0] == name else check_key_name(client, name)
    if result.outcome == "shared":
        disable(warehouse, base_url, result.said)
        return result
    warehouse.set_watermark(_mark(base_url), json.dumps({**known, "checked": name, "check": result.outcome}))
    return result
