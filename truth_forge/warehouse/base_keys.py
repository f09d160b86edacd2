"""The merge base (`crm_sync_state.base`) as stored: its field names replaced by short aliases.

Why it exists: on BigQuery a read of the sync state bills every byte of the base it touches, and
change detection reads the base of records scattered over the whole table (1 % of the contacts
changed touches every storage block). In a person's base the field names were a third of its
bytes. The sync never sees the aliases: bases are encoded as they are saved and decoded as they
are read (`state_journal.py`, `detection.py`). A name without an alias is stored as it is, and a
base saved before the aliases (full names) decodes to itself.

Never change or reuse an alias: stored bases are decoded with this table. New names go at the end.
"""

from __future__ import annotations

from typing import Any

_ALIASES = {
    "canonical_name": "~a", "primary_email": "~b", "additional_emails": "~c", "primary_phone": "~d",
    "additional_phones": "~e", "business_id": "~f", "contact_id": "~g", "category_code": "~h",
    "subcategory_code": "~i", "relationship_category": "~j", "llm_context": "~k",
    "communication_stats": "~l", "social_network": "~m", "ai_insights": "~n", "recommendations": "~o",
    "sync_metadata": "~p", "business_name": "~q", "website": "~r", "industry": "~s",
    "business_type": "~t", "business_data": "~u", "relationship_stats": "~v",
}
_NAMES = {alias: name for name, alias in _ALIASES.items()}


def encode(base: Any) -> Any:
    """A base as stored: known field names shortened (anything but a dict is stored as it is)."""
    return {_ALIASES.get(k, k): v for k, v in base.items()} if isinstance(base, dict) else base


def decode(base: Any) -> Any:
    """A stored base as the sync reads it: every alias back to its field name."""
    return {_NAMES.get(k, k): v for k, v in base.items()} if isinstance(base, dict) else base
