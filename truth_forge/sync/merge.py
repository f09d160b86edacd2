"""The three-way merge, field by field: a pure decision, no I/O.

For each synced field there are three values: the base (what both sides last agreed on), the
warehouse's and Twenty's. A field changed on one side goes to the other; changed on both sides to
different values is a conflict, settled by the field's policy and reported with all three values;
changed on both sides to the same value is no conflict. A field missing from one side's view (a
company link Twenty names by a company we do not know yet) is left out of the decision.

Push-only (computed) fields belong to the warehouse: whatever Twenty holds, the warehouse's value
goes out when it differs from what was last sent (the base).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Policy = Literal["crm_wins", "warehouse_wins"]


@dataclass(frozen=True)
class FieldConflict:
    field: str
    base: Any
    warehouse: Any
    twenty: Any
    winner: Literal["warehouse", "twenty"]

    def describe(self) -> str:
        return (f"{self.field} edited on both sides since the last sync: base {self.base!r}, "
                f"warehouse {self.warehouse!r}, Twenty {self.twenty!r}; {self.winner} wins")


@dataclass
class MergeResult:
    to_warehouse: dict[str, Any] = field(default_factory=dict)  # field -> Twenty's value, to write here
    to_twenty: dict[str, Any] = field(default_factory=dict)  # field -> the warehouse's value, to send
    conflicts: list[FieldConflict] = field(default_factory=list)
    # What both sides will agree on once `to_twenty` has landed: the next merge's base. A field
    # still to be sent keeps its old base, so it is sent again if the send never lands.
    base: dict[str, Any] = field(default_factory=dict)


def merge_fields(
    base: Mapping[str, Any] | None,
    warehouse: Mapping[str, Any],
    twenty: Mapping[str, Any],
    policy: Callable[[str], Policy],
    *,
    push_only: Collection[str] = (),
) -> MergeResult:
    """Decide every field present on both sides. `base` None (never merged before) counts every
    differing field as changed on both sides, so the policy decides."""
    result = MergeResult()
    for name in push_only:
        # Ours alone: sent when it differs from what was last sent, whatever Twenty holds.
        if name in warehouse and (base is None or name not in base or base[name] != warehouse[name]):
            result.to_twenty[name] = warehouse[name]
            result.base[name] = base.get(name) if base is not None else None
        elif name in warehouse:
            result.base[name] = warehouse[name]
    for name in (warehouse.keys() & twenty.keys()) - set(push_only):
        mine, theirs = warehouse[name], twenty[name]
        known = base is not None and name in base
        old = base[name] if known else None  # type: ignore[index]
        if mine == theirs:
            result.base[name] = mine
            continue
        warehouse_changed = not known or mine != old
        twenty_changed = not known or theirs != old
        if warehouse_changed and not twenty_changed:
            result.to_twenty[name] = mine
            result.base[name] = old
        elif twenty_changed and not warehouse_changed:
            result.to_warehouse[name] = theirs
            result.base[name] = theirs
        else:
            winner: Literal["warehouse", "twenty"] = "warehouse" if policy(name) == "warehouse_wins" else "twenty"
            result.conflicts.append(FieldConflict(name, old, mine, theirs, winner))
            if winner == "twenty":
                result.to_warehouse[name] = theirs
                result.base[name] = theirs
            else:
                result.to_twenty[name] = mine
                result.base[name] = old
    return result


def changed_since(base: Mapping[str, Any], warehouse: Mapping[str, Any]) -> dict[str, Any]:
    """The warehouse's fields that differ from the base (what a push of this row must send)."""
    return {name: value for name, value in warehouse.items() if name not in base or base[name] != value}


def base_after_our_write(base: Mapping[str, Any] | None, warehouse: Mapping[str, Any],
                         twenty: Mapping[str, Any]) -> dict[str, Any]:
    """The merge base of a record whose last write is one of ours that landed after the base was
    saved (a run killed before it saved the answer: `own_writes.unsaved_write` decides that, from
    more than our `updatedBy` stamp, which writers that do not stamp leave on their edits).

    A field changed on both sides since the base holds, in Twenty, a value we sent, and the
    warehouse has moved on since: that value becomes the base, so the warehouse's newer one goes
    out, with no conflict. A field changed in Twenty alone stays an edit: our writes carry only what
    changed, so it may be a person's edit made before ours landed (the one loss left: a value sent
    and then set back to the base in the warehouse is pulled back). With no base at all, Twenty's
    values are taken as ours whole. Called for anything else, it would hide an edit: a value someone
    put in Twenty under our stamp, met by a warehouse change, would go unrecorded and be overwritten.
    """
    if base is None:
        return dict(twenty)
    merged = dict(base)
    for name, value in twenty.items():
        if name in base and name in warehouse and value != base[name] and warehouse[name] != base[name]:
            merged[name] = value
    return merged
