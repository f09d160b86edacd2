"""Read the Python examples out of the user's seed document, so tests run them exactly as written."""

from __future__ import annotations

import re
from pathlib import Path

SEED = Path(__file__).resolve().parent.parent / "docs" / "seed-twenty-crm-setup-and-integration.md"


def seed_example(heading: str) -> str:
    """The first ```python block under the markdown heading `heading` (any level)."""
    text = SEED.read_text(encoding="utf-8")
    match = re.search(rf"^#+ {re.escape(heading)}\s*$(.*?)^```python\n(.*?)^```", text, re.S | re.M)
    if match is None:
        raise LookupError(f"No python example under '{heading}' in {SEED.name}")
    return match.group(2)
