"""Named Twenty behaviour profiles: which version of each server rule the sandbox follows.

Twenty's rules changed over time (email checks got stricter, "record not found" moved from 400
to 404, the rate limiter stopped flooring its refill). A sync must survive the strictest current
server, and a user on an older self-hosted server wants to reproduce what they see. A profile
bundles one consistent set of rules; single switches on `SandboxConfig` may still override it.
Where each rule comes from in Twenty's source is written down in `docs/twenty-facts.md`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

EmailCheck = Literal["strict", "lenient"]
RefillMode = Literal["fractional", "floored"]
CursorPaging = Literal["keyset", "sort_value"]


@dataclass(frozen=True)
class Behaviour:
    # strict: an email must already be lower-case and a real address; "" is refused.
    # lenient: lower-cased first, then checked only when non-empty ("" is accepted).
    email_check: EmailCheck
    # Status of "Record not found" on GET/PATCH/DELETE/restore by id.
    not_found_status: Literal[404, 400]
    # fractional: the token bucket keeps partial tokens; floored: the legacy throttler drops
    # the fraction on every accepted request.
    rate_limit_refill: RefillMode
    # "" written to a TEXT field (or a FULL_NAME part) is stored as null.
    empty_text_to_null: bool
    # A partial LINKS update is merged into the stored value before it is checked; without
    # this the omitted subfields are cleared (the older transformer rewrote all three).
    links_update_merges: bool
    # A create (and the update step of a batch upsert, which goes through createMany) writes
    # the caller into `updatedBy` too; without this only PATCH updates stamp it.
    create_stamps_updated_by: bool
    # keyset: a page starts strictly after the cursor's order values plus id.
    # sort_value: older servers: the cursor's values compared with `>` against values Postgres
    # keeps in microseconds, while the cursor holds milliseconds; on a DATE_TIME sort field every
    # row of the cursor's own millisecond compares greater (so a tie comes again from its first
    # row) and the `eq` branch that would bring in the id tie-breaker never matches.
    cursor_paging: CursorPaging = "keyset"
    # Error bodies carry Twenty's exception code (`code`) where the error is one of Twenty's own
    # exceptions (send-http-exception-response.util.ts); older handlers sent no `code`.
    error_codes: bool = True
    # An answer to a read without `fields` on an object with more readable fields than this
    # returns only that many per record and says so in `X-Twenty-Fields-Capped`
    # (REST_API_DEFAULT_MAX_FIELDS = 200); None = every field, as older servers did.
    fields_cap: int | None = 200


PROFILES: dict[str, Behaviour] = {
    # The strictest current behaviour; the default.
    "latest": Behaviour(email_check="strict", not_found_status=404,
                        rate_limit_refill="fractional", empty_text_to_null=True,
                        links_update_merges=True, create_stamps_updated_by=True,
                        cursor_paging="keyset"),
    # A composite of older servers' rules (not one release): emails lower-cased but mixed case
    # and "" accepted, missing records answered 400, floored refill, "" text kept, link
    # updates rewrite the whole composite, creates and upserts leave `updatedBy` alone, and a
    # cursor inside a tie on `updatedAt` starts the next page at the tie's first row again.
    "legacy": Behaviour(email_check="lenient", not_found_status=400,
                        rate_limit_refill="floored", empty_text_to_null=False,
                        links_update_merges=False, create_stamps_updated_by=False,
                        cursor_paging="sort_value"),
}

# Rules older servers did not have yet (kept apart from the table above so each reads alone).
PROFILES["legacy"] = replace(PROFILES["legacy"], error_codes=False, fields_cap=None)

DEFAULT_PROFILE = "latest"


def resolve(name: str, overrides: dict[str, Any]) -> Behaviour:
    """The named profile with every override that is not None applied."""
    if name not in PROFILES:
        raise ValueError(f"unknown twenty_version {name!r}; known: {', '.join(PROFILES)}")
    changes = {key: value for key, value in overrides.items() if value is not None}
    behaviour = replace(PROFILES[name], **changes)
    if behaviour.email_check not in ("strict", "lenient"):
        raise ValueError("email_check must be 'strict' or 'lenient'")
    if behaviour.not_found_status not in (400, 404):
        raise ValueError("not_found_status must be 400 or 404")
    if behaviour.rate_limit_refill not in ("fractional", "floored"):
        raise ValueError("rate_limit_refill must be 'fractional' or 'floored'")
    if behaviour.cursor_paging not in ("keyset", "sort_value"):
        raise ValueError("cursor_paging must be 'keyset' or 'sort_value'")
    if behaviour.fields_cap == 0:
        behaviour = replace(behaviour, fields_cap=None)  # 0: no cap (None means "the profile's")
    if behaviour.fields_cap is not None and behaviour.fields_cap < 0:
        raise ValueError("fields_cap must be a number of fields (0 for no cap)")
    return behaviour
