"""A second sync target for the tests, offered to truth-forge through a real entry point.

It appends each contact it receives to a JSON-lines file, so a test can see what arrived, in
what order, and whether Twenty had the contact first.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from truth_forge.core.config import Settings

LOG = Path(__file__).with_name("received.jsonl")  # replaced by the test through the environment


class RecordingTarget:
    name = "recorder"

    def __init__(self, path: Path) -> None:
        self.path = path

    def sync_contact(self, contact: Mapping[str, Any]) -> Mapping[str, Any]:
        if contact.get("category_code") == "X":
            raise RuntimeError(f"the recorder refuses uncategorised contact {contact['contact_id']}")
        with self.path.open("a") as out:
            out.write(json.dumps({"contact_id": contact["contact_id"], "name": contact["canonical_name"]}) + "\n")
        return {"written": 1}


def make_target(settings: Settings) -> RecordingTarget:
    import os

    return RecordingTarget(Path(os.environ["TRUTH_FORGE_TEST_RECORDER_FILE"]))
