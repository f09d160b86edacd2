#!/usr/bin/env python3
"""Create and verify truth-forge's custom fields in Twenty, as the seed's Step 2 describes.

Same as `truth-forge setup`; kept under this name because that is how the setup guide calls it.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from truth_forge.cli.main import app  # noqa: E402

if __name__ == "__main__":
    app(["setup", *sys.argv[1:]])
