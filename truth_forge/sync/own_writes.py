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

The same actor tells the merge which Twenty values are ours (`last_written_by_us`): a record whose
`updatedBy` is our key carries values one of our writes put there, even when the run that wrote them
died before saving its answer. The merge takes those values as its base (what both sides last agreed
on) instead of a person's edit, so a newer warehouse value still goes out. Where the actor is not
known, or the filter is off because this server does not stamp our writes, nothing is recognised
and such a record is merged as an edit, as before.
"""

from __future__ import annotations

import json
import logging
import re
import weakref
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

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
    """Whether Twenty says this record's last create or update was ours (our API key's actor)."""
    return name is not None and _api_name(_actor(record.get("updatedBy"))) == name


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
