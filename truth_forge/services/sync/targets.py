"""Where a contact goes when the warehouse sends it "to all": Twenty first, then plug-ins.

A target is anything with a `name` and `sync_contact(contact) -> dict` (the contact is the
warehouse's CRM-facing row). Other packages add targets through the entry point group
`truth_forge.sync_targets`: each entry point names a factory called with the `Settings` that
returns a target. Which plug-ins run is chosen by name in `settings.sync_targets`, so installing a
package never sends data anywhere by itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib.metadata import entry_points
from typing import Any, Protocol

from truth_forge.core.config import Settings

ENTRY_POINT_GROUP = "truth_forge.sync_targets"


class SyncTarget(Protocol):
    name: str

    def sync_contact(self, contact: Mapping[str, Any]) -> Mapping[str, Any]:
        """Send one contact; return what happened (raise to report a failure)."""
        ...


def load_targets(settings: Settings) -> list[SyncTarget]:
    """The plug-in targets named in `settings.sync_targets`, in that order; an unknown name is an error."""
    wanted = list(settings.sync_targets)
    if not wanted:
        return []
    found = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
    missing = [name for name in wanted if name not in found]
    if missing:
        raise ValueError(f"TRUTH_FORGE_SYNC_TARGETS names {missing}, but no installed package offers them in the "
                         f"entry point group {ENTRY_POINT_GROUP!r} (found: {sorted(found) or 'none'})")
    return [found[name].load()(settings) for name in wanted]
